"""Run an experiment: base model, every run (train, evaluate), baselines, report.

Finished runs (``status.json`` says done and every evaluation exists) are skipped when the
experiment is run again; a failed run is recorded with its error and the others go on.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import yaml

from peftsum.config import yaml_load
from peftsum.distributed import barrier, is_distributed, is_main
from peftsum.errors import PeftsumError
from peftsum.experiments.config import ExperimentConfig, RunSpec, expand_runs
from peftsum.experiments.isolate import execute_run_isolated
from peftsum.experiments.seed_check import write_seed_scorer_files
from peftsum.io import write_text_atomic
from peftsum.names import ensure_inside
from peftsum.run_format import (CONFIG_FILE, EXPERIMENT_FILE, EXPERIMENT_MARKERS, METRICS_FILE, MODEL_DIR, STATUS_FILE,
                                baseline_path, read_status, results_path, write_baseline, write_status)


def resolve_base_model(cfg: ExperimentConfig, log=print) -> str:
    """The base model path: for ``tiny`` the cached tiny mT5, pretrained for ``pretrain_steps``."""
    from peftsum.modeling.tiny import BUILTIN_NAME, refuse_ambiguous_name, resolve_model_name

    if cfg.model != BUILTIN_NAME or cfg.pretrain_steps <= 0:
        return resolve_model_name(cfg.model, "rename or move that folder")
    from peftsum.modeling.pretrain import ensure_pretrained_tiny

    refuse_ambiguous_name(cfg.model, "rename or move that folder")
    log(f"base: tiny mT5 pretrained with lead bias for {cfg.pretrain_steps} steps (cached)")
    return str(ensure_pretrained_tiny(cfg.pretrain_steps))


def run_is_done(run: RunSpec) -> bool:
    """True when the run trained successfully and every evaluation file exists."""
    run_dir = Path(run.train.output_dir)
    status = run_dir / STATUS_FILE
    if not status.is_file():
        return False
    try:
        done = read_status(status)["status"] == "done"
    except PeftsumError:
        return False
    return done and all(results_path(run_dir, lang).is_file() for lang in run.eval_languages)


def resumable_checkpoint(run: RunSpec) -> Path | None:
    """The checkpoint an interrupted run continues from, or ``None`` when it must start over.

    A run resumes when its folder holds its saved config and a complete checkpoint
    (``peftsum.training.trainer.latest_complete_checkpoint``) and its method can resume
    (AdaLoRA cannot: its importance scores are not checkpointed).
    """
    from peftsum.modeling.methods import get_method
    from peftsum.training.trainer import latest_complete_checkpoint

    run_dir = Path(run.train.output_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not get_method(run.train.method).resumable:
        return None
    return latest_complete_checkpoint(run_dir / "checkpoints")


def execute_run(run: RunSpec, cfg: ExperimentConfig, log=print) -> dict:
    """Train one run and evaluate it on each of its languages; write ``status.json``.

    Returns:
        The status dict (``status`` is ``done`` or ``failed`` with ``error``).
    """
    from peftsum.generation.decode import GenerationSettings
    from peftsum.generation.evaluate import evaluate_model
    from peftsum.training.trainer import train

    run_dir = Path(run.train.output_dir)
    start = time.perf_counter()
    try:
        if not (run_dir / METRICS_FILE).is_file():
            ckpt = resumable_checkpoint(run)
            if ckpt is not None:  # an interrupted earlier attempt continues from its last complete checkpoint
                log(f"{run.run_id}: resuming from {ckpt.name}")
                run.train.resume, run.train.overwrite = True, False
            else:  # nothing usable from an earlier attempt: start from scratch
                run.train.resume, run.train.overwrite = False, True
            train(run.train, log=log)
        for lang in run.eval_languages:
            out = ensure_inside(run_dir, results_path(run_dir, lang), "evaluation file")
            if out.is_file():
                continue
            evaluate_model(str(run_dir / MODEL_DIR), lang, out, cfg.eval_split, cfg.data, cfg.eval_samples,
                           GenerationSettings(**cfg.generation), cfg.eval_batch_size, log=log)
        status = {"status": "done", "error": None}
    except Exception as exc:  # any failure of one run is recorded; the others go on
        status = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                  "traceback": traceback.format_exc(limit=5)}
        log(f"[red]run {run.run_id} failed:[/] {status['error']}")
    status.update({"seconds": round(time.perf_counter() - start, 2), "pid": os.getpid(), "run_id": run.run_id,
                   "label": run.label,
                   "train_languages": run.train.languages, "eval_languages": run.eval_languages})
    if is_main():  # several processes (torchrun): rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        status = write_status(run_dir, status)
    barrier()
    return status


def write_baselines(cfg: ExperimentConfig, exp_dir: Path, languages: list[str]) -> None:
    """Score LEAD-1 and the extractive oracle on each evaluation language (skips existing files)."""
    from peftsum.data.xlsum import eval_split, load_split
    from peftsum.metrics.baselines import baseline_scores

    for lang in languages:
        if baseline_path(exp_dir, lang).is_file():
            continue
        split = cfg.eval_split or eval_split(lang, cfg.data)
        result = baseline_scores(load_split(lang, split, cfg.data, cfg.eval_samples).iter_rows(), lang)
        result.update({"language": lang, "split": split})
        write_baseline(exp_dir, lang, result)


def _check_existing(exp_dir: Path, cfg: ExperimentConfig, overwrite: bool) -> None:
    saved = exp_dir / EXPERIMENT_FILE
    if not saved.is_file() and exp_dir.is_dir() and any(exp_dir.iterdir()) and not overwrite:
        raise PeftsumError(f"{exp_dir} exists and is not an experiment folder (no experiment.yaml); "
                           "choose another --output-dir")
    if not saved.is_file() or overwrite:
        if overwrite and exp_dir.exists():
            import shutil

            from peftsum.io import check_replaceable

            check_replaceable(exp_dir, EXPERIMENT_MARKERS if any(exp_dir.iterdir()) else None)
            shutil.rmtree(exp_dir)
        return
    old = yaml_load(saved.read_text(encoding="utf-8")) or {}
    if old != cfg.to_dict():
        changed = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != cfg.to_dict().get(k))
        raise PeftsumError(f"{exp_dir} holds an experiment with a different config (changed: {', '.join(changed)}); "
                           "pass --overwrite to start over or choose another --output-dir")


def run_experiment(cfg: ExperimentConfig, exp_dir: str | Path, overwrite: bool = False, log=print) -> dict:
    """Run (or continue) an experiment in ``exp_dir``.

    Returns:
        ``{"runs": {run_id: status}, "report": {name: path} | None, "seconds": float}``.

    Raises:
        PeftsumError: ``exp_dir`` holds a different experiment and ``overwrite`` is false.
        peftsum.locking.FolderLocked: another process writes ``exp_dir``.
    """
    from peftsum.locking import folder_lock

    with folder_lock(exp_dir, "experiment"):  # one writer per experiment folder
        return _run_experiment(cfg, Path(exp_dir), overwrite, log)


def _run_experiment(cfg: ExperimentConfig, exp_dir: Path, overwrite: bool, log) -> dict:
    start = time.perf_counter()
    if is_main():  # several processes (torchrun): rank 0 checks and prepares the folder, the others wait
        _check_existing(exp_dir, cfg, overwrite)
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(exp_dir / EXPERIMENT_FILE,
                          yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
        base = resolve_base_model(cfg, log)
    barrier()
    base = resolve_base_model(cfg, log) if not is_main() else base  # built and cached by rank 0 above
    runs = expand_runs(cfg, exp_dir, base)
    log(f"experiment {cfg.name}: {len(runs)} runs -> {exp_dir}")
    statuses = {}
    for i, run in enumerate(runs, 1):
        if run_is_done(run):
            log(f"[{i}/{len(runs)}] {run.run_id}: done already, skipped")
            statuses[run.run_id] = read_status(Path(run.train.output_dir) / STATUS_FILE)
            continue
        log(f"[{i}/{len(runs)}] {run.run_id}: training on {', '.join(run.train.languages)}, "
            f"evaluating on {', '.join(run.eval_languages)}")
        if is_distributed():  # a launched job: every rank takes part in the run, in this process group
            statuses[run.run_id] = execute_run(run, cfg, log)
        else:
            statuses[run.run_id] = execute_run_isolated(run, cfg, log)  # its own process: its own peak RSS
    if cfg.baselines and is_main():
        langs = sorted({lang for r in runs for lang in r.eval_languages})
        write_baselines(cfg, exp_dir, langs)
        write_seed_scorer_files(cfg, exp_dir, runs, langs)
    report = None
    if cfg.report and is_main():
        from peftsum.reporting import write_report

        report = write_report(exp_dir)
    barrier()
    return {"runs": statuses, "report": report, "seconds": time.perf_counter() - start}
