"""OpenAI-style errors: every failure is answered ``{"error": {"message", "type", "param", "code"}}``.

:class:`APIError` carries the HTTP status and the four fields; :func:`api_error_from` maps stepaudio's
own exceptions (one-line messages) to 4xx and anything else to 500; :func:`install_error_handlers`
makes FastAPI answer validation errors, unknown routes and unexpected exceptions in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    AudioInputError,
    CheckpointError,
    InvalidArgumentError,
    PromptError,
    StepAudioError,
    UsageError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "APIError",
    "QueueFullError",
    "api_error_from",
    "error_body",
    "install_error_handlers",
    "validation_error",
]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """An error answered with ``status`` and an OpenAI error body.

    Args:
        status: the HTTP status (400 bad input, 404 unknown model, 413 too large, 415 unsupported media
            type, 429 queue full, 500 model failure, ...).
        message: one line: what was wrong, what is accepted.
        param: the request field at fault (``"voice"``, ``"messages[0].content[1].input_audio.data"``).
        code: a short machine-readable reason (``"model_not_found"``, ``"invalid_audio"``, ...).
        type: the OpenAI error type (default from the status: ``invalid_request_error`` for 4xx,
            ``server_error`` for 5xx).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


class QueueFullError(APIError):
    """Every worker is busy and the request queue is full (429)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(
            429,
            f"the server is busy: {capacity} request(s) are already running or queued; retry later",
            code="queue_full",
            headers={"Retry-After": "1"},
        )


def _redact(message: str, redact: Mapping[str, str] | None) -> str:
    for secret, shown in (redact or {}).items():
        message = message.replace(secret, shown)
    return message


def api_error_from(
    error: BaseException,
    *,
    param: str | None = None,
    redact: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> APIError:
    """The API error for an exception raised by the models or the library.

    stepaudio's input errors (:class:`~stepaudio.errors.UsageError`, ``InvalidArgumentError``,
    ``InputFileError``, :class:`~stepaudio.errors.AudioInputError`, :class:`~stepaudio.errors.PromptError`)
    are the caller's: 400 with their one-line message.  A broken checkpoint and anything unexpected is
    the server's: 500.

    Args:
        param: the request field to blame for a 400 (default: the argument an ``InvalidArgumentError`` names,
            renamed through ``params``).
        redact: substrings to replace in the message (server-side temporary paths -> the request field).
        params: library argument names -> request field names (``{"speed_ratio": "speed"}``).
    """
    if isinstance(error, APIError):
        return error
    message = _redact(str(error) or type(error).__name__, redact)
    if isinstance(error, InvalidArgumentError):
        named = (params or {}).get(error.name or "", error.name)
        return APIError(400, message, param=param or named, code="invalid_value")
    if isinstance(error, AudioInputError):
        return APIError(400, message, param=param, code="invalid_audio")
    if isinstance(error, PromptError):
        return APIError(400, message, param=param, code="invalid_prompt")
    if isinstance(error, UsageError):
        return APIError(400, message, param=param, code="invalid_value")
    if isinstance(error, CheckpointError):
        return APIError(500, f"the server's model files are broken: {message}", code="model_error")
    if isinstance(error, StepAudioError):
        return APIError(500, f"the model failed: {message}", code="model_error")
    return APIError(
        500, f"the model failed ({type(error).__name__}: {message}); see the server log", code="model_error"
    )


def _location(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``"messages[0].content"``."""
    parts = [part for part in loc if part not in ("body", "query", "path", "header", "form")]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or None


def validation_error(errors: list[Mapping[str, Any]]) -> APIError:
    """A 400 API error for pydantic / FastAPI validation errors, naming the first bad field."""
    if not errors:
        return APIError(400, "the request is not valid", code="invalid_request")
    first = errors[0]
    param = _location(tuple(first.get("loc", ())))
    kind = str(first.get("type", ""))
    if kind == "missing":
        message = f"missing required parameter: {param!s}" if param else "a required parameter is missing"
        code = "missing_required_parameter"
    else:
        detail = first.get("msg", "invalid value")
        given = first.get("input")
        shown = "" if isinstance(given, (dict, list)) or given is None else f", got {given!r}"[:80]
        message = f"{param}: {detail}{shown}" if param else str(detail)
        code = "invalid_type" if kind.endswith("_type") or kind.endswith("_parsing") else "invalid_value"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return APIError(400, message, param=param, code=code)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with an OpenAI error body and the right status."""

    async def on_api_error(request: Request, error: APIError) -> JSONResponse:
        if error.status >= 500:
            cause = error.__cause__ if error.__cause__ is not None else error
            logger.error("%s %s failed: %s", request.method, request.url.path, error.message, exc_info=cause)
        return error.response()

    async def on_library_error(request: Request, error: StepAudioError) -> JSONResponse:
        api_error = api_error_from(error)
        if api_error.status >= 500:
            logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return api_error.response()

    async def on_validation_error(request: Request, error: RequestValidationError | ValidationError) -> JSONResponse:
        return validation_error(list(error.errors())).response()

    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see GET /v1/models and the README"
        elif error.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return APIError(error.status_code, detail, code=code, headers=getattr(error, "headers", None)).response()

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return api_error_from(error).response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(StepAudioError, on_library_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
