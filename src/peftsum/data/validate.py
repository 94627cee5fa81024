"""``peftsum data validate``: check XL-Sum JSONL files without loading a model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from peftsum.data.xlsum import read_jsonl, validate_rows
from peftsum.errors import DataError


def validate_path(path: str | Path) -> list[tuple[Path, int, Counter]]:
    """Validate a ``.jsonl`` file or every ``.jsonl`` file under a folder.

    Returns:
        ``[(file, kept_rows, dropped_by_reason), ...]`` in path order.

    Raises:
        DataError: path missing, no ``.jsonl`` files, malformed JSON (file:line), or a file
            where no valid row is left.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl"))
    if not files:
        raise DataError(f"{path}: no .jsonl files found")
    report = []
    for file in files:
        kept, dropped = validate_rows(read_jsonl(file), str(file))
        if not kept:
            reasons = ", ".join(f"{n} {r}" for r, n in dropped.items())
            raise DataError(f"{file}: no valid rows left after validation ({reasons})")
        report.append((file, len(kept), dropped))
    return report
