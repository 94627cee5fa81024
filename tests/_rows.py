"""Small real-row folders shared by tests (bundled XL-Sum rows, peftsum's per-language layout)."""

from __future__ import annotations

import shutil
from pathlib import Path


def multilingual_folder(root: Path) -> Path:
    """English (5 training rows) + Russian (2) in the per-language layout, with their validation rows.

    Args:
        root: where to create ``data/``.

    Returns:
        The ``data/`` folder (``<language>/{train,validation}.jsonl``).
    """
    from peftsum.data.xlsum import sample_dir

    data = root / "data"
    for lang, n in (("english", 5), ("russian", 2)):
        (data / lang).mkdir(parents=True)
        rows = (sample_dir() / lang / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (data / lang / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        shutil.copy(sample_dir() / lang / "validation.jsonl", data / lang / "validation.jsonl")
    return data
