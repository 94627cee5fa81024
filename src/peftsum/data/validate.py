"""``peftsum data validate``: check XL-Sum JSONL files without loading a model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from peftsum.data.xlsum import read_jsonl, validate_rows
from peftsum.errors import DataError
from peftsum.io import line_error_text, scan_jsonl


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
        bad = malformed_lines(file)
        if bad:
            shown = ", ".join(str(n) for n, _ in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise DataError(f"{file}: {len(bad)} malformed line{'s' if len(bad) > 1 else ''} (lines {shown}); "
                            f"line {bad[0][0]}: {bad[0][1]}")
        kept, dropped = validate_rows(read_jsonl(file), str(file))
        if not kept:
            reasons = ", ".join(f"{n} {r}" for r, n in dropped.items())
            raise DataError(f"{file}: no valid rows left after validation ({reasons})")
        report.append((file, len(kept), dropped))
    return report


def malformed_lines(path: Path) -> list[tuple[int, str]]:
    """Every line of a JSON-lines file that is not a JSON object, as ``(line number, problem)``.

    Unlike the loaders (which stop at the first bad line), this reads the whole file, so that
    ``peftsum data validate`` can report all of them at once. Blank lines are fine. Lines that
    are not text (not UTF-8, a NUL byte, a byte-order mark after the start, too long) are
    listed like malformed JSON.

    Raises:
        DataError: the file is unreadable.
    """
    out = []
    for lineno, obj, error in scan_jsonl(path):
        if error is not None:
            out.append((lineno, line_error_text(error)))
        elif not isinstance(obj, dict):
            out.append((lineno, f"expected a JSON object, found {type(obj).__name__}"))
    return out
