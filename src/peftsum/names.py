"""Names that become folder names (run names, labels, experiment names, languages) and the
check that every path peftsum writes stays inside its output folder.

A name from a config or the command line is used as *one* path component: an experiment
config shared by someone else must not be able to write outside ``--output-dir``
(``name: ../../escaped``) or create files the shell cannot type.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from peftsum.errors import ConfigError

MAX_NAME_CHARS = 200
"""Longest accepted name: ext4 and most file systems allow 255 bytes per component; the run id
adds a language and a seed to a label, so labels keep room for them."""


def check_name(key: str, value: object) -> str:
    """Check that ``value`` can be used as one folder-name component.

    Refused: non-strings, the empty string, ``.`` and ``..`` (and any name containing ``..``),
    path separators (``/``, and ``\\`` so that a config works the same on Windows), control
    characters (``unicodedata`` category ``Cc``, NUL included), leading or trailing
    whitespace, a leading ``-`` (read as an option by shell tools) and names over
    :data:`MAX_NAME_CHARS` characters.

    Args:
        key: the config key or flag the value came from (named in the error).
        value: the name.

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigError: one line naming the key, the value (``repr``) and what is wrong.
    """
    problem = name_problem(value)
    if problem:
        raise ConfigError(f"{key}: {value!r} cannot be used as a folder name ({problem})")
    return value  # type: ignore[return-value]


def name_problem(value: object) -> str | None:
    """What makes ``value`` unusable as a folder name (see :func:`check_name`), or ``None``."""
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__}"
    if not value:
        return "empty"
    if ".." in value or value == ".":
        return "'.' and '..' are not allowed"
    if "/" in value or "\\" in value or (os.sep in value) or (os.altsep and os.altsep in value):
        return "path separators are not allowed"
    bad = [c for c in value if unicodedata.category(c) == "Cc"]
    if bad:
        return f"control character {bad[0]!r}"
    if value != value.strip():
        return "leading or trailing whitespace"
    if value.startswith("-"):
        return "a leading '-'"
    if len(value) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    return None


def ensure_inside(root: str | Path, path: str | Path, what: str = "output") -> Path:
    """Check that ``path`` resolves inside ``root`` (symbolic links and ``..`` followed).

    Args:
        root: the output folder (need not exist yet).
        path: a path peftsum is about to write.
        what: what the path is, for the message.

    Returns:
        ``path`` as given (a :class:`~pathlib.Path`).

    Raises:
        ConfigError: ``path`` resolves outside ``root``.
    """
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise ConfigError(f"{what} {path} resolves to {path_r}, outside its output folder {root_r}; "
                          "check the names in the config")
    return Path(path)
