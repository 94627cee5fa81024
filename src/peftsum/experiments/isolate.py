"""Train and evaluate each run of an experiment in its own process.

A process's peak resident set size includes whatever earlier work in the same process left
behind (allocator caches, imported modules, objects not yet freed); resetting the kernel's
peak mark (``VmHWM``) only resets it to the *current* size. So runs made one after another
in one process reported rising memory figures whatever the method (667.6 -> 877.7 MB over six
runs of the demo), and swapping the method order flipped the report's memory comparison. Here
each run starts in a fresh interpreter (``multiprocessing`` with the ``spawn`` start method,
which does not inherit the parent's memory), so its ``peak_rss_mb`` is its own: the same
imports plus that run's model, optimizer and data.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from peftsum.run_format import STATUS_FILE, read_status, write_status


def _die_with_parent(parent_pid: int) -> None:
    """Make this (child) process end when the experiment process ends, even by SIGKILL.

    Without it a killed ``peftsum experiment`` leaves its current run training in the background,
    holding the run folder's lock, so the rerun the user starts finds the run busy or finished by an
    orphan. Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; then the parent is checked once more, in case
    it died before the call. Elsewhere nothing is set (a SIGINT still reaches the whole process group).
    """
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _child(run, cfg, parent_pid: int) -> None:  # pragma: no cover - runs in the child process
    _die_with_parent(parent_pid)
    from rich.console import Console

    from peftsum.experiments.runner import execute_run

    execute_run(run, cfg, log=Console(highlight=False).print)


def execute_run_isolated(run, cfg, log=print) -> dict:
    """:func:`peftsum.experiments.runner.execute_run` in a fresh (spawned) process.

    Args:
        run: the :class:`~peftsum.experiments.config.RunSpec`.
        cfg: the :class:`~peftsum.experiments.config.ExperimentConfig`.
        log: where the parent reports a child that died without writing ``status.json``
            (the child logs to the inherited stdout).

    Returns:
        The run's ``status.json`` as written by the child; when the child died (killed,
        out of memory) a ``failed`` status naming its exit code, written here.
    """
    run_dir = Path(run.train.output_dir)
    status_path = run_dir / STATUS_FILE
    before = status_path.stat().st_mtime_ns if status_path.is_file() else None
    import os

    proc = multiprocessing.get_context("spawn").Process(target=_child, args=(run, cfg, os.getpid()), daemon=False)
    proc.start()
    try:
        proc.join()
    except BaseException:
        proc.terminate()
        proc.join()
        raise
    if status_path.is_file() and status_path.stat().st_mtime_ns != before:
        return read_status(status_path)
    status = {"status": "failed", "error": f"the run's process exited with code {proc.exitcode} before "
              "writing status.json (killed, or out of memory)", "seconds": None, "run_id": run.run_id,
              "label": run.label, "train_languages": run.train.languages, "eval_languages": run.eval_languages}
    log(f"run {run.run_id} failed: {status['error']}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_status(run_dir, status)
