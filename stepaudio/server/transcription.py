"""``POST /v1/audio/transcriptions``: speech to text with Step-Audio-Chat and its ASR instruction.

Multipart form: ``file`` (WAV, FLAC, MP3, Ogg, ...), ``model``, ``response_format`` (``json``
default, ``text``, ``verbose_json``, ``srt``, ``vtt``), ``temperature`` (0 default: greedy; above 0
samples), ``language`` (echoed in ``verbose_json``, not a hint to the model); ``prompt`` and ``include``
(log-probabilities) are ignored.
The audio is tokenized and the chat model is asked, as the library's
:class:`~stepaudio.realtime.context.ChatTranscriber` does, to write down what it hears
(:data:`~stepaudio.llm.prompts.ASR_INSTRUCTION`).  Not supported (400): ``stream=true``, word
timestamps.  ``verbose_json`` has one segment spanning the whole clip (the model
gives no timestamps) and no log-probabilities.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..llm.prompts import ASR_INSTRUCTION, audio_codes_to_ids, parse_audio_tokens
from ..realtime.context import ChatTranscriber
from .audio_formats import decode_audio
from .common import read_form, request_kind, unsupported_media_type
from .errors import APIError, api_error_from
from .models import resolve_model
from .state import State

logger = logging.getLogger(__name__)

__all__ = ["TRANSCRIPTION_FORMATS", "router"]

router = APIRouter()

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def _form_value(form: Any, name: str, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None:
        return default
    if isinstance(value, UploadFile):
        raise APIError(400, f"{name} must be a form field, not a file", param=name, code="invalid_type")
    return str(value)


def _guess_language(text: str) -> str:
    """``chinese`` / ``english`` / ``unknown`` from the transcript's script (the model reports no language)."""
    cjk = sum(1 for character in text if "\u4e00" <= character <= "\u9fff")
    latin = sum(1 for character in text if character.isascii() and character.isalpha())
    if cjk == 0 and latin == 0:
        return "unknown"
    return "chinese" if cjk >= latin else "english"


def _timestamp(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request, state: State) -> Response:
    settings = state.settings
    if request_kind(request) not in ("multipart", "urlencoded"):
        raise unsupported_media_type(request, "multipart/form-data with the audio as the file field")
    form = await read_form(request, settings.max_body_bytes)
    resolve_model(settings, _form_value(form, "model"), "transcription")
    response_format = _form_value(form, "response_format", "json")
    if response_format not in TRANSCRIPTION_FORMATS:
        raise APIError(
            400,
            f"response_format {response_format!r} is not supported; use one of {', '.join(TRANSCRIPTION_FORMATS)}",
            param="response_format",
            code="unsupported_format",
        )
    if (_form_value(form, "stream", "false") or "").lower() in ("true", "1"):
        raise APIError(
            400,
            "streamed transcription is not supported; leave stream out",
            param="stream",
            code="unsupported_parameter",
        )
    granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    if "word" in granularities:
        raise APIError(
            400,
            "word timestamps are not supported (the model gives none); verbose_json has one segment for the clip",
            param="timestamp_granularities",
            code="unsupported_parameter",
        )
    temperature_text = _form_value(form, "temperature", "0")
    try:
        temperature = float(temperature_text or 0)
    except ValueError:
        temperature = -1.0
    if not 0 <= temperature <= 1:
        raise APIError(
            400, f"temperature must be from 0 to 1, got {temperature_text!r}", param="temperature", code="invalid_value"
        )
    upload = form.get("file")
    if upload is None:
        raise APIError(400, "missing required parameter: file", param="file", code="missing_required_parameter")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "file must be an uploaded audio file (multipart)", param="file", code="invalid_type")
    raw = await upload.read()
    clip = await run_in_threadpool(
        decode_audio, raw, "file", max_seconds=settings.max_audio_seconds, pcm_rate=settings.sample_rate
    )
    tokenizer, llm = state.tokenizer, state.llm
    max_tokens = settings.transcription_max_tokens

    def transcribe(cancel: threading.Event) -> str:
        audio_ids = audio_codes_to_ids(parse_audio_tokens(tokenizer(clip.samples, clip.sample_rate)))
        if temperature == 0:
            return ChatTranscriber(llm, max_new_tokens=max_tokens).transcribe(audio_ids)
        messages = [
            {"role": "system", "content": ASR_INSTRUCTION},
            {"role": "user", "content": {"type": "audio", "audio_ids": audio_ids}},
        ]
        return llm(messages, max_new_tokens=max_tokens, temperature=temperature, do_sample=True).strip()

    try:
        text = await state.work_queue.run(transcribe)
    except Exception as error:
        raise api_error_from(error, param="file") from error
    duration = clip.seconds
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format in ("srt", "vtt"):
        if response_format == "srt":
            cue = f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n"
        else:
            cue = f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n"
        return PlainTextResponse(cue)
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    if response_format == "json":
        return JSONResponse({"text": text, "usage": usage})
    language = _form_value(form, "language") or _guess_language(text)
    segment = {"id": 0, "seek": 0, "start": 0.0, "end": round(duration, 3), "text": text, "temperature": temperature}
    return JSONResponse(
        {
            "task": "transcribe",
            "language": language,
            "duration": round(duration, 3),
            "text": text,
            "segments": [segment],
            "usage": usage,
        }
    )
