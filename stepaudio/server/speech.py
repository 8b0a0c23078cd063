"""``POST /v1/audio/speech``: text to speech with a registered voice or a voice cloned from ``ref_audio``.

Request (JSON, or multipart with ``ref_audio`` as an uploaded file): ``model``, ``input``, ``voice``
(a registered speaker, an alias, or ``{"id": ...}``), ``instructions`` (mapped to one Step-Audio tag,
see :mod:`stepaudio.server.instructions`), ``response_format`` (``wav``, ``pcm``, ``flac``, ``mp3``,
``opus``; default ``mp3`` as OpenAI), ``speed`` (0.25-4.0, a time stretch), ``stream_format``
(``audio``: the file in chunks as it is generated; ``sse``: ``speech.audio.delta`` events with base64
chunks, then ``speech.audio.done``; absent: the whole file at once).  Extensions: ``ref_audio`` (the
clip to clone, base64 / data URL, or an upload) with ``ref_text`` (its transcript), as vLLM-Omni
names them (with ``ref_audio`` the ``voice`` is not used), and ``temperature`` (TTS sampling, default
0.7).  A request never names a file on the server.

With ``model: "step-audio-editx"`` (served when the server has Step-Audio-EditX loaded, ``stepaudio
serve --editx``) the voice is always cloned: ``ref_audio`` and ``ref_text`` are required, ``language``
(``Sichuanese``, ``Cantonese``, ``Japanese``, ``Korean``) adds EditX's language prefix, and the speech
is made by :mod:`stepaudio.server.editx` at EditX's 24 kHz.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ..tts.prompts import MUSIC_INSTRUCTIONS, leading_instruction
from ..tts.tts import MAX_TEMPERATURE, SAMPLE_RATE
from .audio_formats import (
    MEDIA_TYPES,
    DecodedAudio,
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
    check_speed,
    log_stream_failure,
    parse_model,
    primed,
    read_form,
    read_json,
    request_kind,
    sse,
    to_samples,
    unsupported_media_type,
    upload_bytes,
)
from .editx import speak_with_editx
from .errors import APIError, api_error_from
from .instructions import instruction_tag
from .models import resolve_model
from .settings import ServerSettings
from .state import ServerState, State

logger = logging.getLogger(__name__)

__all__ = ["SpeechRequest", "router"]

router = APIRouter()

#: Library argument names -> request fields, for the rare library refusal of a checked value.
_PARAMS = {"speed_ratio": "speed", "temperature": "temperature", "speaker": "voice", "text": "input"}


class SpeechRequest(BaseModel):
    """The fields of a speech request (unknown fields are ignored, as OpenAI-compatible servers do)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str
    voice: str | dict[str, Any] | None = None
    instructions: str | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str | None = None
    ref_audio: str | bytes | None = None
    ref_text: str | None = None
    temperature: float | None = None
    language: str | None = None


@dataclass
class SpeechPlan:
    """A checked request: what to say, with which voice, in which format."""

    text: str
    speaker: str | None
    clone: DecodedAudio | None
    ref_text: str | None
    fmt: str
    stream_format: str | None
    speed: float
    temperature: float


async def _read_request(request: Request, state: ServerState) -> SpeechRequest:
    kind = request_kind(request)
    if kind == "json":
        return parse_model(SpeechRequest, await read_json(request))
    if kind in ("multipart", "urlencoded"):
        form = await read_form(request, state.settings.max_body_bytes)
        data = {key: await upload_bytes(value) for key, value in form.multi_items()}
        return parse_model(SpeechRequest, data)
    raise unsupported_media_type(request, "application/json, or multipart/form-data to upload ref_audio")


def check_input(settings: ServerSettings, body: SpeechRequest) -> None:
    """``input`` (non-blank, at most ``max_input_chars``), ``response_format`` / ``stream_format`` and ``speed``."""
    if not body.input.strip():
        raise APIError(400, "input is empty: give the text to speak", param="input", code="invalid_value")
    check_length(body.input, "input", settings.max_input_chars)
    check_output_format(body.response_format, body.stream_format)
    check_speed(body.speed)


def _plan(state: ServerState, body: SpeechRequest) -> tuple[SpeechPlan, Any]:
    """Check every field; returns the plan and the raw ``ref_audio`` bytes (decoded later, off the loop)."""
    settings = state.settings
    check_input(settings, body)
    fmt = body.response_format
    if body.language is not None:
        raise APIError(
            400,
            f"language only applies to the model {settings.editx_model!r} (a dialect or language prefix of EditX "
            f"cloning); {settings.tts_model!r} takes it as an instruction, e.g. instructions='speak Cantonese'",
            param="language",
            code="unsupported_parameter",
        )
    temperature = 0.7 if body.temperature is None else body.temperature
    if not 0 < temperature <= MAX_TEMPERATURE:
        raise APIError(
            400,
            f"temperature must be above 0 and at most {MAX_TEMPERATURE}, got {temperature}; 0.7 is the default",
            param="temperature",
            code="invalid_value",
        )
    tag = instruction_tag(body.instructions)
    written = leading_instruction(body.input)
    if tag is not None and written is not None and written != tag:
        raise APIError(
            400,
            f"input already starts with the tag ({written}) but instructions ask for ({tag}); give one of them",
            param="instructions",
            code="conflicting_instructions",
        )
    text = f"（{tag}）{body.input}" if tag is not None and written is None else body.input
    raw_clip = None
    speaker = None
    ref_text = None
    if body.ref_audio is not None:
        raw_clip = body.ref_audio if isinstance(body.ref_audio, bytes) else decode_base64(body.ref_audio, "ref_audio")
        ref_text = check_ref_text(body.ref_text, settings.max_input_chars)
    else:
        if body.ref_text is not None:
            raise APIError(
                400,
                "ref_text is the transcript of ref_audio: send ref_audio too",
                param="ref_audio",
                code="invalid_value",
            )
        if body.voice is None:
            raise APIError(
                400,
                "missing required parameter: voice (or clone a voice with ref_audio + ref_text)",
                param="voice",
                code="missing_required_parameter",
            )
        speaker = state.resolve_voice(body.voice)
        active = leading_instruction(text)
        if active in MUSIC_INSTRUCTIONS and f"{speaker}{active}" not in state.speaker_ids():
            with_style = [voice["id"] for voice in state.voices() if active in voice.get("styles", ())]
            raise APIError(
                400,
                f"voice {speaker!r} has no {active} style (no {speaker}{active} prompt is registered); voices with "
                f"{active}: {', '.join(with_style) or 'none'}; or clone with ref_audio + ref_text",
                param="voice",
                code="voice_style_not_found",
            )
    plan = SpeechPlan(text, speaker, None, ref_text, fmt, body.stream_format, float(body.speed), float(temperature))
    return plan, raw_clip


class _ClonePrompt:
    """The uploaded clip written to a private temporary folder for the TTS (removed when the request ends)."""

    def __init__(self, clip: DecodedAudio, transcript: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="stepaudio-ref-"))
        self.path = self.folder / "ref_audio.wav"
        soundfile.write(str(self.path), clip.samples, clip.sample_rate, subtype="FLOAT", format="WAV")
        self.clone_dict = {"prompt_text": transcript, "wav_path": str(self.path)}
        self.redact = {str(self.path): "ref_audio", str(self.folder): "ref_audio"}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@router.post("/v1/audio/speech")
async def create_speech(request: Request, state: State) -> Response:
    body = await _read_request(request, state)
    model = resolve_model(state.settings, body.model, "speech", editx_loaded=state.editx is not None)
    if model == state.settings.editx_model:
        check_input(state.settings, body)
        return await speak_with_editx(state, body)
    plan, raw_clip = _plan(state, body)
    settings = state.settings
    clone: _ClonePrompt | None = None
    if raw_clip is not None:
        clip = await run_in_threadpool(
            decode_audio,
            raw_clip,
            "ref_audio",
            max_seconds=settings.max_audio_seconds,
            pcm_rate=settings.sample_rate,
        )
        clone = await run_in_threadpool(_ClonePrompt, clip, plan.ref_text)
    try:
        return await _speak(state, plan, clone)
    except BaseException:
        if clone is not None:
            clone.remove()
        raise


async def _speak(state: ServerState, plan: SpeechPlan, clone: _ClonePrompt | None) -> Response:
    tts = state.tts
    clone_dict = clone.clone_dict if clone is not None else None
    redact = clone.redact if clone is not None else None

    def map_error(error: BaseException) -> APIError:
        return api_error_from(error, redact=redact, params=_PARAMS)

    arguments = {"speed_ratio": plan.speed, "temperature": plan.temperature}
    try:  # the cheap checks (text, voice, clip length vs context) before the request takes a worker
        await run_in_threadpool(tts.check_request, plan.text, plan.speaker, clone_dict, **arguments)
    except Exception as error:
        raise map_error(error) from error
    media_type = MEDIA_TYPES[plan.fmt]
    rate = output_sample_rate(plan.fmt, state.settings.sample_rate)
    headers = {"X-Sample-Rate": str(rate)}
    if plan.stream_format is None:

        def synthesize(cancel: threading.Event) -> Any:
            waveform, _ = tts(plan.text, plan.speaker, clone_dict, **arguments)
            return waveform

        try:
            waveform = await state.work_queue.run(synthesize)
        except Exception as error:
            raise map_error(error) from error
        finally:
            if clone is not None:
                clone.remove()
        samples = to_samples(waveform)
        content = await run_in_threadpool(encode_audio, samples, SAMPLE_RATE, plan.fmt, state.settings.sample_rate)
        return Response(content, media_type=media_type, headers=headers)

    def produce(emit: Callable[[Any], None], cancel: threading.Event) -> None:
        encoder = StreamEncoder(plan.fmt, SAMPLE_RATE, state.settings.sample_rate)
        chunks = tts.stream(plan.text, plan.speaker, clone_dict, **arguments)
        try:
            for chunk in chunks:
                if cancel.is_set():
                    return
                data = encoder.feed(to_samples(chunk))
                if data:
                    emit(data)
        finally:
            chunks.close()  # stops the TTS language model within a token when we leave early
        tail = encoder.close()
        if tail:
            emit(tail)

    pieces = await primed(state.work_queue.stream(produce), map_error)

    async def audio_stream() -> AsyncIterator[bytes]:
        try:
            async for data in pieces:
                yield data
        except Exception as error:  # the status is sent already: end the body early (the client sees it cut)
            log_stream_failure("speech stream", error)
            raise
        finally:
            await pieces.aclose()
            if clone is not None:
                clone.remove()

    async def event_stream() -> AsyncIterator[bytes]:
        sent = 0
        try:
            async for data in pieces:
                sent += len(data)
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
            yield sse({"type": "speech.audio.done", "response_format": plan.fmt, "sample_rate": rate, "bytes": sent})
        except Exception as error:
            yield sse({"type": "error", **log_stream_failure("speech stream", map_error(error)).body()})
        finally:
            await pieces.aclose()
            if clone is not None:
                clone.remove()

    if plan.stream_format == "sse":
        return StreamingResponse(event_stream(), media_type="text/event-stream", headers=headers)
    return StreamingResponse(audio_stream(), media_type=media_type, headers=headers)
