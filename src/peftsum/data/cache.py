"""Where peftsum keeps XL-Sum as Arrow files, how big that is, and emptying it (``peftsum data cache``).

The cache holds two kinds of files, both written by :mod:`peftsum.data.arrow`:

* ``rows-<key>.arrow`` (+ ``rows-<key>.json``: source, row and drop counts): the validated rows of
  one data file or hub split, keyed by the file's path, size and modification time (or the hub
  dataset's fingerprint);
* ``features-<key>.arrow``: the tokenized rows, keyed by the rows' key, the number of rows, the
  tokenizer, the source/target lengths and the source prefix.

Deleting any of them is always safe: the next run rebuilds what it needs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from peftsum.errors import PeftsumError

CACHE_ENV = "PEFTSUM_DATA_CACHE"
"""Environment variable that moves the data cache (default ``$PEFTSUM_HOME/data-cache``)."""


def data_cache_dir() -> Path:
    """The data cache folder: ``$PEFTSUM_DATA_CACHE``, else ``$PEFTSUM_HOME/data-cache``.

    ``$PEFTSUM_HOME`` defaults to ``~/.cache/peftsum`` (as for the tiny model,
    :func:`peftsum.modeling.tiny.default_tiny_dir`). The folder is not created here.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = Path(os.environ.get("PEFTSUM_HOME", Path.home() / ".cache" / "peftsum")).expanduser()
    return home / "data-cache"


@dataclass
class CacheUsage:
    """What the data cache holds.

    Attributes:
        path: the cache folder.
        files: number of files.
        bytes: their total size in bytes.
        row_files: number of validated-rows tables (``rows-*.arrow``).
        feature_files: number of tokenized tables (``features-*.arrow``).
    """

    path: Path
    files: int
    bytes: int
    row_files: int
    feature_files: int


def cache_usage(path: Path | None = None) -> CacheUsage:
    """Count the files and bytes in the data cache (a missing folder counts as empty).

    Args:
        path: the folder; default :func:`data_cache_dir`.
    """
    path = Path(path) if path else data_cache_dir()
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return CacheUsage(path=path, files=len(files), bytes=sum(p.stat().st_size for p in files),
                      row_files=sum(1 for p in files if p.name.startswith("rows-") and p.suffix == ".arrow"),
                      feature_files=sum(1 for p in files if p.name.startswith("features-")))


def clear_cache(path: Path | None = None) -> CacheUsage:
    """Delete everything in the data cache folder (the folder itself stays).

    Args:
        path: the folder; default :func:`data_cache_dir`.

    Returns:
        What was there before (:func:`cache_usage`).

    Raises:
        PeftsumError: the path exists but is not a folder, or a file cannot be removed.
    """
    path = Path(path) if path else data_cache_dir()
    if path.exists() and not path.is_dir():
        raise PeftsumError(f"{path}: the data cache path is a file, not a folder (see ${CACHE_ENV})")
    before = cache_usage(path)
    if not path.is_dir():
        return before
    for child in path.iterdir():
        try:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        except OSError as exc:
            raise PeftsumError(f"{child}: cannot remove ({exc.strerror})") from None
    return before


def human_bytes(n: int) -> str:
    """``n`` bytes as a short text with binary units (``"512 B"``, ``"1.5 GiB"``)."""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
