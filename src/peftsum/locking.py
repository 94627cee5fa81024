"""One writer per folder: an advisory lock that a second peftsum process runs into at once.

Why ``fcntl.flock`` on a lock file: the kernel drops the lock when the holding process dies,
however it dies (SIGKILL, OOM killer, power loss of the process), so a killed run never leaves
a lock that blocks the next one and nothing has to guess from timestamps. The holder writes
its process id, host, command and start time into the file, so the second process can name it.
Where ``flock`` is not available (some network file systems answer ``ENOLCK``), the file's
contents decide instead: a lock is stale when its host is this host and its process is gone.

The lock file sits *beside* the folder (``<parent>/.<name>.peftsum.lock``), not in it: the
folder itself may be replaced as a whole (``--overwrite``, atomic folder writes), and an empty
output folder must stay empty for the "already exists" checks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from peftsum.errors import PeftsumError

LOCK_SUFFIX = ".peftsum.lock"
"""Suffix of the lock file beside a locked folder."""

_held: dict[str, int] = {}
"""Locks this process holds: resolved lock-file path -> nesting depth (a process may re-enter
its own lock: ``peftsum experiment`` writes its report under the experiment's lock)."""
_guard = threading.Lock()


class FolderLocked(PeftsumError):
    """Another process holds the lock on the folder (the message names its pid and host)."""


INNER_LOCK = ".peftsum.lock"
"""Lock file name inside the folder, used when the folder's parent is not writable (a
home folder's parent): the "already exists" checks ignore it (:func:`is_lock_file`)."""


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def lock_path(folder: str | Path) -> Path:
    """The lock file for ``folder`` (absolute).

    ``<parent>/.<name>.peftsum.lock`` beside the folder, or ``<folder>/.peftsum.lock`` when the
    parent exists and is not writable (e.g. ``peftsum report .`` in a home folder). Two
    processes of one user therefore always pick the same file.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    if folder.parent == folder or not os.access(_first_existing(folder.parent), os.W_OK):
        return folder / INNER_LOCK
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def is_lock_file(path: str | Path) -> bool:
    """True for a peftsum lock file (ignored when deciding whether a folder is empty)."""
    name = Path(path).name
    return name == INNER_LOCK or (name.startswith(".") and name.endswith(LOCK_SUFFIX))


def read_holder(path: str | Path) -> dict:
    """The holder record written in a lock file (``pid``, ``host``, ``command``, ``since``), or ``{}``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (``kill(pid, 0)``; a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def holder_is_stale(holder: dict) -> bool:
    """True when the record names a process on this host that no longer runs."""
    return holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid") or 0))


def describe_holder(holder: dict) -> str:
    """``pid 1234 on host, `peftsum train`, since 2026-01-01 12:00:00`` (what is known of it)."""
    if not holder:
        return "another process (no holder recorded)"
    bits = [f"pid {holder.get('pid')} on {holder.get('host')}"]
    if holder.get("command"):
        bits.append(f"`peftsum {holder['command']}`")
    if holder.get("since"):
        bits.append(f"since {holder['since']}")
    return ", ".join(bits)


def _record(command: str) -> bytes:
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                        "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:6]}) + "\n").encode()


def _try_flock(fd: int) -> bool:
    """Take an exclusive non-blocking flock; False when another open file holds it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None  # type: ignore[return-value]  # no flock here: decide from the record
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the one-writer lock on ``folder`` for the ``with`` block.

    Re-entrant within one process. The lock file is removed on a clean exit; after a kill it
    stays, unlocked (the kernel released it), and the next process takes it over.

    Args:
        folder: the folder about to be written (need not exist; its parent is created).
        command: the peftsum command taking it (``train``, ``experiment``, ...), shown to others.

    Yields:
        The lock file's path.

    Raises:
        FolderLocked: another live process holds the lock; one line naming its pid, host and command.
    """
    path = lock_path(folder)
    from peftsum.distributed import is_main

    if not is_main():  # a launched job (torchrun, accelerate): rank 0 holds the lock for all of its processes
        yield path
        return
    key = str(path)
    with _guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                _held[key] -= 1
        return
    fd = _acquire(path, Path(folder), command)
    with _guard:
        _held[key] = 1
    try:
        yield path
    finally:
        with _guard:
            del _held[key]
        _release(path, fd)


def _acquire(path: Path, folder: Path, command: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # retried only when the file was replaced between open and lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        got = _try_flock(fd)
        if got is None:  # no flock on this file system: the record decides
            holder = read_holder(path)
            got = not holder or holder.get("pid") == os.getpid() or holder_is_stale(holder)
        if not got:
            holder = read_holder(path)
            os.close(fd)
            ended = " (ended; a process it started still holds the lock)" if holder and holder_is_stale(holder) else ""
            raise FolderLocked(
                f"{folder} is being written by another peftsum process ({describe_holder(holder)}{ended}); "
                f"wait for it to finish or choose another output folder (lock: {path})")
        try:  # the file we locked must still be the one at ``path`` (a releasing holder unlinks it)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(command), 0)
        return fd
    raise FolderLocked(f"{folder}: could not take the lock {path} (it keeps being replaced)")


def _release(path: Path, fd: int) -> None:
    try:
        os.unlink(path)  # unlink while still locked: a waiting opener sees the inode change and retries
    except OSError:
        pass
    os.close(fd)


def lock_or_none(folder: str | Path | None, command: str):
    """:func:`folder_lock` for ``folder``, or a no-op context when ``folder`` is ``None``."""
    return folder_lock(folder, command) if folder is not None else contextlib.nullcontext()
