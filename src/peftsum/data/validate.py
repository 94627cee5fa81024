"""``peftsum data validate``: check XL-Sum JSONL files without loading a model (one streaming pass per file)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from peftsum.data.xlsum import drop_reason
from peftsum.errors import DataError
from peftsum.io import LineError, json_error_column, scan_jsonl

LINES_SHOWN = 5
"""Line numbers listed per drop reason (the count is always complete)."""


@dataclass
class FileCheck:
    """What ``peftsum data validate`` found in one file.

    Attributes:
        file: the file.
        kept: rows the loaders would keep.
        malformed: ``(line, column, problem)`` for every line that is not a JSON object
            (column 1-based, where the JSON parser stopped).
        dropped: ``{reason: [line, ...]}`` for every row the loaders would drop, in file order.
    """

    file: Path
    kept: int = 0
    malformed: list[tuple[int, int, str]] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)

    @property
    def num_dropped(self) -> int:
        """Rows dropped, all reasons."""
        return sum(len(v) for v in self.dropped.values())

    def lines(self) -> list[str]:
        """The report for this file: a summary line, then one line per problem (``file:line:column: ...``)."""
        rows = f"{self.kept} valid row{'' if self.kept == 1 else 's'}"
        parts = [rows, f"{self.num_dropped} dropped"]
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed line{'' if len(self.malformed) == 1 else 's'}")
        out = [f"{self.file}: {', '.join(parts)}"]
        out += [f"  {self.file}:{line}:{col}: {problem}" for line, col, problem in self.malformed]
        for reason, lines in self.dropped.items():
            shown = ", ".join(map(str, lines[:LINES_SHOWN])) + (", ..." if len(lines) > LINES_SHOWN else "")
            out.append(f"  dropped {len(lines)} row{'' if len(lines) == 1 else 's'}: {reason} "
                       f"(line{'' if len(lines) == 1 else 's'} {shown})")
        return out


def check_file(path: Path) -> FileCheck:
    """Read a whole JSON-lines file and record every malformed line and every row the loaders drop.

    Unlike the loaders (which stop at the first bad line), nothing stops this: rows after a
    malformed line are still checked and counted.

    Raises:
        DataError: the file is unreadable or not UTF-8.
    """
    check = FileCheck(Path(path))
    for lineno, obj, error in scan_jsonl(path):
        if isinstance(error, LineError):  # not text: not UTF-8, a NUL byte, a stray byte-order mark, too long
            check.malformed.append((lineno, error.colno or 1, error.msg))
        elif error is not None:
            column = json_error_column(error) if isinstance(error, json.JSONDecodeError) else 1
            check.malformed.append((lineno, column,
                                    f"invalid JSON: {getattr(error, 'msg', error)}"))
        elif not isinstance(obj, dict):
            check.malformed.append((lineno, 1, f"expected a JSON object, found {type(obj).__name__}"))
        else:
            reason = drop_reason(obj)
            if reason is None:
                check.kept += 1
            else:
                check.dropped.setdefault(reason, []).append(lineno)
    return check


def check_path(path: str | Path) -> list[FileCheck]:
    """:func:`check_file` for a ``.jsonl`` file or every ``.jsonl`` file under a folder (path order).

    Raises:
        DataError: the path is missing or holds no ``.jsonl`` files; a file is unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl"))
    if not files:
        raise DataError(f"{path}: no .jsonl files found")
    return [check_file(f) for f in files]


def verdict(checks: list[FileCheck], allow_drops: bool = False) -> str | None:
    """The one-line error ``peftsum data validate`` ends with, or ``None`` when the data is clean.

    Args:
        checks: :func:`check_path`'s result.
        allow_drops: dropped rows are accepted (malformed lines and files with no valid row never are).
    """
    malformed = sum(len(c.malformed) for c in checks)
    dropped = sum(c.num_dropped for c in checks)
    empty = [str(c.file) for c in checks if c.kept == 0]
    problems = []
    if malformed:
        problems.append(f"{malformed} malformed line{'' if malformed == 1 else 's'} (the loaders stop at them)")
    if dropped and not allow_drops:
        problems.append(f"{dropped} dropped row{'' if dropped == 1 else 's'} (--allow-drops accepts them)")
    if empty:
        problems.append(f"no valid rows in {', '.join(empty)}")
    if not problems:
        return None
    files = f"{len(checks)} file{'' if len(checks) == 1 else 's'} checked"
    return f"{'; '.join(problems)} ({files})"
