"""Step-Audio-EditX on the API: zero-shot cloning through ``/v1/audio/speech`` and ``POST /v1/audio/edits``.

Served when the app has an EditX model (``create_app(..., editx=load_editx(...))``, ``stepaudio serve
--editx``); otherwise these requests are answered 404 ``model_not_loaded``, naming ``--editx``.

``POST /v1/audio/speech`` with ``model: "step-audio-editx"`` (see :func:`speak_with_editx`): ``input``,
``ref_audio`` (base64 / data URL, or an upload) and ``ref_text`` (required), ``language``
(``Sichuanese``, ``Cantonese``, ``Japanese``, ``Korean``: EditX's prefix), ``response_format``,
``stream_format`` (the whole clip is made first, then sent as one piece) and ``speed`` as for the TTS.
``voice`` is not used; ``instructions`` and ``temperature`` are refused (edit the clone instead).

``POST /v1/audio/edits`` (see :func:`create_edit`): multipart with the clip as the ``file`` upload, or
JSON with the clip base64-encoded as ``audio``; fields ``audio_text`` (its transcript), ``edit_type``,
``edit_info``, ``iterations`` (1-10, each edits the previous output), ``text`` (paralinguistic: the
transcript with ``[Tag]`` sounds), ``response_format`` (default ``wav``, so an output can be edited
again without loss) and ``model`` (optional).  The answer is the last iteration's audio, with the
headers ``X-Sample-Rate`` and ``X-Edit-Iterations``.  ``GET /v1/audio/edit_types`` lists what may be asked.

Audio is never fetched from a URL or read from a server path; it is decoded with the server's limits
(``max_audio_seconds``, ``max_body_bytes``) and every model call waits in the shared work queue (429
when full).  The library's own checks (:mod:`stepaudio.editx.edit_config`) run before a request
queues; their one-line messages are the 400 answers.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..editx.edit_config import (
    EDIT_INFO_CHOICES,
    EDIT_TYPES,
    LANGUAGES,
    PARALINGUISTIC_TAGS,
    TEXTLESS_EDIT_TYPES,
    check_edit_request,
    check_language,
    check_n_edit_iter,
)
from ..errors import AudioInputError, InvalidArgumentError
from ..tts.postprocess import change_speed
from ..validation import check_text
from .audio_formats import (
    MEDIA_TYPES,
    StreamEncoder,
    decode_audio,
    decode_base64,
    encode_audio,
    output_sample_rate,
)
from .common import (
    check_length,
    check_output_format,
    check_ref_text,
    parse_model,
    read_form,
    read_json,
    request_kind,
    sse,
    to_samples,
    unsupported_media_type,
)
from .errors import APIError, api_error_from
from .models import editx_not_loaded, resolve_model
from .state import ServerState, State
from .work_queue import JobCancelled

logger = logging.getLogger(__name__)

__all__ = ["EDIT_RESPONSE_FORMAT", "EditBody", "MAX_EDIT_ITERATIONS", "router", "speak_with_editx"]

router = APIRouter()

#: Default ``response_format`` of an edit: lossless, so the output can be edited again.
EDIT_RESPONSE_FORMAT = "wav"
#: Most ``iterations`` of one edit (the library's limit).
MAX_EDIT_ITERATIONS = 10
#: Library argument names -> request fields of a clone, and the names to show instead in its messages.
_CLONE_PARAMS = {"text": "input", "prompt_text": "ref_text", "prompt_wav": "ref_audio", "sample_rate": "ref_audio"}
_CLONE_REDACT = {"prompt_wav": "ref_audio", "prompt_text": "ref_text"}


# ------------------------------------------------------------------------------------------ speech
def _clone_error(error: BaseException) -> APIError:
    """The API error of a failed clone, speaking in request fields (``ref_audio``, not ``prompt_wav``)."""
    param = "ref_audio" if isinstance(error, AudioInputError) else None
    return api_error_from(error, param=param, redact=_CLONE_REDACT, params=_CLONE_PARAMS)


def _checked_clone_fields(state: ServerState, body: Any) -> tuple[str | None, bytes]:
    """The EditX-specific checks of a speech request; returns ``(language, raw ref_audio bytes)``."""
    settings = state.settings
    model = settings.editx_model
    if body.ref_audio is None:
        raise APIError(
            400,
            f"the model {model!r} speaks in the voice of a reference clip and has no registered voices: send "
            "ref_audio (the clip, base64 or an upload) and ref_text (its transcript)",
            param="ref_audio",
            code="missing_required_parameter",
        )
    check_ref_text(body.ref_text, settings.max_input_chars)
    if body.instructions is not None:
        raise APIError(
            400,
            f"instructions are not supported by {model!r}: clone first, then change the emotion, style or speed "
            f"with POST /v1/audio/edits (or ask {settings.tts_model!r}, which takes instructions)",
            param="instructions",
            code="unsupported_parameter",
        )
    if body.temperature is not None:
        raise APIError(
            400,
            f"temperature cannot be set per request for {model!r} (it samples at {state.editx.temperature:g}); "
            "leave it out",
            param="temperature",
            code="unsupported_parameter",
        )
    try:
        check_text(body.input, "input")
        check_text(body.ref_text, "ref_text")
        language = check_language(body.language)
    except InvalidArgumentError as error:
        raise api_error_from(error) from None
    raw = body.ref_audio if isinstance(body.ref_audio, bytes) else decode_base64(body.ref_audio, "ref_audio")
    return language, raw


async def speak_with_editx(state: ServerState, body: Any) -> Response:
    """Answer a speech request for the EditX model (``body``: a checked ``SpeechRequest``): clone ``ref_audio``.

    ``input``, ``response_format``, ``stream_format`` and ``speed`` were checked by the speech route.
    """
    settings = state.settings
    editx = state.editx
    language, raw = _checked_clone_fields(state, body)
    clip = await run_in_threadpool(
        decode_audio, raw, "ref_audio", max_seconds=settings.max_audio_seconds, pcm_rate=settings.sample_rate
    )
    text, transcript, speed = body.input, body.ref_text, float(body.speed)

    def clone(cancel: threading.Event) -> tuple[Any, int]:
        waveform, rate = editx.clone(text, clip.samples, transcript, language=language, sample_rate=clip.sample_rate)
        if speed != 1.0 and waveform.numel():
            waveform = change_speed(waveform, rate, speed)
        return waveform, rate

    try:
        waveform, rate = await state.work_queue.run(clone)
    except Exception as error:
        raise _clone_error(error) from error
    samples = to_samples(waveform)
    fmt = body.response_format
    out_rate = output_sample_rate(fmt, settings.sample_rate)
    headers = {"X-Sample-Rate": str(out_rate)}
    if body.stream_format is None:
        content = await run_in_threadpool(encode_audio, samples, rate, fmt, settings.sample_rate)
        return Response(content, media_type=MEDIA_TYPES[fmt], headers=headers)

    def whole_stream() -> bytes:  # EditX makes the clip at once: the stream is one piece
        encoder = StreamEncoder(fmt, rate, settings.sample_rate)
        return encoder.feed(samples) + encoder.close()

    data = await run_in_threadpool(whole_stream)
    if body.stream_format == "audio":
        return StreamingResponse(iter([data]), media_type=MEDIA_TYPES[fmt], headers=headers)

    def events() -> Iterator[bytes]:
        yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
        yield sse({"type": "speech.audio.done", "response_format": fmt, "sample_rate": out_rate, "bytes": len(data)})

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


# ------------------------------------------------------------------------------------------ edits
class EditBody(BaseModel):
    """The fields of an edit request besides the clip (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    audio: str | bytes | None = None
    audio_text: str | None = None
    edit_type: str | None = None
    edit_info: str | None = None
    iterations: int = 1
    text: str | None = None
    response_format: str = EDIT_RESPONSE_FORMAT
    language: str | None = None


_MISSING_CLIP = (
    "missing required parameter: file (the clip to edit, as a multipart upload) or audio (the clip base64-encoded, "
    "in a JSON body)"
)


async def _read_edit_request(request: Request, state: ServerState) -> tuple[EditBody, bytes | None, str]:
    """The fields, the clip's raw bytes (``None`` when missing) and the field that held the clip."""
    kind = request_kind(request)
    if kind == "json":
        data = await read_json(request)
        if "file" in data and "audio" not in data:
            raise APIError(
                400,
                "in a JSON body send the clip base64-encoded as audio; file is the multipart upload",
                param="file",
                code="invalid_value",
            )
        body = parse_model(EditBody, {key: value for key, value in data.items() if key != "file"})
        if body.audio is None:
            return body, None, "file"
        return body, decode_base64(body.audio, "audio"), "audio"
    if kind not in ("multipart", "urlencoded"):
        raise unsupported_media_type(request, "multipart/form-data with the clip as the file upload, or JSON")
    form = await read_form(request, state.settings.max_body_bytes)
    data: dict[str, Any] = {}
    clip: bytes | None = None
    param = "file"
    for key, value in form.multi_items():
        if key in data or (key in ("file", "audio") and clip is not None):
            raise APIError(400, f"{key} is given more than once; send it once", param=key, code="invalid_value")
        if key == "file":
            if not isinstance(value, UploadFile):
                raise APIError(
                    400,
                    "file must be an uploaded audio file (multipart); URLs and server paths are not accepted",
                    param="file",
                    code="invalid_type",
                )
            clip, param = await value.read(), "file"
        elif key == "audio":  # an upload, or base64 text as in JSON
            clip = await value.read() if isinstance(value, UploadFile) else decode_base64(value, "audio")
            param = "audio"
        elif isinstance(value, UploadFile):
            raise APIError(400, f"{key} must be a form field, not a file", param=key, code="invalid_type")
        elif value != "":  # an empty form field is an absent one
            data[key] = value
    return parse_model(EditBody, data), clip, param


def _blank_to_none(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value


@router.post("/v1/audio/edits")
async def create_edit(request: Request, state: State) -> Response:
    """Edit the emotion, style, speed, paralinguistic sounds, noise or silences of a clip with Step-Audio-EditX."""
    settings = state.settings
    editx = state.editx
    if editx is None:
        raise editx_not_loaded(settings, "POST /v1/audio/edits")
    body, raw, param = await _read_edit_request(request, state)
    if body.model is not None:
        resolve_model(settings, body.model, "edit", editx_loaded=True)
    if raw is None:
        raise APIError(400, _MISSING_CLIP, param="file", code="missing_required_parameter")
    fmt = check_output_format(body.response_format)
    if body.language is not None:
        raise APIError(
            400,
            f"language applies to cloning (POST /v1/audio/speech with model {settings.editx_model!r}), not to "
            "edits; leave it out",
            param="language",
            code="unsupported_parameter",
        )
    try:
        iterations = check_n_edit_iter(body.iterations)
        edit = check_edit_request(body.edit_type, body.edit_info, body.audio_text, _blank_to_none(body.text))
    except InvalidArgumentError as error:
        raise api_error_from(error) from None
    check_length(edit.audio_text, "audio_text", settings.max_input_chars)
    if edit.text is not None:
        check_length(edit.text, "text", settings.max_input_chars)
    clip = await run_in_threadpool(
        decode_audio, raw, param, max_seconds=settings.max_audio_seconds, pcm_rate=settings.sample_rate
    )

    def run_edit(cancel: threading.Event) -> Any:
        steps = editx.edit_steps(
            clip.samples,
            edit.audio_text,
            edit.edit_type,
            edit.edit_info,
            iterations,
            text=edit.text,
            sample_rate=clip.sample_rate,
        )
        last = None
        for step in steps:  # the client may leave between iterations
            if cancel.is_set():
                raise JobCancelled("the client went away during the edit")
            last = step
        return last

    try:
        step = await state.work_queue.run(run_edit)
    except Exception as error:
        mapped = param if isinstance(error, AudioInputError) else None
        raise api_error_from(error, param=mapped, params={"audio": param, "sample_rate": param}) from error
    content = await run_in_threadpool(
        encode_audio, to_samples(step.waveform), step.sample_rate, fmt, settings.sample_rate
    )
    headers = {
        "X-Sample-Rate": str(output_sample_rate(fmt, settings.sample_rate)),
        "X-Edit-Iterations": str(step.iteration),
    }
    return Response(content, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get("/v1/audio/edit_types")
async def list_edit_types(state: State) -> dict[str, Any]:
    """What ``/v1/audio/edits`` accepts: each edit type with its ``edit_info`` values, the tags and languages."""
    if state.editx is None:
        raise editx_not_loaded(state.settings, "GET /v1/audio/edit_types")
    data = [
        {
            "id": edit_type,
            "object": "edit_type",
            "edit_info": list(EDIT_INFO_CHOICES[edit_type]),
            "needs_audio_text": edit_type not in TEXTLESS_EDIT_TYPES,
            "needs_text": edit_type == "paralinguistic",
        }
        for edit_type in EDIT_TYPES
    ]
    return {
        "object": "list",
        "data": data,
        "paralinguistic_tags": list(PARALINGUISTIC_TAGS),
        "languages": list(LANGUAGES),
        "max_iterations": MAX_EDIT_ITERATIONS,
    }
