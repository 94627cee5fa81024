"""Reach the Hugging Face hub once, fast: offline, a hub id fails in seconds, not minutes.

With no network, ``huggingface_hub`` retries every request five times with back-off
(1+2+4+8+8 s), and ``transformers``/``datasets`` make several requests per load: measured
24 s for ``--data hub`` and 50 s for a hub model id before the error (2-core test machine,
DNS failing at once). peftsum therefore checks once per process whether the hub endpoint
answers a TCP connection (:func:`hub_reachable`, at most :data:`REACH_TIMEOUT_S`), and when it
does not, switches the libraries to their offline mode (cache only, no requests, no retries)
for the rest of the process: a cached model or data set still loads, anything else fails at
once with peftsum's one-line hint. ``HF_HUB_OFFLINE=1`` skips the check.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

REACH_TIMEOUT_S = 3.0
"""Longest wait for the hub endpoint's TCP handshake (DNS included), seconds."""

_TRUE = {"1", "ON", "YES", "TRUE"}
_state: dict[str, bool] = {}


def offline_by_env() -> bool:
    """True when ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value."""
    return any(os.environ.get(k, "").upper() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def _endpoint() -> tuple[str, int]:
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        from huggingface_hub import constants

        url = constants.ENDPOINT
    except Exception:  # pragma: no cover - huggingface_hub is a dependency
        pass
    parsed = urlparse(url)
    return parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)


def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the hub endpoint accepts a TCP connection; checked once per process.

    Uses ``HF_ENDPOINT`` (via ``huggingface_hub.constants.ENDPOINT``) and the process's proxy
    settings are *not* consulted: with ``HTTPS_PROXY`` set, the check is skipped and the hub
    counted as reachable (the proxy decides).

    Args:
        timeout: seconds to wait for DNS and the handshake together (a thread bounds DNS,
            which ``socket`` timeouts do not cover).

    Returns:
        ``False`` when offline by environment or the endpoint does not answer in time.
    """
    if "reachable" in _state:
        return _state["reachable"]
    if offline_by_env():
        _state["reachable"] = False
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        _state["reachable"] = True
        return True
    host, port = _endpoint()
    result = {"ok": False}

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    _state["reachable"] = result["ok"]
    return result["ok"]


def go_offline() -> None:
    """Switch ``huggingface_hub``, ``transformers`` and ``datasets`` to offline mode for this process.

    Sets ``HF_HUB_OFFLINE=1`` (for child processes) and the module constants the libraries
    read at call time (``huggingface_hub.constants.HF_HUB_OFFLINE``, ``datasets.config.HF_HUB_OFFLINE``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover
        pass
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True
    except Exception:  # pragma: no cover - datasets is a dependency
        pass


def prepare_hub_access() -> bool:
    """Call before a load that may reach the hub: offline mode when the hub cannot be reached.

    Returns:
        Whether the hub is reachable (``False``: only the local cache will be used).
    """
    reachable = hub_reachable()
    if not reachable:
        go_offline()
    return reachable


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or ``name`` that is not an existing path and not written as one.

    Written as a path: starts with ``.``, ``/`` or ``~``, ends with a separator, or has more
    than one ``/``.
    """
    name = str(name)
    if not name or Path(name).expanduser().exists():
        return False
    if name.startswith((".", "/", "~")) or name.endswith(("/", os.sep)) or name.count("/") > 1:
        return False
    return True


def resolve_model_source(name_or_path: str) -> str:
    """A model given as an existing local folder becomes its absolute, resolved path; a hub id is kept.

    Stored in the run files (``adapter_config.json``'s ``base_model_name_or_path``, the model card,
    ``metrics.json``), a relative path would point elsewhere as soon as the run is loaded from
    another working directory (and then read as a hub id).

    Args:
        name_or_path: what the user gave (``tiny/``, ``~/models/mt5``, ``google/mt5-small``).

    Returns:
        ``str(Path(name_or_path).expanduser().resolve())`` for an existing path, else ``name_or_path``.
    """
    path = Path(str(name_or_path)).expanduser()
    return str(path.resolve()) if path.exists() else name_or_path
