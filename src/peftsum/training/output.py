"""The run folder's policy: what may be replaced, what a resume needs, when a checkpoint is complete.

Cheap and import-light (no torch, no transformers): :func:`check_output` runs before anything heavy
loads, so an unusable ``--output-dir`` fails in about a second. The file names here are the run
format's (``docs/run_format.md``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError
from peftsum.io import ensure_writable_target

from peftsum.run_format import (  # noqa: F401  (the run folder's names: one definition, in run_format)
    COMPLETE_MARKER, CONFIG_FILE, COUNTERS_FILE, INIT_ADAPTER_DIR, METRICS_FILE, RUN_MARKERS)
_RESUME_IGNORED = {"resume", "overwrite", "tensorboard", "output_dir", "model_as_given"}
"""Config keys that may change on ``--resume``: none of them changes the trajectory of training.
Everything else (``max_steps`` and ``num_epochs`` included: they shape the LR schedule) must match."""


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` and fsync it before returning."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def sync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself, so the marker is written after the data."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_of(path: Path) -> int:
    """The step N of a ``checkpoint-N`` folder, or -1 when the name carries none."""
    try:
        return int(path.name.split("-")[-1])
    except ValueError:
        return -1


def latest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that carries :data:`COMPLETE_MARKER`.

    Args:
        checkpoints_dir: a run's ``checkpoints/`` folder.

    Returns:
        The folder with the highest step among complete ones, or ``None`` (folder missing or
        no complete checkpoint). Incomplete folders (a save that was killed) are ignored.
    """
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if step_of(p) >= 0 and (p / COMPLETE_MARKER).is_file()]
    return max(done, key=step_of) if done else None


def _config_diff(old: dict, new: dict) -> list[str]:
    from peftsum.distributed import BATCH_KEYS, batch_diff

    keys = sorted((set(old) | set(new)) - _RESUME_IGNORED - BATCH_KEYS)
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return diff + batch_diff(old, new)  # the world size may change if the global batch stays


def check_output(cfg: TrainConfig) -> Path | None:
    """Check that ``cfg.output_dir`` can be used, touching nothing (cheap: runs before the heavy imports).

    Returns:
        The checkpoint to resume from (``--resume``), else ``None``.

    Raises:
        ConfigError: ``--resume`` with nothing to resume, a changed config, or no complete checkpoint.
        PeftsumError: an existing output without ``--overwrite`` or ``--resume``.
    """
    out = Path(cfg.output_dir)
    if not cfg.resume:
        ensure_writable_target(out, cfg.overwrite, alternative="or --resume to continue it", markers=RUN_MARKERS)
        return None
    saved = out / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"{out}: nothing to resume (no {CONFIG_FILE}); run without --resume first")
    from peftsum.distributed import run_config_record

    diff = _config_diff(json.loads(saved.read_text(encoding="utf-8")), run_config_record(cfg))
    if diff:
        raise ConfigError(f"--resume with a changed config ({'; '.join(diff)}); use the original settings "
                          "or a new --output-dir")
    ckpt = latest_complete_checkpoint(out / "checkpoints")
    if ckpt is None:
        raise ConfigError(f"{out / 'checkpoints'}: no complete checkpoint to resume from; "
                          "start again with --overwrite")
    return ckpt


def finished_run(cfg: TrainConfig) -> dict | None:
    """The record of a finished run that ``--resume`` was asked to continue, else ``None``.

    A run is finished when its ``metrics.json`` exists (it is written after the final model).
    Resuming it would train zero steps and rewrite its record with a fraction of a second of
    runtime, so :func:`peftsum.training.trainer.train` returns this record unchanged instead.

    Args:
        cfg: the resolved config (``cfg.resume`` true).

    Returns:
        The run's ``metrics.json`` as a dict, or ``None`` (not resuming, or not finished).

    Raises:
        ConfigError: the finished run was made with a different config (each difference listed).
    """
    from peftsum.io import read_json_object

    out = Path(cfg.output_dir)
    if not cfg.resume or not (out / METRICS_FILE).is_file() or not (out / CONFIG_FILE).is_file():
        return None
    diff = _config_diff(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")), cfg.to_dict())
    if diff:
        raise ConfigError(f"--resume with a changed config ({'; '.join(diff)}); use the original settings "
                          "or a new --output-dir")
    return read_json_object(out / METRICS_FILE)


def prepare_output(cfg: TrainConfig, resume_ckpt: Path | None, log) -> Path:
    """Make ``cfg.output_dir`` ready after :func:`check_output`: drop incomplete checkpoints of a
    resumed run, or replace (``--overwrite``) / create the folder of a new one."""
    out = Path(cfg.output_dir)
    if resume_ckpt is not None:
        for stale in (out / "checkpoints").glob("checkpoint-*"):
            if stale.is_dir() and not (stale / COMPLETE_MARKER).is_file():
                log(f"removing incomplete checkpoint {stale} (a save that was interrupted)")
                shutil.rmtree(stale)
        return out
    if out.exists():
        if out.is_file():
            out.unlink()
        elif any(out.iterdir()):
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def mark_checkpoint_complete(ckpt: Path, tokens_seen: int, examples_seen: int) -> None:
    """Write the counters into ``ckpt``, sync every file, then write :data:`COMPLETE_MARKER`.

    Called on rank 0 after all ranks saved their files; a kill before the marker leaves the folder
    incomplete, so ``--resume`` skips it.
    """
    from peftsum.io import apply_umask_tree, write_json_atomic

    write_json_atomic(ckpt / COUNTERS_FILE, {"tokens_seen": tokens_seen, "examples_seen": examples_seen})
    apply_umask_tree(ckpt)  # safetensors writes 0600: the umask's modes, like every other output
    sync_tree(ckpt)
    write_synced(ckpt / COMPLETE_MARKER, "ok\n")


def saved_counters(ckpt: Path) -> tuple[int, int] | None:
    """``(tokens_seen, examples_seen)`` recorded in checkpoint ``ckpt``, or ``None`` when it has none."""
    counters = Path(ckpt) / COUNTERS_FILE
    if not counters.is_file():
        return None
    c = json.loads(counters.read_text(encoding="utf-8"))
    return c["tokens_seen"], c["examples_seen"]
