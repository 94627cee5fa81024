"""The HTTP API of ``peftsum serve`` (FastAPI), in the request/response shape of LoRAX and TGI.

Routes: ``POST /generate``, ``POST /generate_stream`` (server-sent events), ``GET /info``,
``GET /health``, ``GET /metrics`` (Prometheus), ``POST /adapters``, ``DELETE /adapters/{name}``,
``GET /`` (a self-contained page). Every error is ``{"error": "<one line>", "error_type": ...}``
with 404 (unknown adapter), 409 (adapter conflict), 413 (article too long), 422 (bad input,
naming the field), 503 (queue full) or 500 (server error, counted in ``/metrics``).

This module assembles the app; the routes are in :mod:`peftsum.serving.routes`, the error shape in
:mod:`peftsum.serving.api_errors`.
"""


from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from peftsum.errors import ConfigError
from peftsum.serving.api_errors import ApiError, install_error_handlers
from peftsum.serving.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_WINDOW_MS, MicroBatcher
from peftsum.serving.metrics import ServerMetrics
from peftsum.serving.registry import AdapterRegistry
from peftsum.serving.routes import MAX_BEAMS, MAX_NEW_TOKENS, router

__all__ = ["ApiError", "DEFAULT_MAX_INPUT_CHARS", "MAX_BEAMS", "MAX_NEW_TOKENS", "create_app", "load_registry",
           "serve"]

DEFAULT_MAX_INPUT_CHARS = 50_000
"""Longest article accepted, characters (XL-Sum articles: 99th percentile ~ 20,000 characters;
the model keeps only its first ``max_source_length`` tokens anyway)."""


def create_app(registry: AdapterRegistry, *, window_ms: float = DEFAULT_WINDOW_MS, max_batch: int = DEFAULT_MAX_BATCH,
               max_queue: int = DEFAULT_MAX_QUEUE, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
               poll_s: float = 0.05):
    """The FastAPI app serving ``registry``'s base and adapters.

    The routes are :data:`peftsum.serving.routes.router`; they read the parts set here on
    ``app.state``. Errors take the one-line shape of :mod:`peftsum.serving.api_errors`.

    Args:
        registry: the loaded :class:`AdapterRegistry`.
        window_ms, max_batch, max_queue: micro-batcher settings (:class:`MicroBatcher`).
        max_input_chars: longest article accepted (413 beyond).
        poll_s: how often a waiting request checks whether its client went away, seconds.

    Returns:
        The app; the batcher's worker starts and stops with the app's lifespan.
    """
    metrics = ServerMetrics()
    batcher = MicroBatcher(registry, metrics, window_ms, max_batch, max_queue)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="peftsum serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.registry, app.state.batcher, app.state.metrics = registry, batcher, metrics
    app.state.max_input_chars, app.state.poll_s = max_input_chars, poll_s
    app.state.page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
    install_error_handlers(app, metrics)
    app.include_router(router)
    return app


def load_registry(model: str, adapters: list[str] | None = None, adapters_from: list[str] | None = None,
                  max_resident_mb: float = 2048.0, include_full: bool = False, device: str | None = None,
                  log=print, bf16: bool | None = None) -> AdapterRegistry:
    """Load the base and every adapter named on the command line.

    Args:
        model: base model (hub id or folder; ``tiny`` = the offline tiny model).
        adapters: ``NAME=DIR`` items (DIR: run folder, adapter folder or full checkpoint).
        adapters_from: experiment folders whose PEFT runs are all served, named by run id.
        max_resident_mb: resident cap (:class:`AdapterRegistry`).
        include_full: with ``adapters_from``, also serve full fine-tuning runs.
        device: where to decode (``None`` = auto: ``$PEFTSUM_DEVICE``, else CUDA when available, else CPU).
        log: progress lines.

    Returns:
        The loaded registry.

    Raises:
        ConfigError: a malformed ``NAME=DIR`` or a bad folder.
        AdapterConflict: an adapter trained on another base, or a name given twice.
        PeftsumError: the base or an adapter cannot be loaded.
    """
    items: list[tuple[str, str]] = []
    for item in adapters or []:
        name, sep, path = str(item).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--adapter {item!r}: expected NAME=DIR")
        items.append((name.strip(), path.strip()))
    from peftsum.serving.adapter_files import experiment_adapters

    for folder in adapters_from or []:
        items.extend((name, str(path)) for name, path in experiment_adapters(folder, include_full))
    from peftsum.modeling.tiny import resolve_model_name

    model = resolve_model_name(model)
    registry = AdapterRegistry(model, max_resident_mb, device, bf16=bf16)
    for name, path in items:
        entry = registry.add(name, path)
        log(f"adapter {name}: {entry.method} ({entry.kind}), {entry.size_mb:.2f} MB, from {entry.path}")
    return registry


def bind_socket(host: str = "127.0.0.1", port: int = 8080):
    """A TCP socket bound to ``(host, port)`` for :func:`serve` (port 0: a free port, read it with ``getsockname``).

    Binding before the models load makes a taken port fail at once, with one line.

    Raises:
        ConfigError: the address cannot be bound (in use, not this machine's, no permission).
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock


def serve(registry: AdapterRegistry, host: str = "127.0.0.1", port: int = 8080, sock=None, **app_kwargs) -> None:
    """Run the server until interrupted (uvicorn).

    Args:
        registry: the loaded adapters.
        host, port: where to listen (ignored when ``sock`` is given).
        sock: an already bound socket (tests bind port 0 and pass it).
        app_kwargs: :func:`create_app` settings.
    """
    import uvicorn

    config = uvicorn.Config(create_app(registry, **app_kwargs), host=host, port=port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
