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


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would: ``0o666`` (file) or ``0o777``
    (folder) less the umask (0644 / 0755 under the usual 022).

    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask; the atomic writers
    below call this on their temporary before it is renamed into place, so that a report or a
    merged model can be read by the colleagues the umask allows.
    """
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def apply_umask_tree(folder: str | Path) -> None:
    """:func:`apply_umask` on ``folder`` and everything under it.

    ``safetensors`` (0.8) writes its files 0600 whatever the umask; model folders and
    checkpoints are passed through this once they are written.
    """
    folder = Path(folder)
    apply_umask(folder, folder=True)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            apply_umask(path, folder=path.is_dir())


def ensure_writable_target(path: Path, overwrite: bool, alternative: str | None = "choose another --output-dir",
                           markers: tuple[str, ...] | None = None) -> None:
    """Refuse to replace an existing output (a file, or a non-empty folder) unless ``overwrite``; with
    ``overwrite``, refuse to replace what peftsum did not write (see :func:`check_replaceable`).

    Args:
        path: the output file or folder.
        overwrite: the command's ``--overwrite``.
        alternative: what else the user can do, shown in brackets after the ``--overwrite`` hint
            (``None``: nothing).
        markers: for a folder output, names of which at least one must be in an existing non-empty folder
            for ``--overwrite`` to delete it (``peftsum_config.json`` for a run); ``None`` = any folder but
            the working folder, its parents and the home folder.

    Raises:
        PeftsumError: ``path`` exists (and is a non-empty folder or a file) and ``overwrite`` is false; or
            ``overwrite`` would delete something that is not peftsum's output.
    """
    from peftsum.locking import is_lock_file

    path = Path(path)
    exists = path.exists() and (path.is_file() or any(not is_lock_file(p) for p in path.iterdir()))
    if exists and not overwrite:
        raise PeftsumError(f"{path} already exists; pass --overwrite to replace it"
                           + (f" ({alternative})" if alternative else ""))
    if exists:
        check_replaceable(path, markers)


def check_replaceable(path: Path, markers: tuple[str, ...] | None = None) -> None:
    """Refuse ``--overwrite`` where it would delete what peftsum did not write.

    Never replaced: the working folder or any folder above it, the home folder, a filesystem root; with
    ``markers``, a file where a folder output goes, or a non-empty folder holding none of ``markers``
    (a folder of someone's documents passed as ``--output-dir`` by mistake).

    Raises:
        PeftsumError: one line naming the path and why it is kept.
    """
    path = Path(path)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved.parent == resolved:
        raise PeftsumError(f"{path}: refusing to replace the working folder, a folder above it or the home folder "
                           "with --overwrite; choose a new --output-dir")
    if markers is None:
        return
    if path.is_file() or path.is_symlink() and not path.is_dir():
        raise PeftsumError(f"{path} is a file, not a peftsum output folder; refusing to delete it with --overwrite "
                           "(choose another --output-dir)")
    from peftsum.locking import is_lock_file

    entries = [p for p in path.iterdir() if not is_lock_file(p)]
    if entries and not any((path / m).exists() for m in markers):
        raise PeftsumError(f"{path} does not look like peftsum output (none of {', '.join(markers)}); refusing to "
                           "delete it with --overwrite (choose another --output-dir, or delete it yourself)")


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
    apply_umask(tmp, folder=True)
    try:
        yield tmp
        apply_umask_tree(tmp)  # what the writer made (safetensors: 0600) gets the umask's modes
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
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return _replace_with(path, write, suffix=".tmp")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    """Let ``writer(tmp_path)`` write a temp file next to ``path``, then ``os.replace`` it.

    Used for matplotlib's ``savefig``, which wants a file name. The temp name keeps the
    destination's suffix so writers that infer the format from it still work.
    """
    return _replace_with(Path(path), writer, suffix=Path(path).suffix)


def _replace_with(path: Path, writer: Callable[[Path], None], suffix: str) -> Path:
    """Create a hidden temp file ``.<name>.XXXX<suffix>`` next to ``path``, let ``writer`` fill it, then
    ``os.replace`` it onto ``path``; the temp file is removed if anything fails (then re-raised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        apply_umask(tmp)
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


MAX_LINE_BYTES = 16 * 1024 * 1024
"""Longest JSON line read (16 MiB): the longest XL-Sum article is well under 1 MiB; a longer
line is a file that is not JSON lines (a binary file, a JSON array on one line) and would
otherwise be read whole into memory."""

_BOM = b"\xef\xbb\xbf"


class LineError(ValueError):
    """A line that cannot be read as text: bytes that are not UTF-8, a byte-order mark after
    the start of the file, a NUL byte, or a line over :data:`MAX_LINE_BYTES`.

    Attributes:
        msg: what is wrong (``"not UTF-8 text (invalid start byte)"``).
        colno: 1-based byte column of the problem, or ``None``.
    """

    def __init__(self, msg: str, colno: int | None = None):
        super().__init__(msg + (f" at byte {colno}" if colno else ""))
        self.msg, self.colno = msg, colno


def _line_problem(raw: bytes, first: bool) -> LineError | None:
    if first and raw.startswith(_BOM):
        raw = raw[len(_BOM):]  # a BOM opening the file (Windows editors write one) is fine
    if _BOM in raw:
        return LineError("byte-order mark (U+FEFF) inside the file (files joined together?)", raw.index(_BOM) + 1)
    if b"\x00" in raw:
        return LineError("NUL byte (binary data or UTF-16 text?)", raw.index(b"\x00") + 1)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return LineError(f"not UTF-8 text ({exc.reason})", exc.start + 1)
    return None


def scan_jsonl(path: Path, max_line_bytes: int | None = None) -> Iterator[tuple[int, Any, ValueError | None]]:
    """Yield ``(line_number, value, error)`` for every non-blank line of a JSON-lines file.

    ``value`` is the parsed JSON (any type; ``None`` with an error), ``error`` the line's
    ``json.JSONDecodeError``, a :class:`LineError` (not UTF-8, a byte-order mark after the
    start, a NUL byte, a line over ``max_line_bytes``), or ``None``. The whole file is read,
    line by line in bytes (memory stays at one line): callers decide whether a bad line stops
    them (:func:`iter_jsonl`) or is collected (``peftsum data validate``).

    Args:
        path: the ``.jsonl`` file.
        max_line_bytes: longest line accepted (``None``: :data:`MAX_LINE_BYTES`, read at call time).

    Raises:
        DataError: the file cannot be opened or read.
    """
    path = Path(path)
    max_line_bytes = max_line_bytes or MAX_LINE_BYTES
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline(max_line_bytes + 1)
            except OSError as exc:
                raise DataError(f"{path}: cannot read line {lineno + 1} ({exc.strerror})") from None
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                    raw = fh.readline(max_line_bytes)
                yield lineno, None, LineError(f"line longer than {max_line_bytes:,} bytes")
                continue
            problem = _line_problem(raw, lineno == 1)
            if problem is not None:
                yield lineno, None, problem
                continue
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield lineno, None, exc


def line_error_text(error: ValueError) -> str:
    """The problem of one line for a message: ``invalid JSON at column 3: Expecting value`` or a
    :class:`LineError`'s text."""
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON at column {error.colno}: {error.msg}"
    return str(error)


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
        DataError: a line is not a JSON object, not UTF-8, holds a NUL byte or a byte-order
            mark, or is too long (file and line named), or the file is unreadable.
    """
    for lineno, obj, error in scan_jsonl(path):
        if isinstance(error, LineError):
            raise DataError(f"{path}: line {lineno}: {error}")
        if error is not None:
            raise DataError(f"{path}: invalid JSON on line {lineno}, column {json_error_column(error)}: {error.msg}")
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, found {type(obj).__name__}")
        yield lineno, obj
