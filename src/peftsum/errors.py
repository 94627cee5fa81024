"""The one exception type the CLI turns into a one-line message (no traceback)."""

from __future__ import annotations


class PeftsumError(Exception):
    """A user-facing error: bad input, a missing file, a refused option.

    The CLI prints ``error: <message>`` and exits with status 2. The message must say
    what is wrong and where (file and line where there is one).
    """


class DataError(PeftsumError):
    """Bad data: malformed JSON (file and line named), no rows left, unknown language."""


class ConfigError(PeftsumError):
    """A bad config key or value, or a flag combination that cannot work."""
