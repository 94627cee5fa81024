"""Atomic file and folder writes: a crash or kill never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from peftsum.errors import PeftsumError


def ensure_writable_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing non-empty output unless ``overwrite``.

    Raises:
        PeftsumError: ``path`` exists (and is a non-empty folder or a file) and ``overwrite`` is false.
    """
    if path.exists() and (path.is_file() or any(path.iterdir())) and not overwrite:
        raise PeftsumError(f"{path} already exists; pass --overwrite to replace it (or choose another --output-dir)")


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    Raises:
        PeftsumError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    ensure_writable_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty UTF-8 JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a one-line error naming it.

    Raises:
        PeftsumError: file missing or not valid JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PeftsumError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise PeftsumError(f"{path}:{exc.lineno}: corrupt JSON ({exc.msg})") from None
