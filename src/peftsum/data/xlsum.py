"""Load XL-Sum rows from the bundled sample, a local folder or the Hugging Face hub.

One path for the data: every source becomes a memory-mapped Arrow table with the XL-Sum fields
(``id, url, title, summary, text``), validated in batches by :mod:`peftsum.data.arrow` with
:func:`drop_reason`, which drops bad rows *by reason* and never silently. Layouts accepted for local folders:

* the official XL-Sum download: ``<language>_train.jsonl``, ``<language>_val.jsonl``,
  ``<language>_test.jsonl`` (https://github.com/csebuetnlp/xl-sum);
* one folder per language: ``<language>/{train,validation,test}.jsonl`` (the bundled
  sample's layout);
* a single ``.jsonl`` file (used for every split asked for).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from peftsum.languages import get_language
from peftsum.errors import DataError
from peftsum.io import iter_jsonl

FIELDS = ("id", "url", "title", "summary", "text")
REQUIRED = ("summary", "text")
SPLITS = ("train", "validation", "test")
HUB_ID = "csebuetnlp/xlsum"
STREAM_ROWS = 1024
"""Rows read from the memory-mapped table at a time when rows are streamed (evaluation, baselines)."""
_OFFICIAL_SPLIT = {"train": "train", "validation": "val", "test": "test"}


def sample_dir() -> Path:
    """Folder of the bundled XL-Sum sample (5 real rows per split, 45 languages; CC BY-NC-SA 4.0)."""
    return Path(str(resources.files("peftsum") / "data" / "sample" / "xlsum"))


@dataclass
class LoadedSplit:
    """Validated rows of one language and split, as a memory-mapped Arrow table.

    Attributes:
        language: XL-Sum config name.
        split: ``train``, ``validation`` or ``test``.
        dataset: the kept rows, a ``datasets.Dataset`` with the string columns :data:`FIELDS`
            (``id`` filled in), memory-mapped from peftsum's data cache (:mod:`peftsum.data.arrow`).
        dropped: count of dropped rows per reason (e.g. ``{"empty text": 1}``).
        source: where the rows came from (file path or hub id).
        reused: whether the rows came from the data cache (validated by an earlier run).
        key: identifies the rows (the source's fingerprint; with ``len(dataset)``, the rows kept).
    """

    language: str
    split: str
    dataset: Any
    dropped: Counter = field(default_factory=Counter)
    source: str = ""
    reused: bool = False
    key: str = ""

    @property
    def rows(self) -> list[dict]:
        """The kept rows as dicts (materialised on first use: for a few rows, not a whole training set)."""
        if "_rows" not in self.__dict__:
            self.__dict__["_rows"] = self.dataset.to_list()
        return self.__dict__["_rows"]

    def iter_rows(self, indices: Sequence[int] | None = None, columns: Sequence[str] | None = None,
                  chunk_rows: int | None = None) -> Iterator[dict]:
        """Stream kept rows as dicts, ``chunk_rows`` at a time from the memory-mapped table.

        Only one chunk of articles is in memory at once, so evaluating XL-Sum's largest test split
        costs a few MB, not the split's size.

        Args:
            indices: row positions to read, in this order (``None`` = all rows, in order).
            columns: fields to read (``None`` = all of :data:`FIELDS`).
            chunk_rows: rows read per chunk (default :data:`STREAM_ROWS`).

        Yields:
            ``{field: str}`` per row.
        """
        dataset = self.dataset if columns is None else self.dataset.select_columns(list(columns))
        positions = range(len(dataset)) if indices is None else indices
        chunk_rows = chunk_rows or STREAM_ROWS
        for start in range(0, len(positions), chunk_rows):
            part = positions[start:start + chunk_rows]
            batch = dataset[part.start:part.stop] if isinstance(part, range) else dataset[list(part)]
            names = list(batch)
            yield from (dict(zip(names, values)) for values in zip(*(batch[n] for n in names)))

    def column(self, name: str) -> list[str]:
        """One field of every kept row, in order (``id`` or ``summary``: small; stream articles with
        :meth:`iter_rows`)."""
        return list(self.dataset.select_columns([name])[name])

    @property
    def num_dropped(self) -> int:
        """Total number of dropped rows."""
        return sum(self.dropped.values())


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSON Lines file strictly.

    Args:
        path: a UTF-8 ``.jsonl`` file, one JSON object per line (blank lines are skipped).

    Returns:
        The objects in file order; each gets ``_line`` (1-based line number) for messages.

    Raises:
        DataError: the file is missing or unreadable, a line is not valid JSON or not an object
            (message names the file and line), or the file has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = [dict(obj, _line=lineno) for lineno, obj in iter_jsonl(path)]
    if not rows:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    return rows


def drop_reason(row: dict) -> str | None:
    """Why :func:`validate_rows` drops ``row``, or ``None`` when it is kept.

    Returns:
        ``missing field '<name>'`` (no such key), ``null <name>`` (JSON ``null``),
        ``non-string <name>``, ``empty <name>`` (empty or whitespace only), checked for
        ``summary`` then ``text``; ``None`` for a usable row.
    """
    for name in REQUIRED:
        if name not in row:
            return f"missing field '{name}'"
        if row[name] is None:
            return f"null {name}"
        if not isinstance(row[name], str):
            return f"non-string {name}"
        if not row[name].strip():
            return f"empty {name}"
    return None


def validate_rows(rows: list[dict], source: str = "") -> tuple[list[dict], Counter]:
    """Keep rows with non-blank ``text`` and ``summary``; count the rest by reason.

    Reasons (:func:`drop_reason`): ``missing field '<name>'``, ``null <name>``, ``empty text``,
    ``empty summary`` (empty or whitespace-only counts as empty), ``non-string <name>``.

    Args:
        rows: dicts as read by :func:`read_jsonl` or from the hub.
        source: name used to make ids when a row has none (``<source>:<line>``).

    Returns:
        ``(kept, dropped)``: kept rows (with ``_line`` removed, ``id`` ensured) and a
        ``Counter`` of drop reasons.
    """
    kept, dropped = [], Counter()
    for index, row in enumerate(rows):
        reason = drop_reason(row)
        if reason:
            dropped[reason] += 1
            continue
        line = row.pop("_line", index + 1)
        clean = {k: v for k, v in row.items() if not k.startswith("_")}
        clean.setdefault("id", f"{Path(source).name or 'row'}:{line}")
        clean["id"] = str(clean["id"])
        kept.append(clean)
    return kept, dropped


def _local_file(root: Path, language: str, split: str) -> Path:
    if root.is_file():
        return root
    candidates = [
        root / language / f"{split}.jsonl",
        root / f"{language}_{_OFFICIAL_SPLIT[split]}.jsonl",
        root / f"{split}.jsonl",
    ]
    for cand in candidates:
        if cand.is_file():
            return cand
    if not root.exists():
        raise DataError(f"{root}: data folder not found (use --data sample for the bundled rows, or --data hub)")
    raise DataError(
        f"{root}: no {split} file for {language}; looked for "
        + ", ".join(str(c.relative_to(root)) for c in candidates)
    )


def _load_hub(language: str, split: str):
    """The hub's ``csebuetnlp/xlsum`` split as a ``datasets.Dataset`` (Arrow, in the Hugging Face cache)."""
    from peftsum.hub import require_hub_dataset

    # unreachable hub: cache only, no retries (fails in a second, not after 24 s of retries)
    require_hub_dataset(HUB_ID, f"{HUB_ID}/{language} ({split})")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError(f"the 'datasets' library is needed for --data hub ({exc})") from None
    try:
        return datasets.load_dataset(HUB_ID, language, split=split)
    except Exception as exc:  # network errors come in many types; all get one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not load {HUB_ID}/{language} ({split}) from the hub: {first[:200]}. "
            "Offline? Use --data sample (bundled real rows) or --data PATH to local XL-Sum files"
        ) from None


def load_split(language: str, split: str, data: str | Path = "sample", limit: int | None = None,
               log=None) -> LoadedSplit:
    """Load and validate one language/split of XL-Sum into a memory-mapped Arrow table.

    The rows are validated in batches and cached by :func:`peftsum.data.arrow.load_rows`; a
    second call with an unchanged file reads the cached table.

    Args:
        language: XL-Sum config name (or ISO code), e.g. ``"russian"``.
        split: ``train``, ``validation`` or ``test``.
        data: ``"sample"`` (bundled rows), ``"hub"`` (``csebuetnlp/xlsum``) or a local path.
        limit: keep at most this many valid rows (the first ones, file order), or all.
        log: where a line goes before a big file is converted (``None``: silent).

    Returns:
        A :class:`LoadedSplit`.

    Raises:
        DataError: unknown language or split, missing file, malformed JSON (file:line),
            hub unreachable, or no valid rows left.
    """
    from peftsum.data.arrow import load_rows

    lang = get_language(language).name
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if str(data) == "hub":
        table = load_rows(_load_hub(lang, split), f"{HUB_ID}/{lang}/{split}", log)
    else:
        root = sample_dir() if str(data) == "sample" else Path(data).expanduser()
        path = _local_file(root, lang, split)
        table = load_rows(path, str(path), log)
    if not len(table.dataset):
        reasons = ", ".join(f"{n} {r}" for r, n in table.dropped.items())
        raise DataError(f"{table.source}: no valid rows left after validation ({reasons})")
    dataset = table.dataset
    if limit is not None and 0 < limit < len(dataset):
        dataset = dataset.select(range(limit))
    return LoadedSplit(lang, split, dataset, table.dropped, table.source, table.reused, table.key)


def available_splits(language: str, data: str | Path = "sample") -> list[str]:
    """Splits that exist locally for ``language`` (all three for the hub).

    Raises:
        DataError: unknown language.
    """
    lang = get_language(language).name
    if str(data) == "hub":
        return list(SPLITS)
    out = []
    for split in SPLITS:
        try:
            _local_file(sample_dir() if str(data) == "sample" else Path(data), lang, split)
            out.append(split)
        except DataError:
            pass
    return out


def eval_split(language: str, data: str | Path = "sample", preferred: str = "test") -> str:
    """The split to evaluate on: ``preferred`` if present, else ``validation``.

    The bundled English and Russian rows have no test split, so they evaluate on validation.
    """
    splits = available_splits(language, data)
    return preferred if preferred in splits else "validation"
