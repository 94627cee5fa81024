"""``peftsum data validate``: check XL-Sum JSONL files without loading a model (one streaming pass per file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from peftsum.data.xlsum import drop_reason
from peftsum.errors import DataError
from peftsum.io import scan_jsonl


def validate_path(path: str | Path) -> list[tuple[Path, int, Counter]]:
    """Validate a ``.jsonl`` file or every ``.jsonl`` file under a folder.

    Returns:
        ``[(file, kept_rows, dropped_by_reason), ...]`` in path order.

    Raises:
        DataError: path missing, no ``.jsonl`` files, malformed lines (the file, how many, the
            first ten line numbers and the first problem), or a file where no valid row is left.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl"))
    if not files:
        raise DataError(f"{path}: no .jsonl files found")
    report = []
    for file in files:
        bad, kept, dropped = _scan_file(file)
        if bad:
            shown = ", ".join(str(n) for n, _ in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise DataError(f"{file}: {len(bad)} malformed line{'s' if len(bad) > 1 else ''} (lines {shown}); "
                            f"line {bad[0][0]}: {bad[0][1]}")
        if not kept and not dropped:
            raise DataError(f"{file}: file is empty (expected one JSON object per line)")
        if not kept:
            reasons = ", ".join(f"{n} {r}" for r, n in dropped.items())
            raise DataError(f"{file}: no valid rows left after validation ({reasons})")
        report.append((file, kept, dropped))
    return report


def _scan_file(path: Path) -> tuple[list[tuple[int, str]], int, Counter]:
    """One streaming pass over a JSON-lines file (memory does not grow with its size).

    Returns:
        ``(malformed, kept, dropped)``: :func:`malformed_lines`' list, the number of valid rows
        and the dropped rows by reason (:func:`peftsum.data.xlsum.drop_reason`).
    """
    bad: list[tuple[int, str]] = []
    kept, dropped = 0, Counter()
    for lineno, obj, error in scan_jsonl(path):
        problem = _line_problem(obj, error)
        if problem:
            bad.append((lineno, problem))
            continue
        reason = drop_reason(obj)
        if reason:
            dropped[reason] += 1
        else:
            kept += 1
    return bad, kept, dropped


def _line_problem(obj, error) -> str | None:
    if error is not None:
        return f"invalid JSON at column {error.colno}: {error.msg}"
    if not isinstance(obj, dict):
        return f"expected a JSON object, found {type(obj).__name__}"
    return None


def malformed_lines(path: Path) -> list[tuple[int, str]]:
    """Every line of a JSON-lines file that is not a JSON object, as ``(line number, problem)``.

    Unlike the loaders (which stop at the first bad line), this reads the whole file, so that
    ``peftsum data validate`` can report all of them at once. Blank lines are fine.

    Raises:
        DataError: the file is unreadable or not UTF-8.
    """
    return _scan_file(path)[0]
