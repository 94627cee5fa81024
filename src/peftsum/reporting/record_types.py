"""The records the report is computed from: :class:`Experiment` holds :class:`RunRecord` s (with their
:class:`EvalRecord` s and :class:`Score` s) and :class:`Baseline` s.

Plain data; :mod:`peftsum.reporting.records` reads them from an experiment folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Score:
    """One score JSON (``eval/<lang>/results.json`` or one side of ``baselines/<lang>.json``).

    Attributes:
        path: the file it was read from.
        language: XL-Sum language name.
        split: dataset split (``"test"``, ``"validation"``), or ``None`` when not recorded.
        num_examples: number of scored examples, or ``None``.
        f1, ci_low, ci_high: per ROUGE key, F1 and its 95% bootstrap CI, on a 0-100 scale.
        per_example: per ROUGE key, the per-example F1 list (0-100), in prediction order.
        stemmer, normalization: the ROUGE settings recorded in the file.
        sanity: the ``sanity`` block (script share, empty predictions, ...), or ``{}``.
        bootstrap: the ``bootstrap`` block (``n_resamples``, ``seed``, ``confidence``), or ``{}``.
    """

    path: Path
    language: str
    split: str | None
    num_examples: int | None
    f1: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    per_example: dict[str, list[float]]
    stemmer: Any = None
    normalization: Any = None
    sanity: dict = field(default_factory=dict)
    bootstrap: dict = field(default_factory=dict)


@dataclass
class EvalRecord:
    """One evaluation of a run on one language (``runs/<id>/eval/<language>/``).

    Attributes:
        language: the evaluated language (the folder name).
        score: the parsed ``results.json``.
        predictions_path: ``predictions.jsonl`` if present, else ``None``.
        generation: the generation settings recorded in ``results.json`` (may be ``{}``).
        precision: the precision decoding ran in (``"bf16"``/``"fp32"``), ``None`` for results written
            before peftsum recorded it.
        device: the device decoding ran on (``cpu``, ``cuda``, ...) or ``None`` (not recorded).
    """

    language: str
    score: Score
    predictions_path: Path | None
    generation: dict = field(default_factory=dict)
    precision: str | None = None
    device: str | None = None

    @property
    def split(self) -> str | None:
        """The split this evaluation was scored on."""
        return self.score.split


@dataclass
class RunRecord:
    """One training run folder.

    Attributes:
        run_id: the folder name, ``<label>-<train languages joined by +>-s<seed>``.
        path: the run folder.
        status: ``"done"``, ``"failed"``, or ``"unknown"`` (no ``status.json``).
        error: the error text from ``status.json`` (failed runs), else ``None``.
        seconds: wall time from ``status.json``, seconds, or ``None``.
        metrics: the parsed ``metrics.json`` or ``None`` when absent (failed runs only).
        method: PEFT registry name (``full``, ``lora``, ...), from ``metrics.json`` or the run id.
        train_languages: training languages, from ``metrics.json`` or the run id.
        seed: training seed (``metrics.json``'s ``config.seed``, else the ``-s<seed>`` suffix), or ``None``.
        label: the experiment's name for this variant (``lora-r16``; ``status.json``'s ``label``),
            else the method. Runs are grouped, pooled over seeds and reported per label.
        evals: evaluation records keyed by language.
        log_path: ``training_log.jsonl`` if present, else ``None``.
        train_curve, val_curve: ``(step, loss)`` rows of the training log (training ``loss``
            and validation ``eval_loss``); empty without a log.
    """

    run_id: str
    path: Path
    status: str
    error: str | None
    seconds: float | None
    metrics: dict | None
    method: str
    train_languages: tuple[str, ...]
    seed: int | None
    evals: dict[str, EvalRecord] = field(default_factory=dict)
    log_path: Path | None = None
    label: str = ""
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the run can be reported on (not failed, and it has ``metrics.json``)."""
        return self.status != "failed" and self.metrics is not None

    def metric(self, key: str) -> Any:
        """A value from ``metrics.json`` (``None`` when missing or the file is absent)."""
        return (self.metrics or {}).get(key)

    @property
    def precision(self) -> str | None:
        """Training precision, ``"bf16"`` or ``"fp32"`` (older runs: from ``hyperparameters.bf16``), or ``None``."""
        if self.metrics is None:
            return None
        if self.metric("precision"):
            return str(self.metric("precision"))
        bf16 = (self.metric("hyperparameters") or {}).get("bf16")
        return None if bf16 is None else ("bf16" if bf16 else "fp32")


@dataclass
class Baseline:
    """``baselines/<language>.json``: LEAD-1 and extractive-oracle scores for one language."""

    path: Path
    language: str
    split: str | None
    lead1: Score
    oracle: Score


@dataclass
class Experiment:
    """Everything read from one experiment (or single-run) folder.

    Attributes:
        root: the folder given to the reader.
        runs: all run records, sorted by run id (done, failed and unknown).
        baselines: baseline records keyed by language.
        skipped: run folders with neither ``status.json`` nor ``metrics.json`` (not started
            or still writing), by path.
    """

    root: Path
    runs: list[RunRecord]
    baselines: dict[str, Baseline]
    skipped: list[Path] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[RunRecord]:
        """Runs that finished (see :attr:`RunRecord.ok`)."""
        return [r for r in self.runs if r.ok]

    @property
    def failed_runs(self) -> list[RunRecord]:
        """Runs whose ``status.json`` says ``failed``."""
        return [r for r in self.runs if r.status == "failed"]
