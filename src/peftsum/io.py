"""Atomic file and folder writes: a crash or kill never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, Iterator

from peftsum.errors import DataError, PeftsumError


def ensure_writable_target(path: Path, overwrite: bool, alternative: str | None = "choose another --output-dir") -> None:
    """Refuse to replace an existing output (a file, or a non-empty folder) unless ``overwrite``.

    Args:
        path: the output file or folder.
        overwrite: the command's ``--overwrite``.
        alternative: what else the user can do, shown in brackets after the ``--overwrite`` hint
            (``None``: nothing).

    Raises:
        PeftsumError: ``path`` exists (and is a non-empty folder or a file) and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())) and not overwrite:
        raise PeftsumError(f"{path} already exists; pass --overwrite to replace it"
                           + (f" ({alternative})" if alternative else ""))


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


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as pretty UTF-8 JSON, atomically."""
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Args:
        path: destination file; its parent folder is created if missing.
        data: the bytes to write.

    Returns:
        ``path``.

    Raises:
        OSError: the folder is not writable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    """Let ``writer(tmp_path)`` write a temp file next to ``path``, then ``os.replace`` it.

    Used for matplotlib's ``savefig``, which wants a file name. The temp name keeps the
    destination's suffix so writers that infer the format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_json(path: Path) -> Any:
    """Read one JSON file.

    Raises:
        DataError: the file cannot be read, is not UTF-8, or is not valid JSON (the message
            names the file, line and column).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def read_json_object(path: Path) -> dict:
    """Read a JSON file that must hold an object; :class:`DataError` otherwise (file named)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def scan_jsonl(path: Path) -> Iterator[tuple[int, Any, json.JSONDecodeError | None]]:
    """Yield ``(line_number, value, error)`` for every non-blank line of a JSON-lines file.

    ``value`` is the parsed JSON (any type; ``None`` with an error), ``error`` the line's
    ``json.JSONDecodeError`` or ``None``. The whole file is read: callers decide whether a bad
    line stops them (:func:`iter_jsonl`) or is collected (``peftsum data validate``).

    Raises:
        DataError: the file is unreadable or not UTF-8 (a byte-order mark is tolerated).
    """
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line), None
                except json.JSONDecodeError as exc:
                    yield lineno, None, exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def json_error_column(error: json.JSONDecodeError) -> int:
    """The 1-based column of a JSON error in a one-line document (one JSON-lines line).

    ``error.colno`` restarts at 1 after the line's trailing newline, where the parser stops on
    a cut-off object; this counts from the line start and stops at the line's end instead.
    """
    doc = error.doc if isinstance(error.doc, str) else ""
    return min(error.pos, len(doc.rstrip("\r\n"))) + 1


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON-lines file.

    Raises:
        DataError: a line is not a JSON object (file and line named) or the file is unreadable.
    """
    for lineno, obj, error in scan_jsonl(path):
        if error is not None:
            raise DataError(f"{path}: invalid JSON on line {lineno}, column {json_error_column(error)}: {error.msg}")
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, found {type(obj).__name__}")
        yield lineno, obj
