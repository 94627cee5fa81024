"""The HTTP API of ``peftsum serve`` (FastAPI), in the request/response shape of LoRAX and TGI.

Routes: ``POST /generate``, ``POST /generate_stream`` (server-sent events), ``GET /info``,
``GET /health``, ``GET /metrics`` (Prometheus), ``POST /adapters``, ``DELETE /adapters/{name}``,
``GET /`` (a self-contained page). Every error is ``{"error": "<one line>", "error_type": ...}``
with 404 (unknown adapter), 409 (adapter conflict), 413 (article too long), 422 (bad input,
naming the field), 503 (queue full) or 500 (server error, counted in ``/metrics``).
"""


import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path

from peftsum.errors import ConfigError, PeftsumError
from peftsum.generation.decode import GenerationSettings
from peftsum.serving.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_WINDOW_MS, Job, MicroBatcher, \
    QueueFull
from peftsum.serving.metrics import ServerMetrics
from peftsum.serving.registry import BASE, AdapterConflict, AdapterRegistry, UnknownAdapter

MAX_BEAMS = 16
"""Largest ``num_beams`` accepted (decoding memory grows with it)."""

MAX_NEW_TOKENS = 1024
"""Largest ``max_new_tokens`` accepted (XL-Sum summaries stop at 84)."""

DEFAULT_MAX_INPUT_CHARS = 50_000
"""Longest article accepted, characters (XL-Sum articles: 99th percentile ~ 20,000 characters;
the model keeps only its first ``max_source_length`` tokens anyway)."""

_D = GenerationSettings()


class ApiError(Exception):
    """An error response: HTTP ``status``, a one-line ``message`` and an ``error_type``."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def _status_of(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, UnknownAdapter):
        return 404, "not_found"
    if isinstance(exc, AdapterConflict):
        return 409, "conflict"
    if isinstance(exc, QueueFull):
        return 503, "overloaded"
    if isinstance(exc, ConfigError):
        return 422, "validation"
    return 500, "server_error"


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def _models():
    """The request bodies (pydantic, strict types, unknown fields refused)."""
    from pydantic import BaseModel, ConfigDict, Field

    class Parameters(BaseModel):
        """``parameters`` of ``POST /generate``; defaults are XL-Sum's decoding settings (``peftsum evaluate``)."""

        model_config = ConfigDict(strict=True, extra="forbid")
        adapter_id: str | None = Field(None, description="adapter name from /info; absent or __base__ = the base")
        num_beams: int = Field(_D.num_beams, ge=1, le=MAX_BEAMS)
        max_new_tokens: int = Field(_D.max_new_tokens, ge=1, le=MAX_NEW_TOKENS)
        min_new_tokens: int = Field(_D.min_new_tokens, ge=0, le=MAX_NEW_TOKENS)
        length_penalty: float = Field(_D.length_penalty, ge=-10.0, le=10.0, allow_inf_nan=False)
        no_repeat_ngram_size: int = Field(_D.no_repeat_ngram_size, ge=0, le=32)

    class GenerateRequest(BaseModel):
        """``POST /generate`` and ``/generate_stream``: the article and its decoding parameters."""

        model_config = ConfigDict(strict=True, extra="forbid")
        inputs: str
        parameters: Parameters = Field(default_factory=Parameters)

    class AdapterRequest(BaseModel):
        """``POST /adapters``: a name and a run, adapter or checkpoint folder on the server's disk."""

        model_config = ConfigDict(strict=True, extra="forbid")
        name: str
        path: str

    return GenerateRequest, AdapterRequest


def _validation_message(errors: list[dict]) -> str:
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return f"body: invalid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
    where = ".".join(loc) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {err.get('msg', 'invalid')}{more}"


class _ErrorsMiddleware:
    """Pure ASGI middleware: counts error responses in ``/metrics`` and turns an unhandled exception
    into a 500 with a one-line message, so the process never dies of a request."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"started": False, "status": None}

        async def _send(message):
            if message["type"] == "http.response.start":
                state["started"], state["status"] = True, message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            if not state["started"]:
                body = json.dumps({"error": f"{type(exc).__name__}: {_line(exc)}", "error_type": "server_error"})
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body.encode()})
                state["status"] = 500
        if state["status"] is not None and state["status"] >= 400:
            self.metrics.errors.labels(code=str(state["status"])).inc()


def create_app(registry: AdapterRegistry, *, window_ms: float = DEFAULT_WINDOW_MS, max_batch: int = DEFAULT_MAX_BATCH,
               max_queue: int = DEFAULT_MAX_QUEUE, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
               poll_s: float = 0.05):
    """The FastAPI app serving ``registry``'s base and adapters.

    Args:
        registry: the loaded :class:`AdapterRegistry`.
        window_ms, max_batch, max_queue: micro-batcher settings (:class:`MicroBatcher`).
        max_input_chars: longest article accepted (413 beyond).
        poll_s: how often a waiting request checks whether its client went away, seconds.

    Returns:
        The app; the batcher's worker starts and stops with the app's lifespan.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    GenerateRequest, AdapterRequest = _models()
    metrics = ServerMetrics()
    batcher = MicroBatcher(registry, metrics, window_ms, max_batch, max_queue)
    page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="peftsum serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.registry, app.state.batcher, app.state.metrics = registry, batcher, metrics
    app.add_middleware(_ErrorsMiddleware, metrics=metrics)

    def _error(status: int, message: str, error_type: str) -> JSONResponse:
        return JSONResponse({"error": message, "error_type": error_type}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return _error(exc.status, exc.message, exc.error_type)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return _error(422, _validation_message(list(exc.errors())), "validation")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "http")

    def _job(req, stream: bool) -> Job:
        p = req.parameters
        adapter = p.adapter_id or BASE
        if adapter != BASE:
            try:
                registry.get(adapter)
            except UnknownAdapter as exc:
                raise ApiError(404, str(exc), "not_found") from None
        if not req.inputs.strip():
            raise ApiError(422, "inputs: the article is empty", "validation")
        if len(req.inputs) > max_input_chars:
            raise ApiError(413, f"inputs: {len(req.inputs)} characters, more than the limit of {max_input_chars} "
                                "(peftsum serve --max-input-chars)", "too_large")
        if p.min_new_tokens > p.max_new_tokens:
            raise ApiError(422, "parameters.min_new_tokens: larger than max_new_tokens", "validation")
        settings = GenerationSettings(num_beams=p.num_beams, length_penalty=p.length_penalty,
                                      no_repeat_ngram_size=p.no_repeat_ngram_size,
                                      max_new_tokens=p.max_new_tokens, min_new_tokens=p.min_new_tokens)
        loop = asyncio.get_running_loop()
        job = Job(req.inputs, adapter, settings, loop, loop.create_future(),
                  tokens=asyncio.Queue() if stream else None)
        try:
            batcher.submit(job)
        except QueueFull as exc:
            raise ApiError(503, str(exc), "overloaded") from None
        return job

    def _details(job: Job) -> dict:
        end = job.finished or time.perf_counter()
        return {"adapter_id": job.adapter, "input_tokens": job.input_tokens,
                "generated_tokens": job.generated_tokens, "batch_size": job.batch_size,
                "queue_ms": round(((job.started or end) - job.arrived) * 1000, 2),
                "inference_ms": round((end - (job.started or end)) * 1000, 2),
                "total_ms": round((end - job.arrived) * 1000, 2), "parameters": asdict(job.settings)}

    def _record(job: Job, status: int) -> None:
        metrics.requests.labels(adapter=job.adapter, status=str(status)).inc()
        if status == 200:
            metrics.latency.labels(adapter=job.adapter).observe(time.perf_counter() - job.arrived)
            metrics.queue_latency.labels(adapter=job.adapter).observe((job.started or job.arrived) - job.arrived)
            metrics.input_tokens.labels(adapter=job.adapter).inc(job.input_tokens)
            metrics.generated_tokens.labels(adapter=job.adapter).inc(job.generated_tokens)

    def _raise_for(job: Job, exc: BaseException):
        status, kind = _status_of(exc)
        _record(job, status)
        message = _line(exc) if isinstance(exc, PeftsumError) else f"{type(exc).__name__}: {_line(exc)}"
        raise ApiError(status, message, kind) from None

    async def _cancel(job: Job) -> None:
        batcher.cancel(job)
        metrics.cancelled.inc()
        _record(job, 499)

    @app.post("/generate")
    async def generate(req: GenerateRequest, request: Request):
        """Summarize one article with one adapter: ``{"generated_text", "adapter_id", "details"}``."""
        job = _job(req, stream=False)
        while True:
            done, _ = await asyncio.wait({job.future}, timeout=poll_s)
            if done:
                break
            if await request.is_disconnected():
                await _cancel(job)
                return Response(status_code=499)
        exc = job.future.exception()
        if exc is not None:
            _raise_for(job, exc)
        _record(job, 200)
        return {"generated_text": job.future.result(), "adapter_id": job.adapter, "details": _details(job)}

    @app.post("/generate_stream")
    async def generate_stream(req: GenerateRequest):
        """Server-sent events: ``{"token": {"id", "text"}}`` per token (greedy: as decoded; beam search:
        after the beams finish), then ``{"token": null, "generated_text", "details"}``."""
        job = _job(req, stream=True)

        async def events():
            finished = False
            try:
                while True:
                    getter = asyncio.ensure_future(job.tokens.get())
                    done, _ = await asyncio.wait({getter, job.future}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        token_id, text = getter.result()
                        yield f"data: {json.dumps({'token': {'id': token_id, 'text': text}}, ensure_ascii=False)}\n\n"
                        continue
                    getter.cancel()
                    while not job.tokens.empty():
                        token_id, text = job.tokens.get_nowait()
                        yield f"data: {json.dumps({'token': {'id': token_id, 'text': text}}, ensure_ascii=False)}\n\n"
                    exc = job.future.exception()
                    finished = True
                    if exc is not None:
                        status, kind = _status_of(exc)
                        _record(job, status)
                        yield f"data: {json.dumps({'error': _line(exc), 'error_type': kind})}\n\n"
                    else:
                        _record(job, 200)
                        final = {"token": None, "generated_text": job.future.result(), "details": _details(job)}
                        yield f"data: {json.dumps(final, ensure_ascii=False)}\n\n"
                    return
            finally:
                if not finished:  # the client went away (the generator was cancelled)
                    await _cancel(job)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/info")
    async def info():
        """The base, every adapter (method, language, rank, size in MB, trainable parameters), the limits."""
        out = await asyncio.get_running_loop().run_in_executor(None, registry.info)
        out.update({"default_parameters": asdict(_D), "max_input_chars": max_input_chars, "max_beams": MAX_BEAMS,
                    "max_new_tokens": MAX_NEW_TOKENS, "window_ms": batcher.window_s * 1000,
                    "max_batch": batcher.max_batch, "max_queue": batcher.max_queue})
        return out

    @app.get("/health")
    async def health():
        """``{"status": "ok", "queue_depth", "adapters"}`` while the server is up."""
        return {"status": "ok", "queue_depth": batcher.depth(), "adapters": len(registry.entries)}

    @app.get("/metrics")
    async def prometheus():
        """Prometheus text format (see :class:`ServerMetrics`)."""
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.post("/adapters", status_code=201)
    async def add_adapter(req: AdapterRequest):
        """Load an adapter (or run or full checkpoint) without a restart; 409 if trained on another base."""
        try:
            entry = await asyncio.get_running_loop().run_in_executor(None, registry.add, req.name, req.path)
        except PeftsumError as exc:
            status, kind = _status_of(exc)
            raise ApiError(status, _line(exc), kind) from None
        metrics.adapter_loads.labels(adapter=entry.name).inc()
        metrics.resident_mb.set(registry.resident_mb())
        return entry.info()

    @app.delete("/adapters/{name}")
    async def delete_adapter(name: str):
        """Unload an adapter; requests for it still waiting fail with 404."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, registry.remove, name)
        except UnknownAdapter as exc:
            raise ApiError(404, str(exc), "not_found") from None
        metrics.resident_mb.set(registry.resident_mb())
        return {"removed": name}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        """A self-contained page: paste an article, pick an adapter, read the summary and its latency."""
        return HTMLResponse(page)

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
    from peftsum.serving.registry import experiment_adapters

    for folder in adapters_from or []:
        items.extend((name, str(path)) for name, path in experiment_adapters(folder, include_full))
    from peftsum.modeling.tiny import resolve_model_name

    model = resolve_model_name(model)
    registry = AdapterRegistry(model, max_resident_mb, device, bf16=bf16)
    for name, path in items:
        entry = registry.add(name, path)
        log(f"adapter {name}: {entry.method} ({entry.kind}), {entry.size_mb:.2f} MB, from {entry.path}")
    return registry


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
