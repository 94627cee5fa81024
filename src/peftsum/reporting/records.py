"""Read an experiment folder (see ``docs/run_format.md``) into plain Python records.

Nothing here computes or formats; it reads the run files through :mod:`peftsum.run_format`
(which checks their keys) and parses them, so every number the report shows can be traced to one file.
The record classes are defined in :mod:`peftsum.reporting.record_types` and importable from here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from peftsum import run_format as rf
from peftsum.errors import DataError, PeftsumError
from peftsum.io import iter_jsonl
from peftsum.reporting.record_types import Baseline, EvalRecord, Experiment, RunRecord, Score
from peftsum.run_format import ROUGE_KEYS

__all__ = ["ROUGE_KEYS", "Baseline", "EvalRecord", "Experiment", "RunRecord", "Score", "load_baseline",
           "load_experiment", "load_run", "parse_score", "read_predictions", "read_training_log"]

read_predictions = rf.read_predictions
"""``predictions.jsonl`` rows in file order (:func:`peftsum.run_format.read_predictions`), for the report modules."""


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


def _read_run_status(run_dir: Path) -> tuple[str, str | None, float | None, str | None]:
    """``(status, error, seconds, label)`` from the run's status.json; ``("unknown", None, None, None)`` without one."""
    status_path = run_dir / rf.STATUS_FILE
    if not status_path.is_file():
        return "unknown", None, None, None
    st = rf.read_status(status_path)
    label, status, error = st.get("label") or None, st["status"], st.get("error")
    return status, error, _number(st.get("seconds"), status_path, "'seconds'", allow_none=True), label


def _run_identity(run_id: str, metrics: dict | None, label: str | None) -> tuple[str, list[str], int | None]:
    """``(method, training languages, seed)`` from metrics.json, else the status label or the run id."""
    match = _RUN_ID.match(run_id)
    method = (metrics or {}).get("method") or (label if label and label in _method_names() else None) \
        or (match.group("method") if match else run_id)
    if metrics is not None:  # method and train_languages are checked by read_metrics
        langs = metrics["train_languages"]
    else:
        langs = match.group("langs").split("+") if match else []
    return method, langs, _seed_from(metrics or {}, run_id)


def _eval_record(lang_dir: Path, res_path: Path) -> EvalRecord:
    """One evaluation: its score, predictions file, decoding settings, precision and device."""
    data = rf.read_results(res_path)
    score = parse_score(data, res_path)
    if not score.language:
        score.language = lang_dir.name
    pred = rf.predictions_beside(res_path)
    gen = data.get("generation")
    return EvalRecord(
        language=lang_dir.name,
        score=score,
        predictions_path=pred if pred.is_file() else None,
        generation=gen if isinstance(gen, dict) else {},
        precision=(data.get("precision") or {}).get("evaluated") if isinstance(data.get("precision"), dict)
        else None,
        device=str(data["device"]) if data.get("device") else None,
    )


def _read_evals(run_dir: Path) -> dict[str, EvalRecord]:
    """``{language: EvalRecord}`` for every ``eval/<language>/results.json`` of the run."""
    evals: dict[str, EvalRecord] = {}
    eval_root = run_dir / rf.EVAL_DIR
    if eval_root.is_dir():
        for lang_dir in sorted(p for p in eval_root.iterdir() if p.is_dir()):
            res_path = lang_dir / rf.RESULTS_FILE
            if res_path.is_file():
                evals[lang_dir.name] = _eval_record(lang_dir, res_path)
    return evals


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
    status, error, seconds, label = _read_run_status(run_dir)
    metrics_path = run_dir / rf.METRICS_FILE
    metrics: dict | None = None
    if metrics_path.is_file():
        metrics = rf.read_metrics(metrics_path)
    elif status != "failed":
        raise DataError(f"{metrics_path}: file not found (the run's status is {status!r})")
    method, langs, seed = _run_identity(run_id, metrics, label)
    evals = _read_evals(run_dir)
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
