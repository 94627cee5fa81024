"""Read an experiment folder (see ``docs/run_format.md``) into plain Python records.

Nothing here computes or formats; it reads the run files through :mod:`peftsum.run_format`
(which checks their keys) and parses them, so every number the report shows can be traced to one file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsum import run_format as rf
from peftsum.errors import DataError, PeftsumError
from peftsum.io import iter_jsonl
from peftsum.run_format import ROUGE_KEYS

read_predictions = rf.read_predictions
"""``predictions.jsonl`` rows in file order (:func:`peftsum.run_format.read_predictions`), for the report modules."""


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


# --------------------------------------------------------------------------- helpers
def _number(value: Any, path: Path, where: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: {where} must be a finite number, found {value!r}")
    return float(value)


def parse_score(data: Any, path: Path, *, where: str = "") -> Score:
    """Validate and parse one score JSON object.

    Args:
        data: the decoded JSON object.
        path: the file it came from (named in errors).
        where: a key prefix for error messages (``"lead1."`` for baselines).

    Returns:
        The :class:`Score`.

    Raises:
        DataError: a ROUGE key, ``f1``/``ci_low``/``ci_high`` or a ``per_example`` list is
            missing or not numeric (the file and key are named).
    """
    if not isinstance(data, dict):
        raise DataError(f"{path}: {where or 'score'} must be a JSON object")
    f1: dict[str, float] = {}
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    per: dict[str, list[float]] = {}
    per_block = data.get("per_example")
    if not isinstance(per_block, dict):
        raise DataError(f"{path}: missing '{where}per_example' (object of per-example F1 lists)")
    for key in ROUGE_KEYS:
        block = data.get(key)
        if not isinstance(block, dict):
            raise DataError(f"{path}: missing '{where}{key}' (object with f1, ci_low, ci_high)")
        for name, target in (("f1", f1), ("ci_low", lo), ("ci_high", hi)):
            if name not in block:
                raise DataError(f"{path}: missing '{where}{key}.{name}'")
            target[key] = _number(block[name], path, f"'{where}{key}.{name}'")
        values = per_block.get(key)
        if not isinstance(values, list):
            raise DataError(f"{path}: missing '{where}per_example.{key}' (list of F1 values)")
        per[key] = [_number(v, path, f"'{where}per_example.{key}[{i}]'") for i, v in enumerate(values)]
    num = data.get("num_examples")
    return Score(
        path=path,
        language=str(data.get("language", "")),
        split=data.get("split"),
        num_examples=int(num) if isinstance(num, (int, float)) and not isinstance(num, bool) else None,
        f1=f1,
        ci_low=lo,
        ci_high=hi,
        per_example=per,
        stemmer=data.get("stemmer"),
        normalization=data.get("normalization"),
        sanity=data.get("sanity") if isinstance(data.get("sanity"), dict) else {},
        bootstrap=data.get("bootstrap") if isinstance(data.get("bootstrap"), dict) else {},
    )


_RUN_ID = re.compile(r"^(?P<method>[^-]+)-(?P<langs>.+)-s(?P<seed>\d+)$")


def _seed_from(metrics: dict, run_id: str) -> int | None:
    """The training seed: ``config.seed`` of ``metrics.json`` (what training writes), else the run id's ``-s<seed>``."""
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    value = config.get("seed")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _RUN_ID.match(run_id)
    return int(match.group("seed")) if match else None


def _method_names() -> set[str]:
    from peftsum.modeling.methods import METHODS

    return set(METHODS)


def load_run(run_dir: Path) -> RunRecord:
    """Read one run folder.

    Args:
        run_dir: ``runs/<run_id>`` (or a ``peftsum train --output-dir`` folder).

    Returns:
        The :class:`RunRecord`; evaluations are read from ``eval/*/results.json``.

    Raises:
        DataError: a JSON or JSON-lines file is corrupt or misses a required key (file and line
            named), or a run whose ``status.json`` says ``done`` has no ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run_id = run_dir.name
    status_path = run_dir / rf.STATUS_FILE
    metrics_path = run_dir / rf.METRICS_FILE
    status, error, seconds, label = "unknown", None, None, None
    if status_path.is_file():
        st = rf.read_status(status_path)
        label = st.get("label") or None
        status = st["status"]
        error = st.get("error")
        seconds = _number(st.get("seconds"), status_path, "'seconds'", allow_none=True)
    metrics: dict | None = None
    if metrics_path.is_file():
        metrics = rf.read_metrics(metrics_path)
    elif status != "failed":
        raise DataError(f"{metrics_path}: file not found (the run's status is {status!r})")

    match = _RUN_ID.match(run_id)
    method = (metrics or {}).get("method") or (label if label and label in _method_names() else None) \
        or (match.group("method") if match else run_id)
    if metrics is not None:  # method and train_languages are checked by read_metrics
        langs = metrics["train_languages"]
    else:
        langs = match.group("langs").split("+") if match else []
    seed = _seed_from(metrics or {}, run_id)

    evals: dict[str, EvalRecord] = {}
    eval_root = run_dir / rf.EVAL_DIR
    if eval_root.is_dir():
        for lang_dir in sorted(p for p in eval_root.iterdir() if p.is_dir()):
            res_path = lang_dir / rf.RESULTS_FILE
            if not res_path.is_file():
                continue
            data = rf.read_results(res_path)
            score = parse_score(data, res_path)
            if not score.language:
                score.language = lang_dir.name
            pred = rf.predictions_beside(res_path)
            gen = data.get("generation")
            evals[lang_dir.name] = EvalRecord(
                language=lang_dir.name,
                score=score,
                predictions_path=pred if pred.is_file() else None,
                generation=gen if isinstance(gen, dict) else {},
                precision=(data.get("precision") or {}).get("evaluated") if isinstance(data.get("precision"), dict)
                else None,
                device=str(data["device"]) if data.get("device") else None,
            )
    log = run_dir / rf.TRAINING_LOG_FILE
    train_curve, val_curve = read_training_log(log) if log.is_file() else ([], [])
    return RunRecord(
        run_id=run_id,
        path=run_dir,
        status=status,
        error=error,
        seconds=seconds,
        metrics=metrics,
        method=str(method),
        train_languages=tuple(langs),
        seed=seed,
        evals=evals,
        log_path=log if log.is_file() else None,
        label=str(label or method),
        train_curve=train_curve,
        val_curve=val_curve,
    )


def load_baseline(path: Path) -> Baseline:
    """Read ``baselines/<language>.json`` (``{"language", "split", "lead1", "oracle"}``).

    Raises:
        DataError: corrupt JSON or a missing/invalid ``lead1``/``oracle`` score (file named).
    """
    data = rf.read_baseline(path)
    lead = parse_score(data.get("lead1"), path, where="lead1.")
    oracle = parse_score(data.get("oracle"), path, where="oracle.")
    language = str(data.get("language") or path.stem)
    split = data.get("split")
    for s in (lead, oracle):
        s.language = s.language or language
        s.split = s.split or split
    return Baseline(path=path, language=language, split=split, lead1=lead, oracle=oracle)


def load_experiment(exp_dir: Path) -> Experiment:
    """Read an experiment folder, or a single run folder, into an :class:`Experiment`.

    Args:
        exp_dir: a folder holding ``runs/<run_id>/`` (and optionally ``baselines/``), or a
            single run folder holding ``metrics.json``/``status.json`` directly.

    Returns:
        The :class:`Experiment` (runs sorted by id).

    Raises:
        PeftsumError: the folder does not exist, or no run is found
            ("no runs found in DIR: expected DIR/runs/<run_id>/metrics.json").
        DataError: a run or baseline file is corrupt or misses required keys (file named).
    """
    root = Path(exp_dir)
    if not root.exists():
        raise PeftsumError(f"{root}: no such folder")
    if not root.is_dir():
        raise PeftsumError(f"{root}: not a folder (give an experiment folder holding runs/)")
    runs_dir = root / rf.RUNS_DIR
    run_dirs: list[Path] = []
    skipped: list[Path] = []

    def is_run(folder: Path) -> bool:
        return (folder / rf.METRICS_FILE).is_file() or (folder / rf.STATUS_FILE).is_file()

    if runs_dir.is_dir():
        for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            (run_dirs if is_run(d) else skipped).append(d)
    elif is_run(root):
        run_dirs.append(root)
    if not run_dirs:
        raise PeftsumError(f"no runs found in {root}: expected {root}/runs/<run_id>/metrics.json")
    runs = [load_run(d) for d in run_dirs]
    baselines: dict[str, Baseline] = {}
    base_dir = root / rf.BASELINES_DIR
    if base_dir.is_dir():
        for p in sorted(base_dir.glob("*.json")):
            b = load_baseline(p)
            baselines[p.stem] = b
    return Experiment(root=root, runs=runs, baselines=baselines, skipped=skipped)


def read_training_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Read ``training_log.jsonl`` into training and validation loss curves.

    Returns:
        ``(train, val)``: lists of ``(step, loss)``; training rows are those with a numeric
        ``loss``, validation rows those with a numeric ``eval_loss``.

    Raises:
        DataError: a line is not a JSON object (file and line named).
    """
    train: list[tuple[int, float]] = []
    val: list[tuple[int, float]] = []
    for lineno, obj in iter_jsonl(path):
        step = obj.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            raise DataError(f"{path}: line {lineno}: missing numeric 'step'")
        for key, target in (("loss", train), ("eval_loss", val)):
            v = obj.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                target.append((int(step), float(v)))
    return train, val
