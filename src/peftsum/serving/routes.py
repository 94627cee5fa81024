"""The routes of ``peftsum serve`` (one :class:`fastapi.APIRouter`) and their request bodies.

Every handler reads the server's parts from ``request.app.state``: ``registry``
(:class:`~peftsum.serving.registry.AdapterRegistry`), ``batcher``
(:class:`~peftsum.serving.batching.MicroBatcher`), ``metrics``
(:class:`~peftsum.serving.metrics.ServerMetrics`), ``max_input_chars``, ``poll_s`` and ``page``
(set by :func:`peftsum.serving.app.create_app`).
"""

import asyncio
import json
import time
from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from peftsum.errors import PeftsumError
from peftsum.generation.decode import GenerationSettings
from peftsum.serving.api_errors import ApiError, one_line, status_of
from peftsum.serving.batching import Job, QueueFull
from peftsum.serving.registry import BASE, UnknownAdapter

MAX_BEAMS = 16
"""Largest ``num_beams`` accepted (decoding memory grows with it)."""

MAX_NEW_TOKENS = 1024
"""Largest ``max_new_tokens`` accepted (XL-Sum summaries stop at 84)."""

_D = GenerationSettings()


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


router = APIRouter()


# --------------------------------------------------------------------------- jobs
def _settings(req: GenerateRequest, state) -> tuple[str, GenerationSettings]:
    """``(adapter, decoding settings)`` of a request; :class:`ApiError` (404/413/422) when it is refused."""
    p = req.parameters
    adapter = p.adapter_id or BASE
    if adapter != BASE:
        try:
            state.registry.get(adapter)
        except UnknownAdapter as exc:
            raise ApiError(404, str(exc), "not_found") from None
    if not req.inputs.strip():
        raise ApiError(422, "inputs: the article is empty", "validation")
    if len(req.inputs) > state.max_input_chars:
        raise ApiError(413, f"inputs: {len(req.inputs)} characters, more than the limit of {state.max_input_chars} "
                            "(peftsum serve --max-input-chars)", "too_large")
    if p.min_new_tokens > p.max_new_tokens:
        raise ApiError(422, "parameters.min_new_tokens: larger than max_new_tokens", "validation")
    return adapter, GenerationSettings(num_beams=p.num_beams, length_penalty=p.length_penalty,
                                       no_repeat_ngram_size=p.no_repeat_ngram_size,
                                       max_new_tokens=p.max_new_tokens, min_new_tokens=p.min_new_tokens)


def _job(req: GenerateRequest, state, stream: bool) -> Job:
    """Check ``req`` and queue it on the batcher; 503 when the queue is full."""
    adapter, settings = _settings(req, state)
    loop = asyncio.get_running_loop()
    job = Job(req.inputs, adapter, settings, loop, loop.create_future(),
              tokens=asyncio.Queue() if stream else None)
    try:
        state.batcher.submit(job)
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


def _record(state, job: Job, status: int) -> None:
    metrics = state.metrics
    metrics.requests.labels(adapter=job.adapter, status=str(status)).inc()
    if status == 200:
        metrics.latency.labels(adapter=job.adapter).observe(time.perf_counter() - job.arrived)
        metrics.queue_latency.labels(adapter=job.adapter).observe((job.started or job.arrived) - job.arrived)
        metrics.input_tokens.labels(adapter=job.adapter).inc(job.input_tokens)
        metrics.generated_tokens.labels(adapter=job.adapter).inc(job.generated_tokens)


def _raise_for(state, job: Job, exc: BaseException):
    status, kind = status_of(exc)
    _record(state, job, status)
    message = one_line(exc) if isinstance(exc, PeftsumError) else f"{type(exc).__name__}: {one_line(exc)}"
    raise ApiError(status, message, kind) from None


async def _cancel(state, job: Job) -> None:
    state.batcher.cancel(job)
    state.metrics.cancelled.inc()
    _record(state, job, 499)


def _event(payload: dict, ensure_ascii: bool = False) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=ensure_ascii)}\n\n"


async def _events(state, job: Job):
    """The server-sent events of a streamed job; cancels the job when the client goes away."""
    finished = False
    try:
        while True:
            getter = asyncio.ensure_future(job.tokens.get())
            done, _ = await asyncio.wait({getter, job.future}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                token_id, text = getter.result()
                yield _event({'token': {'id': token_id, 'text': text}})
                continue
            getter.cancel()
            while not job.tokens.empty():
                token_id, text = job.tokens.get_nowait()
                yield _event({'token': {'id': token_id, 'text': text}})
            exc = job.future.exception()
            finished = True
            if exc is not None:
                status, kind = status_of(exc)
                _record(state, job, status)
                yield _event({'error': one_line(exc), 'error_type': kind}, ensure_ascii=True)
            else:
                _record(state, job, 200)
                yield _event({"token": None, "generated_text": job.future.result(), "details": _details(job)})
            return
    finally:
        if not finished:  # the client went away (the generator was cancelled)
            await _cancel(state, job)


# --------------------------------------------------------------------------- routes
@router.post("/generate")
async def generate(req: GenerateRequest, request: Request):
    """Summarize one article with one adapter: ``{"generated_text", "adapter_id", "details"}``."""
    state = request.app.state
    job = _job(req, state, stream=False)
    while True:
        done, _ = await asyncio.wait({job.future}, timeout=state.poll_s)
        if done:
            break
        if await request.is_disconnected():
            await _cancel(state, job)
            return Response(status_code=499)
    exc = job.future.exception()
    if exc is not None:
        _raise_for(state, job, exc)
    _record(state, job, 200)
    return {"generated_text": job.future.result(), "adapter_id": job.adapter, "details": _details(job)}


@router.post("/generate_stream")
async def generate_stream(req: GenerateRequest, request: Request):
    """Server-sent events: ``{"token": {"id", "text"}}`` per token (greedy: as decoded; beam search:
    after the beams finish), then ``{"token": null, "generated_text", "details"}``."""
    state = request.app.state
    job = _job(req, state, stream=True)
    return StreamingResponse(_events(state, job), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/info")
async def info(request: Request):
    """The base, every adapter (method, language, rank, size in MB, trainable parameters), the limits."""
    state = request.app.state
    batcher = state.batcher
    out = await asyncio.get_running_loop().run_in_executor(None, state.registry.info)
    out.update({"default_parameters": asdict(_D), "max_input_chars": state.max_input_chars, "max_beams": MAX_BEAMS,
                "max_new_tokens": MAX_NEW_TOKENS, "window_ms": batcher.window_s * 1000,
                "max_batch": batcher.max_batch, "max_queue": batcher.max_queue})
    return out


@router.get("/health")
async def health(request: Request):
    """``{"status": "ok", "queue_depth", "adapters"}`` while the server is up."""
    state = request.app.state
    return {"status": "ok", "queue_depth": state.batcher.depth(), "adapters": len(state.registry.entries)}


@router.get("/metrics")
async def prometheus(request: Request):
    """Prometheus text format (see :class:`ServerMetrics`)."""
    body, ctype = request.app.state.metrics.render()
    return Response(body, media_type=ctype)


@router.post("/adapters", status_code=201)
async def add_adapter(req: AdapterRequest, request: Request):
    """Load an adapter (or run or full checkpoint) without a restart; 409 if trained on another base."""
    state = request.app.state
    try:
        entry = await asyncio.get_running_loop().run_in_executor(None, state.registry.add, req.name, req.path)
    except PeftsumError as exc:
        status, kind = status_of(exc)
        raise ApiError(status, one_line(exc), kind) from None
    state.metrics.adapter_loads.labels(adapter=entry.name).inc()
    state.metrics.resident_mb.set(state.registry.resident_mb())
    return entry.info()


@router.delete("/adapters/{name}")
async def delete_adapter(name: str, request: Request):
    """Unload an adapter; requests for it still waiting fail with 404."""
    state = request.app.state
    try:
        await asyncio.get_running_loop().run_in_executor(None, state.registry.remove, name)
    except UnknownAdapter as exc:
        raise ApiError(404, str(exc), "not_found") from None
    state.metrics.resident_mb.set(state.registry.resident_mb())
    return {"removed": name}


@router.get("/", response_class=HTMLResponse)
async def index(request: Request):
    """A self-contained page: paste an article, pick an adapter, read the summary and its latency."""
    return HTMLResponse(request.app.state.page)
