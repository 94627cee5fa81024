"""A run's training data: each language's train and validation rows tokenized (cached) and mixed.

:func:`build_training_data` loads every language through :func:`peftsum.data.xlsum.load_split`,
tokenizes it with :func:`peftsum.data.arrow.tokenize_split` (cached Arrow tables), and mixes the
training rows with exponent smoothing (:func:`peftsum.data.features.mix_indices`). Importable from
:mod:`peftsum.data.arrow` as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsum.data.cache import data_cache_dir
from peftsum.data.xlsum import LoadedSplit


@dataclass
class TrainingData:
    """Tokenized training and validation tables of a run (:func:`build_training_data`).

    Attributes:
        train: the mixed training rows (``input_ids``, ``attention_mask``, ``labels``, ``length``).
        validation: the validation rows of all languages, language after language.
        rows_per_language: training rows per language after exponent-smoothed mixing.
        file_rows: valid training rows per language before mixing.
        validation_splits: the loaded validation splits per language (rows for ROUGE).
        dropped: rows dropped by validation, per ``language/split`` and reason.
        cache_dir: the data cache folder.
        reused: ``True`` when every tokenized table came from the cache.
        seconds: time spent loading and tokenizing.
        tokenized: the ``language/split`` tables tokenized by this call (not found in the cache).
    """

    train: Any
    validation: Any
    rows_per_language: dict[str, int]
    file_rows: dict[str, int]
    validation_splits: dict[str, LoadedSplit]
    dropped: dict
    cache_dir: Path
    reused: bool
    seconds: float = 0.0
    tokenized: list[str] = field(default_factory=list)

    def rouge_rows(self, limit: int) -> dict[str, list[dict]]:
        """The first ``limit`` validation rows of each language as dicts (``text``, ``summary``, ...)."""
        return {lang: loaded.dataset.select(range(min(limit, len(loaded.dataset)))).to_list()
                for lang, loaded in self.validation_splits.items()}


def _load_language_splits(cfg, split: str, limit: int | None, log) -> tuple[dict[str, LoadedSplit], dict]:
    from peftsum.data.xlsum import load_split

    loaded, dropped = {}, {}
    for lang in cfg.languages:
        part = load_split(lang, split, cfg.data, limit, log=log)
        if part.num_dropped:
            log(f"{part.source}: dropped {part.num_dropped} rows ({dict(part.dropped)})")
        loaded[lang] = part
        dropped[f"{lang}/{split}"] = dict(part.dropped)
    return loaded, dropped


def build_training_data(cfg, tokenizer, log=print) -> TrainingData:
    """Load, validate, tokenize (cached) and mix the training and validation rows of a run.

    Prints the rows per language, the cache folder and whether the cache was reused, and a warning
    when ``cfg.data`` is a single file (its validation rows are training rows).

    Args:
        cfg: a resolved :class:`peftsum.config.TrainConfig` (``languages``, ``data``,
            ``train_samples``, ``val_samples``, lengths, ``source_prefix``,
            ``language_sampling_alpha``, ``seed``).
        tokenizer: the run's tokenizer.
        log: where progress lines go.

    Returns:
        A :class:`TrainingData`.

    Raises:
        DataError: what :func:`peftsum.data.xlsum.load_split` raises.
    """
    from datasets import concatenate_datasets

    from peftsum.data.arrow import tokenize_split, tokenizer_fingerprint  # the module that re-exports this one
    from peftsum.data.features import mix_indices

    start = time.perf_counter()
    train_splits, dropped = _load_language_splits(cfg, "train", cfg.train_samples, log)
    val_splits, val_dropped = _load_language_splits(cfg, "validation", cfg.val_samples, log)
    dropped.update(val_dropped)
    tok_key = tokenizer_fingerprint(tokenizer)
    lengths = dict(max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length,
                   source_prefix=cfg.source_prefix, tokenizer_key=tok_key)
    tokenized, built = {}, []
    for split, parts in (("train", train_splits), ("validation", val_splits)):
        for lang, loaded in parts.items():
            ds, reused, _ = tokenize_split(loaded, tokenizer, **lengths)
            tokenized[split, lang] = ds
            if not reused:
                built.append(f"{lang}/{split}")
    file_rows = {lang: len(loaded.dataset) for lang, loaded in train_splits.items()}
    order, rows_per_language = mix_indices(file_rows, cfg.language_sampling_alpha, cfg.seed)
    train_parts = [tokenized["train", lang] for lang in train_splits]
    train = train_parts[0] if order is None else concatenate_datasets(train_parts).select(order)
    val_parts = [tokenized["validation", lang] for lang in val_splits]
    validation = val_parts[0] if len(val_parts) == 1 else concatenate_datasets(val_parts)
    seconds = time.perf_counter() - start
    data = TrainingData(train=train, validation=validation, rows_per_language=rows_per_language,
                        file_rows=file_rows, validation_splits=val_splits, dropped=dropped,
                        cache_dir=data_cache_dir(), reused=not built, seconds=seconds, tokenized=built)
    log(describe(data, cfg.language_sampling_alpha))
    if cfg.data not in ("sample", "hub") and Path(cfg.data).is_file():
        log(f"warning: {cfg.data} is one file, so validation rows come from the training rows: validation loss and "
            "ROUGE measure fit, not generalisation (pass a folder with train and validation files)")
    return data


def describe(data: TrainingData, alpha: float) -> str:
    """The start-of-run data summary: rows per language, the cache folder, whether it was reused."""
    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{lang} {n:,}" for lang, n in d.items())

    mixed = "" if len(data.file_rows) == 1 else f" (mixed with alpha {alpha:g} from {counts(data.file_rows)})"
    val = {lang: len(loaded.dataset) for lang, loaded in data.validation_splits.items()}
    if data.reused:
        cache = "reused (rows and tokens from an earlier run)"
    else:
        cache = f"tokenized {', '.join(data.tokenized)} and cached"
    return (f"training rows: {counts(data.rows_per_language)}{mixed}; validation rows: {counts(val)}\n"
            f"data cache: {data.cache_dir}: {cache} ({data.seconds:.1f} s)")
