"""Helpers shared by the routes: request bodies (JSON or multipart), SSE framing, primed streams."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from ..tts.postprocess import MAX_SPEED_RATIO, MIN_SPEED_RATIO
from .audio_formats import OUTPUT_FORMATS, STREAM_FORMATS
from .errors import APIError, api_error_from, validation_error
from .work_queue import WorkStream

logger = logging.getLogger(__name__)

__all__ = [
    "check_length",
    "check_output_format",
    "check_ref_text",
    "check_speed",
    "parse_model",
    "primed",
    "read_form",
    "read_json",
    "request_kind",
    "sse",
    "to_samples",
    "upload_bytes",
]

M = TypeVar("M", bound=BaseModel)


def request_kind(request: Request) -> str:
    """``"json"``, ``"multipart"``, ``"urlencoded"`` or ``"other"`` from the Content-Type header."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        return "json"
    if content_type == "multipart/form-data":
        return "multipart"
    if content_type == "application/x-www-form-urlencoded":
        return "urlencoded"
    return "other"


def unsupported_media_type(request: Request, accepted: str) -> APIError:
    content_type = request.headers.get("content-type", "") or "none"
    return APIError(
        415, f"Content-Type {content_type!r} is not accepted here; send {accepted}", code="unsupported_media_type"
    )


async def read_json(request: Request) -> dict[str, Any]:
    """The JSON object of the body (400 for invalid JSON or a non-object)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise APIError(400, f"the body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object with the request's fields", code="invalid_json")
    return data


async def read_form(request: Request, max_bytes: int) -> FormData:
    """The multipart / urlencoded form of the body (fields and uploaded files)."""
    try:
        return await request.form(max_files=8, max_fields=64, max_part_size=max_bytes)
    except APIError:
        raise
    except Exception as error:  # malformed multipart: starlette raises its HTTPException or a parser error
        detail = getattr(error, "detail", None) or str(error)
        raise APIError(400, f"the multipart body could not be read: {detail}", code="invalid_form") from None


async def upload_bytes(value: Any) -> Any:
    """The bytes of an uploaded file field (other values unchanged)."""
    if isinstance(value, UploadFile):
        return await value.read()
    return value


def parse_model(model: type[M], data: dict[str, Any]) -> M:
    """``model.model_validate(data)``, with validation errors answered as OpenAI 400 errors."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise validation_error(list(error.errors())) from None


def check_length(text: str, param: str, limit: int) -> None:
    """400 ``string_above_max_length`` when ``text`` is longer than ``limit`` characters."""
    if len(text) > limit:
        raise APIError(
            400,
            f"{param} is {len(text)} characters long; this server takes at most {limit}",
            param=param,
            code="string_above_max_length",
        )


def check_ref_text(ref_text: str | None, limit: int) -> str:
    """The transcript sent with a ``ref_audio`` clip: 400 when it is missing or blank, or longer than ``limit``."""
    if ref_text is None or not ref_text.strip():
        raise APIError(
            400,
            "ref_text is required with ref_audio: give the transcript of the clip (the model reads the voice "
            "from the clip and its words)",
            param="ref_text",
            code="missing_required_parameter",
        )
    check_length(ref_text, "ref_text", limit)
    return ref_text


def check_output_format(fmt: str, stream_format: str | None = None) -> str:
    """``response_format`` (one of :data:`OUTPUT_FORMATS`) and ``stream_format`` (``audio``, ``sse`` or ``None``,
    and only for a streamable format), else 400; returns the format."""
    if fmt not in OUTPUT_FORMATS:
        raise APIError(
            400,
            f"response_format {fmt!r} is not supported; use one of {', '.join(OUTPUT_FORMATS)}",
            param="response_format",
            code="unsupported_format",
        )
    if stream_format not in (None, "audio", "sse"):
        raise APIError(
            400,
            f"stream_format {stream_format!r} is not supported; use 'audio' or 'sse', or leave it out",
            param="stream_format",
            code="invalid_value",
        )
    if stream_format is not None and fmt not in STREAM_FORMATS:
        raise APIError(
            400,
            f"response_format {fmt!r} cannot be streamed (its header holds the length); stream "
            f"{', '.join(STREAM_FORMATS)}, or leave stream_format out",
            param="response_format",
            code="unsupported_format",
        )
    return fmt


def check_speed(speed: float) -> float:
    """``speed`` (a time stretch of the output) from 0.25 to 4.0, else 400."""
    if not MIN_SPEED_RATIO <= speed <= MAX_SPEED_RATIO:
        raise APIError(
            400,
            f"speed must be from {MIN_SPEED_RATIO} to {MAX_SPEED_RATIO}, got {speed}; 1.0 keeps the tempo",
            param="speed",
            code="invalid_value",
        )
    return float(speed)


def sse(data: Any) -> bytes:
    """One server-sent event ``data: <json>\\n\\n`` (``[DONE]`` is sent as is)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def to_samples(waveform: Any) -> np.ndarray:
    """A ``[1, N]`` / ``[N]`` torch tensor or array as float32 ``[N]`` numpy samples."""
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().to("cpu").float().numpy()
    return np.asarray(waveform, dtype=np.float32).reshape(-1)


_NOTHING = object()


async def primed(stream: WorkStream, map_error: Callable[[BaseException], APIError]) -> AsyncIterator[Any]:
    """Wait for a streaming job's first piece, then return an iterator over all of them.

    A failure before the first piece (a bad prompt, an unreadable clip, a model error) is raised here as
    an :class:`APIError`, so the client gets a proper status code instead of a broken stream; later
    failures are raised by the iterator.  The job is cancelled when the iterator is closed early.
    """
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = _NOTHING
    except BaseException as error:
        await stream.aclose()
        if isinstance(error, Exception):
            raise map_error(error) from error
        raise

    async def pieces() -> AsyncIterator[Any]:
        try:
            if first is not _NOTHING:
                yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return pieces()


def log_stream_failure(what: str, error: BaseException) -> APIError:
    """Log a failure after a stream started; returns the API error to report in-band (SSE)."""
    api_error = api_error_from(error)
    if api_error.status >= 500:
        logger.error("%s failed mid-stream", what, exc_info=error)
    else:
        logger.info("%s stopped mid-stream: %s", what, api_error.message)
    return api_error
