"""Error responses of ``peftsum serve``: every error is ``{"error": "<one line>", "error_type": ...}``.

:class:`ApiError` is what a route raises; :func:`install_error_handlers` turns it, FastAPI's
validation errors and Starlette's HTTP errors into that shape; :class:`ErrorsMiddleware` counts
error responses in ``/metrics`` and turns an unhandled exception into a one-line 500.
"""

import json

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from peftsum.errors import ConfigError
from peftsum.serving.batching import QueueFull
from peftsum.serving.metrics import ServerMetrics
from peftsum.serving.registry import AdapterConflict, UnknownAdapter


class ApiError(Exception):
    """An error response: HTTP ``status``, a one-line ``message`` and an ``error_type``."""

    def __init__(self, status: int, message: str, error_type: str):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def status_of(exc: BaseException) -> tuple[int, str]:
    """``(HTTP status, error_type)`` of an exception raised while serving a request."""
    if isinstance(exc, UnknownAdapter):
        return 404, "not_found"
    if isinstance(exc, AdapterConflict):
        return 409, "conflict"
    if isinstance(exc, QueueFull):
        return 503, "overloaded"
    if isinstance(exc, ConfigError):
        return 422, "validation"
    return 500, "server_error"


def one_line(exc: BaseException) -> str:
    """The exception's first line (at most 400 characters), or its type name when it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def validation_message(errors: list[dict]) -> str:
    """One line for pydantic's validation errors: the first error's field and message, plus how many more."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return f"body: invalid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
    where = ".".join(loc) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {err.get('msg', 'invalid')}{more}"


class ErrorsMiddleware:
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
                body = json.dumps({"error": f"{type(exc).__name__}: {one_line(exc)}", "error_type": "server_error"})
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body.encode()})
                state["status"] = 500
        if state["status"] is not None and state["status"] >= 400:
            self.metrics.errors.labels(code=str(state["status"])).inc()


def _error(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


async def _api_error(_request, exc: ApiError):
    return _error(exc.status, exc.message, exc.error_type)


async def _invalid(_request, exc: RequestValidationError):
    return _error(422, validation_message(list(exc.errors())), "validation")


async def _http(_request, exc: StarletteHTTPException):
    return _error(exc.status_code, str(exc.detail), "http")


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Give ``app`` the one-line error shape for every error and count errors in ``metrics``."""
    app.add_middleware(ErrorsMiddleware, metrics=metrics)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
