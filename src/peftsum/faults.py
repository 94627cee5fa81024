"""Faults from the machine rather than the input: a full disk, a quota, told in one line."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from peftsum.errors import PeftsumError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""``OSError`` numbers that mean "no room to write": no space left, disk quota exceeded, file too large."""


class DiskFull(PeftsumError):
    """A write failed for lack of space; the message says what was kept and how to continue."""


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` (or one it wraps as ``__cause__``/``__context__``) that means no space."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def checkpoint_disk_full(ckpt: Path, previous: Path | None, exc: BaseException) -> DiskFull:
    """Remove the half-written checkpoint ``ckpt`` and build the one-line error for it.

    Args:
        ckpt: the checkpoint folder being written when the disk filled up.
        previous: the newest complete checkpoint (kept, untouched), or ``None``.
        exc: the ``OSError``.

    Returns:
        The :class:`DiskFull` to raise (``from None``).
    """
    shutil.rmtree(ckpt, ignore_errors=True)  # frees what it took; --resume never uses it anyway
    reason = getattr(exc, "strerror", None) or str(exc)
    kept = (f"the previous complete checkpoint {previous} is intact" if previous is not None
            else "no earlier checkpoint exists")
    hint = "free space, then rerun with --resume" if previous is not None else "free space, then rerun"
    return DiskFull(f"disk full while saving checkpoint {ckpt} ({reason}); {kept}; {hint}")
