"""XL-Sum as memory-mapped Arrow tables: validated in batches, tokenized once, cached on disk.

Memory does not grow with the number of rows. A JSON-lines file is read line by line and
validated 1,000 rows at a time (:func:`peftsum.data.xlsum.drop_reason`; drops are counted by
reason, a malformed line stops with the file and line); the kept rows are written by
``datasets``' ``ArrowWriter`` into peftsum's data cache (:mod:`peftsum.data.cache`) and read
back memory-mapped (``datasets.Dataset.from_file``). A hub split (already Arrow in the Hugging
Face cache) goes through the same batched validation. Tokenization is a batched
``datasets.Dataset.map`` whose result is a cache file named by a key over the rows' source
fingerprint (path, size and modification time of the file, or the hub dataset's fingerprint),
the number of rows, the tokenizer, the source/target lengths and the prefix: a second run with
the same inputs reads it back in a fraction of a second. Multilingual mixing draws indices
(:func:`peftsum.data.features.mix_indices`) and selects them from the concatenated tables; length
grouping reads the ``length`` column. Nothing here holds all rows as Python objects.
A run's mixed training data (:func:`build_training_data`) is in :mod:`peftsum.data.training_data`
and importable from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from peftsum.data.cache import data_cache_dir
from peftsum.data.training_data import TrainingData, build_training_data, describe
from peftsum.data.xlsum import FIELDS, LoadedSplit, drop_reason
from peftsum.errors import DataError

__all__ = ["BATCH_ROWS", "FORMAT_VERSION", "PROGRESS_MIN_ROWS", "RowTable", "TrainingData", "build_training_data",
           "describe", "load_rows", "tokenize_split", "tokenizer_fingerprint", "validate_batch"]

FORMAT_VERSION = "1"
"""Part of every cache key: bump it when the cached tables' layout or the tokenization changes."""
BATCH_ROWS = 1000
"""Rows validated, written and tokenized at a time (and rows per Arrow record batch)."""
PROGRESS_MIN_ROWS = 20_000
"""Below this many rows ``datasets``' progress bars stay off (a sample run would print dozens)."""


def _row_features():
    from datasets import Features, Value

    return Features({name: Value("string") for name in FIELDS})


def _token_features():
    """Compact column types: 4 bytes per token id, 1 per mask entry (Python ints when read back)."""
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8")),
                     "labels": List(Value("int32")), "length": Value("int32")})


def _key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (cache file names)."""
    return hashlib.sha256(json.dumps([FORMAT_VERSION, *parts], default=str).encode("utf-8")).hexdigest()[:24]


@dataclass
class RowTable:
    """The validated rows of one data file or hub split.

    Attributes:
        dataset: kept rows (string columns :data:`peftsum.data.xlsum.FIELDS`), memory-mapped.
        dropped: dropped rows per reason.
        source: the file path or hub id.
        reused: ``True`` when the table was read from the cache.
        key: the cache key of the rows (source fingerprint).
    """

    dataset: Any
    dropped: Counter
    source: str
    reused: bool
    key: str


def _as_text(value: Any) -> str | None:
    """An optional field (``url``, ``title``) as a string: strings as they are, other JSON re-serialised."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def validate_batch(rows: list[dict], lines: list[int], name: str) -> tuple[dict[str, list], Counter]:
    """Validate one batch of rows (:func:`~peftsum.data.xlsum.drop_reason`) into Arrow-ready columns.

    Args:
        rows: parsed JSON objects (or hub rows).
        lines: each row's 1-based line number (hub: its position), for made-up ids.
        name: file name used for made-up ids: a row without ``id`` gets ``"<name>:<line>"``.

    Returns:
        ``(columns, dropped)``: the kept rows as string columns :data:`~peftsum.data.xlsum.FIELDS`
        (``id`` always set, ``url``/``title`` may be ``None``; other fields are not kept) and
        the dropped rows counted by reason.
    """
    cols: dict[str, list] = {f: [] for f in FIELDS}
    dropped: Counter = Counter()
    for row, line in zip(rows, lines):
        reason = drop_reason(row)
        if reason:
            dropped[reason] += 1
            continue
        row_id = row.get("id")
        cols["id"].append(f"{name}:{line}" if row_id is None else str(row_id))
        cols["url"].append(_as_text(row.get("url")))
        cols["title"].append(_as_text(row.get("title")))
        cols["summary"].append(row["summary"])
        cols["text"].append(row["text"])
    return cols, dropped


def _jsonl_batches(path: Path) -> Iterator[tuple[list[dict], list[int]]]:
    """``(rows, line numbers)`` of a JSON-lines file, :data:`BATCH_ROWS` at a time.

    Raises:
        DataError: missing or unreadable file, a line that is not a JSON object (file and line),
            an empty file (the messages of :func:`peftsum.data.xlsum.read_jsonl`).
    """
    from peftsum.io import iter_jsonl

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows: list[dict] = []
    lines: list[int] = []
    seen = False
    for lineno, obj in iter_jsonl(path):
        seen = True
        rows.append(obj)
        lines.append(lineno)
        if len(rows) == BATCH_ROWS:
            yield rows, lines
            rows, lines = [], []
    if not seen:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    if rows:
        yield rows, lines


def _dataset_batches(dataset) -> Iterator[tuple[list[dict], list[int]]]:
    """``(rows, positions)`` of a ``datasets.Dataset`` (the hub's rows), :data:`BATCH_ROWS` at a time."""
    start = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        names = list(batch)
        rows = [dict(zip(names, values)) for values in zip(*batch.values())]
        yield rows, list(range(start + 1, start + len(rows) + 1))
        start += len(rows)


@contextlib.contextmanager
def _progress(rows: int):
    """``datasets``' progress bars off for small tables (restored after); left alone where the user set them."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if rows >= PROGRESS_MIN_ROWS or are_progress_bars_disabled() or "HF_DATASETS_DISABLE_PROGRESS_BARS" in os.environ:
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _read_cached_rows(arrow: Path, meta: Path):
    """The cached table and its metadata, or ``None`` when missing or unreadable (then it is rebuilt)."""
    from datasets import Dataset

    if not (arrow.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        dataset = Dataset.from_file(str(arrow))
        if len(dataset) != info["rows"]:
            return None
        return dataset, Counter(info["dropped"])
    except Exception:  # a damaged cache entry (killed write, disk trouble) is rebuilt, never trusted
        return None


def load_rows(source, name: str, log=None) -> RowTable:
    """Validate a JSON-lines file or a hub ``datasets.Dataset`` into a cached, memory-mapped Arrow table.

    Args:
        source: a ``Path`` to a ``.jsonl`` file, or a ``datasets.Dataset`` with the XL-Sum columns.
        name: the source as shown in messages (file path or hub id); its last part names made-up ids.
        log: where a line goes before a big file is converted (``None``: silent).

    Returns:
        A :class:`RowTable` (``reused`` tells whether the cache had it).

    Raises:
        DataError: missing, unreadable or empty file, or a malformed line (file and line named);
            the cache folder cannot be written.
    """
    from datasets import Dataset

    from peftsum.io import write_json_atomic

    key, batches, size = _source_batches(source, name)
    cache = data_cache_dir()
    arrow, meta = cache / f"rows-{key}.arrow", cache / f"rows-{key}.json"
    cached = _read_cached_rows(arrow, meta)
    if cached is not None:
        return RowTable(cached[0], cached[1], name, True, key)
    tmp = _cache_tempfile(cache, key)
    if log is not None and size > 50 << 20:
        log(f"validating {name} ({size / 2**20:,.0f} MiB) into the data cache ...")
    kept, dropped = _write_rows(batches, tmp, arrow, Path(name).name or "row")
    write_json_atomic(meta, {"source": name, "rows": kept, "dropped": dict(dropped), "format": FORMAT_VERSION})
    return RowTable(Dataset.from_file(str(arrow)), dropped, name, False, key)


def _source_batches(source, name: str) -> tuple[str, Iterator, int]:
    """``(cache key, row batches, file size in bytes (0 for a hub dataset))`` of a file or a hub dataset."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            st = path.stat()
        except OSError:
            raise DataError(f"{path}: file not found") from None
        key = _key("jsonl", str(path.resolve()), st.st_size, st.st_mtime_ns)
        return key, _jsonl_batches(path), st.st_size
    return _key("hub", name, source._fingerprint, len(source)), _dataset_batches(source), 0


def _cache_tempfile(cache: Path, key: str) -> str:
    """A new temporary file in the data cache; :class:`DataError` when the cache cannot be written."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".rows-{key}.", suffix=".tmp", dir=cache)
        os.close(fd)
    except OSError as exc:
        raise DataError(f"{cache}: cannot write the data cache ({exc.strerror}); set $PEFTSUM_DATA_CACHE "
                        "to a writable folder") from None
    return tmp


def _write_rows(batches: Iterator, tmp: str, arrow: Path, id_name: str) -> tuple[int, Counter]:
    """Validate ``batches`` into ``tmp`` and move it to ``arrow``: ``(rows kept, drops by reason)``."""
    from datasets.arrow_writer import ArrowWriter

    dropped: Counter = Counter()
    kept = 0
    try:
        writer = ArrowWriter(features=_row_features(), path=tmp, writer_batch_size=BATCH_ROWS)
        try:
            for rows, lines in batches:
                cols, drops = validate_batch(rows, lines, id_name)
                dropped.update(drops)
                if cols["id"]:
                    writer.write_batch(cols)
                    kept += len(cols["id"])
            writer.finalize()
        finally:
            writer.close()
        os.chmod(tmp, 0o666 & ~_umask())  # as datasets' own cache files (mkstemp makes them private)
        os.replace(tmp, arrow)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return kept, dropped


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides a tokenizer's output (cache keys).

    A fast tokenizer is hashed by its full serialisation (vocabulary, normaliser, pre-tokenizer,
    post-processor: the EOS it appends; not the truncation and padding settings its last call left
    behind) plus its class and special tokens; any other tokenizer by ``datasets``' own hasher
    (its pickled state).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # the serialisation also holds the truncation/padding of the last call: lengths are keyed separately
        state.pop("truncation", None)
        state.pop("padding", None)
        parts = [type(tokenizer).__name__, state, sorted(map(str, tokenizer.special_tokens_map.items()))]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    from datasets.fingerprint import Hasher

    return Hasher.hash(tokenizer)[:24]


def _tokenize_columns(texts, summaries, tokenizer, max_source_length, max_target_length, source_prefix):
    from peftsum.data.features import tokenize_batch

    return tokenize_batch(texts, summaries, tokenizer, max_source_length, max_target_length, source_prefix)


def tokenize_split(loaded: LoadedSplit, tokenizer, max_source_length: int, max_target_length: int,
                   source_prefix: str = "", tokenizer_key: str | None = None):
    """Tokenize a loaded split with a batched ``Dataset.map`` cached in the data cache.

    Features are those of :func:`peftsum.data.features.tokenize_batch` (EOS kept on
    truncation; labels unpadded, padded with -100 by the collator).

    Args:
        loaded: from :func:`peftsum.data.xlsum.load_split`.
        tokenizer: a Hugging Face tokenizer.
        max_source_length, max_target_length, source_prefix: as in training.
        tokenizer_key: :func:`tokenizer_fingerprint` of ``tokenizer`` (computed when ``None``).

    Returns:
        ``(dataset, reused, path)``: columns ``input_ids``, ``attention_mask``, ``labels``,
        ``length``, memory-mapped; whether the cache file existed; the cache file.
    """
    from functools import partial

    dataset = loaded.dataset
    key = _key("features", loaded.key, len(dataset), tokenizer_key or tokenizer_fingerprint(tokenizer),
               max_source_length, max_target_length, source_prefix)
    path = data_cache_dir() / f"features-{key}.arrow"
    reused = path.is_file()
    fn = partial(_tokenize_columns, tokenizer=tokenizer, max_source_length=max_source_length,
                 max_target_length=max_target_length, source_prefix=source_prefix)
    with _progress(0 if reused else len(dataset)):
        out = dataset.map(fn, batched=True, batch_size=BATCH_ROWS, input_columns=["text", "summary"],
                          remove_columns=dataset.column_names, features=_token_features(),
                          cache_file_name=str(path), load_from_cache_file=True, new_fingerprint=key,
                          writer_batch_size=BATCH_ROWS, desc=f"tokenizing {loaded.language}/{loaded.split}")
    return out, reused, path
