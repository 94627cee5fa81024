"""Where peftsum keeps XL-Sum as Arrow files, how big that is, and emptying it (``peftsum data cache``).

The cache holds two kinds of files, both written by :mod:`peftsum.data.arrow`:

* ``rows-<key>.arrow`` (+ ``rows-<key>.json``: source, row and drop counts): the validated rows of
  one data file or hub split, keyed by the file's path, size and modification time (or the hub
  dataset's fingerprint);
* ``features-<key>.arrow``: the tokenized rows, keyed by the rows' key, the number of rows, the
  tokenizer, the source/target lengths and the source prefix.

Deleting any of them is always safe: the next run rebuilds what it needs. ``--clear`` deletes only
files of these names (:data:`CACHE_PATTERNS`, with the temporary files of an interrupted write), never
anything else a user keeps in the folder ``$PEFTSUM_DATA_CACHE`` points to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from peftsum.errors import PeftsumError

CACHE_PATTERNS = ("rows-*.arrow", "rows-*.json", "features-*.arrow", ".rows-*.tmp", "tmp*")
"""Names of the files peftsum writes into the data cache: its tables, their sidecars, its own temporary
files (``.rows-*.tmp``) and those of ``datasets``' ``map`` (``tmp*``, written beside ``features-*``)."""

CACHE_ENV = "PEFTSUM_DATA_CACHE"
"""Environment variable that moves the data cache (default ``$PEFTSUM_HOME/data-cache``)."""


def data_cache_dir() -> Path:
    """The data cache folder: ``$PEFTSUM_DATA_CACHE``, else ``$PEFTSUM_HOME/data-cache``.

    ``$PEFTSUM_HOME`` defaults to ``~/.cache/peftsum`` (as for the tiny model,
    :func:`peftsum.modeling.tiny.default_tiny_dir`). The folder is not created here.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from peftsum.runtime import peftsum_home

    return peftsum_home() / "data-cache"


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
    return _usage(path, [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [])


def _usage(path: Path, files: list[Path]) -> CacheUsage:
    """:class:`CacheUsage` of ``files`` in the cache folder ``path``."""
    return CacheUsage(path=path, files=len(files), bytes=sum(p.stat().st_size for p in files),
                      row_files=sum(1 for p in files if p.name.startswith("rows-") and p.suffix == ".arrow"),
                      feature_files=sum(1 for p in files if p.name.startswith("features-")))


def cache_files(path: Path) -> list[Path]:
    """The files in ``path`` (not below it) that peftsum's data cache writes (:data:`CACHE_PATTERNS`)."""
    if not Path(path).is_dir():
        return []
    found = {f for pattern in CACHE_PATTERNS for f in Path(path).glob(pattern) if f.is_file() and not f.is_symlink()}
    return sorted(found)


def clear_cache(path: Path | None = None) -> CacheUsage:
    """Delete the data cache's own files (:func:`cache_files`); the folder and anything else in it stay.

    Args:
        path: the folder; default :func:`data_cache_dir`.

    Returns:
        What was removed: ``files`` and ``bytes`` count the deleted files only.

    Raises:
        PeftsumError: the path exists but is not a folder, or a file cannot be removed.
    """
    path = Path(path) if path else data_cache_dir()
    if path.exists() and not path.is_dir():
        raise PeftsumError(f"{path}: the data cache path is a file, not a folder (see ${CACHE_ENV})")
    files = cache_files(path)
    removed = _usage(path, files)
    for child in files:
        try:
            child.unlink()
        except OSError as exc:
            raise PeftsumError(f"{child}: cannot remove ({exc.strerror})") from None
    return removed


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
