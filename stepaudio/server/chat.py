"""``POST /v1/chat/completions``: Step-Audio-Chat with text and audio in, text and (optionally) speech out.

Messages: roles ``system`` / ``developer`` (both the system prompt), ``user``, ``assistant``; content a
string or a list of ``{"type": "text", "text": ...}`` and ``{"type": "input_audio", "input_audio":
{"data": <base64>, "format": "wav" | "mp3" | "flac" | "ogg" | "opus" | "pcm16"}}`` parts.  An earlier
spoken reply can be referred to as ``{"role": "assistant", "audio": {"id": "audio_..."}}`` until it
expires (its transcript is used).

``modalities: ["text", "audio"]`` with ``audio: {"voice", "format"}`` speaks the reply: the response's
``message.audio`` holds ``{id, data (base64), transcript, expires_at}`` and ``message.content`` is null,
as with OpenAI.  With ``stream: true`` the reply comes as ``chat.completion.chunk`` events: text in
``delta.content`` (text only) or ``delta.audio.transcript`` (with audio), audio in ``delta.audio.data``
(consecutive pieces of one stream in the requested format; sentences are spoken as soon as they are
complete), then a chunk with ``finish_reason``, a usage chunk when ``stream_options.include_usage``,
and ``data: [DONE]``.

Generation: ``max_completion_tokens`` / ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
``seed`` (best effort: seeds torch before the job).  Not supported, refused with 400: tools / function
calls, ``n`` > 1, ``stop``, ``logprobs``, non-zero penalties, a non-text ``response_format``, image or
file parts.
"""

from __future__ import annotations

import base64
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from transformers import TextStreamer

from ..llm.text_tokenizer import EOT_ID
from ..pipeline import speak_reply
from ..realtime.sentences import SentenceStream
from ..tts.text import has_speakable_text
from ..tts.tts import SAMPLE_RATE
from .audio_formats import CHAT_AUDIO_FORMATS, INPUT_AUDIO_FORMATS, StreamEncoder, decode_audio, decode_base64
from .audio_formats import encode_audio as encode_whole
from .common import (
    log_stream_failure,
    parse_model,
    primed,
    read_json,
    request_kind,
    sse,
    to_samples,
    unsupported_media_type,
)
from .errors import APIError, api_error_from
from .models import resolve_model
from .state import ServerState, State
from .work_queue import JobCancelled

logger = logging.getLogger(__name__)

__all__ = ["ChatRequest", "ReplyStreamer", "router"]

router = APIRouter()

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ChatRequest(BaseModel):
    """The fields of a chat completion request (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Any]
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None


@dataclass
class ChatPlan:
    """A checked request."""

    model: str
    messages: list[dict[str, Any]]
    generation: dict[str, Any]
    audio_out: bool
    voice: str | None
    audio_format: str | None
    stream: bool
    include_usage: bool
    seed: int | None
    audio_seconds: float = 0.0


class ReplyStreamer(TextStreamer):
    """A transformers streamer for ``StepAudioChat.__call__``: counts tokens, hands out text, stops on request.

    Args:
        tokenizer: the chat model's text tokenizer.
        should_stop: checked at every token; when true, generation is aborted (:class:`JobCancelled`).
        on_text: receives the reply text piece by piece (whole words / characters), if given.
    """

    def __init__(self, tokenizer: Any, should_stop: Callable[[], bool], on_text: Callable[[str], None] | None = None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.should_stop = should_stop
        self.on_text = on_text
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.stopped = False
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.should_stop():
            raise JobCancelled("the client went away")
        if value.dim() > 1:
            value = value[0]
        if not self._prompt_seen:
            self._prompt_seen = True
            self.prompt_tokens = int(value.numel())
            super().put(value)  # skipped as the prompt
            return
        ended = value == EOT_ID
        if bool(ended.any()):
            self.stopped = True
            value = value[~ended]
        self.completion_tokens += int(value.numel())
        if value.numel():
            super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text and self.on_text is not None:
            self.on_text(text)

    @property
    def finish_reason(self) -> str:
        return "stop" if self.stopped else "length"

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


# ---------------------------------------------------------------------------------------------- checks
def _unsupported(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_parameter")


def _check_options(state: ServerState, body: ChatRequest) -> tuple[dict[str, Any], int | None]:
    """Generation settings of the request (``max_new_tokens``, sampling) and its seed."""
    settings = state.settings
    if body.n not in (None, 1):
        raise _unsupported("n", f"n must be 1 (one reply per request), got {body.n}")
    if body.stop not in (None, "", []):
        raise _unsupported("stop", "stop sequences are not supported by this server; leave stop out")
    if body.tools or body.functions:
        raise _unsupported("tools", "tools / function calling are not supported by Step-Audio-Chat; leave tools out")
    if body.tool_choice not in (None, "none", "auto"):
        raise _unsupported("tool_choice", "tool_choice needs tools, which this server does not support")
    if body.response_format is not None and body.response_format.get("type", "text") != "text":
        raise _unsupported("response_format", "only response_format {'type': 'text'} is supported")
    if body.logprobs:
        raise _unsupported("logprobs", "logprobs are not supported by this server")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise _unsupported(name, f"{name} is not supported by this server; leave it out or send 0")
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_new_tokens = settings.default_max_tokens if asked is None else asked
    if not 1 <= max_new_tokens <= settings.max_completion_tokens:
        raise APIError(
            400,
            f"{param} must be from 1 to {settings.max_completion_tokens} on this server, got {max_new_tokens}",
            param=param,
            code="invalid_value",
        )
    defaults = state.chat_defaults
    temperature = defaults["temperature"] if body.temperature is None else body.temperature
    if not 0 <= temperature <= 2:
        raise APIError(
            400, f"temperature must be from 0 to 2, got {temperature}", param="temperature", code="invalid_value"
        )
    top_p = defaults["top_p"] if body.top_p is None else body.top_p
    if not 0 < top_p <= 1:
        raise APIError(400, f"top_p must be above 0 and at most 1, got {top_p}", param="top_p", code="invalid_value")
    generation: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "top_p": float(top_p)}
    if temperature == 0:
        generation.update(do_sample=False, temperature=1.0)
    else:
        generation.update(do_sample=True, temperature=float(temperature))
    return generation, body.seed


def _check_output(state: ServerState, body: ChatRequest) -> tuple[bool, str | None, str | None]:
    """``(audio out?, voice, format)`` from ``modalities`` and ``audio``."""
    modalities = body.modalities or ["text"]
    unknown = [value for value in modalities if value not in ("text", "audio")]
    if unknown:
        raise APIError(
            400, f"modalities may hold 'text' and 'audio', got {unknown[0]!r}", param="modalities", code="invalid_value"
        )
    if "audio" not in modalities:
        return False, None, None
    if body.audio is None:
        raise APIError(
            400,
            "modalities includes 'audio': give audio: {'voice': <voice>, 'format': <format>}",
            param="audio",
            code="missing_required_parameter",
        )
    fmt = body.audio.get("format")
    if fmt not in CHAT_AUDIO_FORMATS:
        raise APIError(
            400,
            f"audio.format {fmt!r} is not supported; use one of {', '.join(CHAT_AUDIO_FORMATS)}",
            param="audio.format",
            code="unsupported_format",
        )
    if body.stream and fmt == "flac":
        raise APIError(
            400,
            "audio.format 'flac' cannot be streamed (its header holds the length); stream pcm16, wav, mp3 or opus",
            param="audio.format",
            code="unsupported_format",
        )
    if "voice" not in body.audio:
        raise APIError(
            400, "missing required parameter: audio.voice", param="audio.voice", code="missing_required_parameter"
        )
    return True, state.resolve_voice(body.audio["voice"], "audio.voice"), fmt


def _convert_part(state: ServerState, part: Any, where: str, budget: list[float], chars: list[int]) -> dict[str, Any]:
    settings = state.settings
    if isinstance(part, str):
        chars[0] += len(part)
        return {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise APIError(400, f"{where} must be a content part object", param=where, code="invalid_type")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise APIError(400, f"{where}.text must be a string", param=f"{where}.text", code="invalid_type")
        chars[0] += len(text)
        return {"type": "text", "text": text}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or "data" not in audio:
            raise APIError(
                400,
                f"{where}.input_audio must be {{'data': <base64>, 'format': 'wav'}}",
                param=f"{where}.input_audio",
                code="invalid_value",
            )
        declared = audio.get("format")
        if declared is not None and declared not in INPUT_AUDIO_FORMATS:
            raise APIError(
                400,
                f"{where}.input_audio.format {declared!r} is not supported; use one of "
                f"{', '.join(INPUT_AUDIO_FORMATS)}",
                param=f"{where}.input_audio.format",
                code="unsupported_format",
            )
        raw = decode_base64(audio["data"], f"{where}.input_audio.data")
        clip = decode_audio(
            raw,
            f"{where}.input_audio.data",
            max_seconds=budget[0],
            pcm_rate=settings.sample_rate,
            declared_format=declared,
        )
        budget[0] -= clip.seconds
        return {"type": "audio", "audio": clip.samples, "sample_rate": clip.sample_rate}
    if kind in ("image_url", "file", "input_image", "video_url"):
        raise APIError(
            400,
            f"{where}: {kind} parts are not supported; Step-Audio-Chat takes text and input_audio",
            param=f"{where}.type",
            code="unsupported_content",
        )
    raise APIError(
        400,
        f"{where}: unknown content part type {kind!r}; use 'text' or 'input_audio'",
        param=f"{where}.type",
        code="invalid_value",
    )


def _convert_messages(state: ServerState, messages: list[Any]) -> tuple[list[dict[str, Any]], float]:
    """The library's messages (audio decoded to samples) and the seconds of audio in them."""
    settings = state.settings
    if not messages:
        raise APIError(400, "messages must not be empty", param="messages", code="invalid_value")
    budget = [settings.max_audio_seconds]
    chars = [0]
    converted = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise APIError(400, f"{where} must be an object with role and content", param=where, code="invalid_type")
        role = message.get("role")
        if role in ("tool", "function"):
            raise _unsupported(f"{where}.role", f"{where}: {role} messages are not supported (no tool calling)")
        if role not in _ROLES:
            raise APIError(
                400,
                f"{where}.role {role!r} is not one of system, developer, user, assistant",
                param=f"{where}.role",
                code="invalid_value",
            )
        if message.get("tool_calls") or message.get("function_call"):
            raise _unsupported(f"{where}.tool_calls", f"{where}: tool calls are not supported")
        content = message.get("content")
        if content is None and role == "assistant" and isinstance(message.get("audio"), dict):
            audio_id = message["audio"].get("id")
            transcript = state.transcripts.get(audio_id) if isinstance(audio_id, str) else None
            if transcript is None:
                raise APIError(
                    400,
                    f"{where}.audio.id {audio_id!r} is unknown or expired; send the reply's text as content instead",
                    param=f"{where}.audio.id",
                    code="invalid_value",
                )
            content = transcript
        if content is None:
            raise APIError(
                400,
                f"missing required parameter: {where}.content",
                param=f"{where}.content",
                code="missing_required_parameter",
            )
        if isinstance(content, str):
            chars[0] += len(content)
            parts: Any = content
        elif isinstance(content, list):
            parts = [
                _convert_part(state, part, f"{where}.content[{i}]", budget, chars) for i, part in enumerate(content)
            ]
        else:
            raise APIError(
                400,
                f"{where}.content must be a string or a list of parts",
                param=f"{where}.content",
                code="invalid_type",
            )
        converted.append({"role": _ROLES[role], "content": parts})
    if chars[0] > settings.max_chat_chars:
        raise APIError(
            400,
            f"the messages hold {chars[0]} characters of text; this server takes at most {settings.max_chat_chars}",
            param="messages",
            code="string_above_max_length",
        )
    return converted, settings.max_audio_seconds - budget[0]


def _plan(state: ServerState, body: ChatRequest) -> ChatPlan:
    model = resolve_model(state.settings, body.model, "chat")
    generation, seed = _check_options(state, body)
    audio_out, voice, fmt = _check_output(state, body)
    messages, seconds = _convert_messages(state, body.messages)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return ChatPlan(model, messages, generation, audio_out, voice, fmt, bool(body.stream), include_usage, seed, seconds)


# ---------------------------------------------------------------------------------------------- route
@dataclass
class _Reply:
    text: str
    streamer: ReplyStreamer
    waveform: Any = None


def _speak_failed(error: BaseException) -> APIError:
    """The 500 for a failure to speak the reply (the model wrote the text: not the client's fault)."""
    logger.error("speaking the chat reply failed", exc_info=error)
    return APIError(500, f"speaking the reply failed ({type(error).__name__}: {error})", code="model_error")


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request, state: State) -> Response:
    if request_kind(request) != "json":
        raise unsupported_media_type(request, "application/json")
    body = parse_model(ChatRequest, await read_json(request))
    plan = await run_in_threadpool(_plan, state, body)
    try:  # message shape and context length, before the request takes a worker
        await run_in_threadpool(state.llm.check_prompt, plan.messages)
    except Exception as error:
        raise api_error_from(error, param="messages") from error
    completion_id = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    if plan.stream:
        return await _stream(state, plan, completion_id, created)
    llm, tts = state.llm, state.tts

    def reply(cancel: threading.Event) -> _Reply:
        if plan.seed is not None:
            torch.manual_seed(plan.seed)
        streamer = ReplyStreamer(llm.tokenizer, cancel.is_set)
        text = llm(plan.messages, streamer=streamer, **plan.generation)
        result = _Reply(text, streamer)
        if plan.audio_out:
            try:
                result.waveform, _ = speak_reply(tts, text, plan.voice)
            except (APIError, JobCancelled):
                raise
            except Exception as error:
                raise _speak_failed(error) from error
        return result

    try:
        result = await state.work_queue.run(reply)
    except Exception as error:
        raise api_error_from(error, param="messages") from error
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if plan.audio_out:
        data = await run_in_threadpool(
            encode_whole, to_samples(result.waveform), SAMPLE_RATE, plan.audio_format, state.settings.sample_rate
        )
        audio_id, expires_at = state.transcripts.add(result.text)
        message["content"] = None
        message["audio"] = {
            "id": audio_id,
            "data": base64.b64encode(data).decode("ascii"),
            "expires_at": expires_at,
            "transcript": result.text,
        }
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": plan.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "finish_reason": result.streamer.finish_reason, "logprobs": None}
            ],
            "usage": result.streamer.usage(),
        }
    )


_GENERATION_DONE = object()


async def _stream(state: ServerState, plan: ChatPlan, completion_id: str, created: int) -> Response:
    llm, tts = state.llm, state.tts
    settings = state.settings

    def produce(emit: Callable[[Any], None], cancel: threading.Event) -> None:
        if plan.seed is not None:
            torch.manual_seed(plan.seed)
        if not plan.audio_out:
            streamer = ReplyStreamer(llm.tokenizer, cancel.is_set, lambda text: emit(("text", text)))
            text = llm(plan.messages, streamer=streamer, **plan.generation)
            emit(("end", _Reply(text, streamer)))
            return
        # The chat model generates on its own thread while this one speaks each finished sentence.
        pieces: queue.Queue[Any] = queue.Queue()
        stop_chat = threading.Event()
        streamer = ReplyStreamer(llm.tokenizer, lambda: stop_chat.is_set() or cancel.is_set(), pieces.put)
        outcome: dict[str, Any] = {}

        def generate() -> None:
            try:
                outcome["text"] = llm(plan.messages, streamer=streamer, **plan.generation)
            except BaseException as error:
                outcome["error"] = error
            finally:
                pieces.put(_GENERATION_DONE)

        encoder = StreamEncoder(plan.audio_format or "pcm16", SAMPLE_RATE, settings.sample_rate)
        splitter = SentenceStream(settings.sentence_max_chars)

        def speak(segment: str) -> None:
            if not has_speakable_text(segment):
                return
            try:
                chunks = tts.stream(segment, plan.voice)
                try:
                    for chunk in chunks:
                        if cancel.is_set():
                            raise JobCancelled("the client went away")
                        data = encoder.feed(to_samples(chunk))
                        if data:
                            emit(("audio", data))
                finally:
                    chunks.close()
            except (APIError, JobCancelled):
                raise
            except Exception as error:
                raise _speak_failed(error) from error

        worker = threading.Thread(target=generate, name="stepaudio-api-chat", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not _GENERATION_DONE:
                emit(("text", piece))
                for segment in splitter.feed(piece):
                    speak(segment)
            if "error" in outcome:
                raise outcome["error"]
            for segment in splitter.close():
                speak(segment)
            tail = encoder.close()
            if tail:
                emit(("audio", tail))
            emit(("end", _Reply(outcome["text"], streamer)))
        finally:
            stop_chat.set()
            worker.join()

    def map_error(error: BaseException) -> APIError:
        return api_error_from(error, param="messages")

    pieces = await primed(state.work_queue.stream(produce), map_error)
    audio_id = state.transcripts.new_id() if plan.audio_out else None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": plan.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }
        )

    async def events() -> AsyncIterator[bytes]:
        try:
            yield chunk({"role": "assistant", "content": None if plan.audio_out else ""})
            async for kind, value in pieces:
                if kind == "text":
                    if plan.audio_out:
                        yield chunk({"audio": {"id": audio_id, "transcript": value}})
                    else:
                        yield chunk({"content": value})
                elif kind == "audio":
                    yield chunk({"audio": {"id": audio_id, "data": base64.b64encode(value).decode("ascii")}})
                else:
                    reply: _Reply = value
                    if plan.audio_out:
                        _, expires_at = state.transcripts.add(reply.text, audio_id)
                        yield chunk({"audio": {"expires_at": expires_at}})  # as OpenAI: the last one holds only this
                    yield chunk({}, reply.streamer.finish_reason)
                    if plan.include_usage:
                        yield sse(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": plan.model,
                                "system_fingerprint": None,
                                "choices": [],
                                "usage": reply.streamer.usage(),
                            }
                        )
        except Exception as error:
            yield sse(log_stream_failure("chat stream", map_error(error)).body())
        finally:
            await pieces.aclose()
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
