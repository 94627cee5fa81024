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
        _state["reachable"], _state["by_env"] = False, True
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

    Sets ``HF_HUB_OFFLINE=1`` (read by libraries imported later and by child processes) and,
    for libraries already imported, the module constants they read at call time
    (``huggingface_hub.constants.HF_HUB_OFFLINE``, ``datasets.config.HF_HUB_OFFLINE``).
    """
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"  # read by the libraries when they are imported later
    # already imported: patch the constants they read at call time (importing them here would
    # cost seconds: datasets pulls in pyarrow and pandas)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True
        config.HF_DATASETS_OFFLINE = True


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


def model_in_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a ``config.json`` or tokenizer file of ``repo_id`` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception:  # pragma: no cover - huggingface_hub is a dependency
        return True
    for name in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, name), str):
                return True
        except Exception:  # an id the hub would reject: the library's error says so
            return True
    return False


def dataset_in_cache(repo_id: str) -> bool:
    """Whether ``datasets``' cache or the hub cache holds anything of the dataset ``repo_id`` (no network).

    Folder names follow ``datasets`` (``<org>___<name>`` under ``HF_DATASETS_CACHE``) and
    ``huggingface_hub`` (``datasets--<org>--<name>`` under ``HF_HUB_CACHE``).
    """
    home = Path(os.path.expanduser(os.environ.get("HF_HOME")
                                   or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")))
    datasets_cache = Path(os.path.expanduser(os.environ.get("HF_DATASETS_CACHE", str(home / "datasets"))))
    hub_cache = Path(os.path.expanduser(os.environ.get("HF_HUB_CACHE")
                                        or os.environ.get("HUGGINGFACE_HUB_CACHE") or str(home / "hub")))
    return ((datasets_cache / repo_id.replace("/", "___")).exists()
            or (hub_cache / ("datasets--" + repo_id.replace("/", "--"))).exists())


def unreachable_hint() -> str:
    """``the hub (huggingface.co) cannot be reached`` or ``HF_HUB_OFFLINE is set``, for messages."""
    if _state.get("by_env") or ("reachable" not in _state and offline_by_env()):
        return "HF_HUB_OFFLINE is set and it is not in the local cache"
    return f"{_endpoint()[0]} cannot be reached and it is not in the local cache"


def require_hub_dataset(repo_id: str, what: str | None = None) -> None:
    """Fail at once when the dataset ``repo_id`` can be neither downloaded nor read from the cache.

    Args:
        repo_id: the hub dataset (``csebuetnlp/xlsum``).
        what: what was asked for, for the message (default ``repo_id``).

    Raises:
        DataError: the hub cannot be reached (or ``HF_HUB_OFFLINE`` is set) and nothing of the
            dataset is cached; one line with the "Offline?" hint.
    """
    from peftsum.errors import DataError

    if not prepare_hub_access() and not dataset_in_cache(repo_id):
        raise DataError(f"could not load {what or repo_id} from the hub: {unreachable_hint()}. "
                        "Offline? Use --data sample (bundled real rows) or --data PATH to local XL-Sum files")
