"""``ServerSettings``: the served model names, aliases and every limit of the OpenAI-compatible API, checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InvalidArgumentError
from ..validation import check_float, check_int, check_text, describe_value

__all__ = ["DEFAULT_MODEL_ALIASES", "OPENAI_VOICES", "ServerSettings"]

#: The model ids the server lists in ``GET /v1/models``.
CHAT_MODEL = "step-audio-chat"
TTS_MODEL = "step-audio-tts-3b"
#: Listed only when the server has Step-Audio-EditX loaded (``stepaudio serve --editx``).
EDITX_MODEL = "step-audio-editx"

#: OpenAI model names accepted as aliases, so clients with a hard-coded default model work unchanged.
DEFAULT_MODEL_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "step-audio": CHAT_MODEL,
        "step-audio-tts": TTS_MODEL,
        "tts-1": TTS_MODEL,
        "tts-1-hd": TTS_MODEL,
        "gpt-4o-mini-tts": TTS_MODEL,
        "whisper-1": CHAT_MODEL,
        "gpt-4o-transcribe": CHAT_MODEL,
        "gpt-4o-mini-transcribe": CHAT_MODEL,
        "gpt-4o-audio-preview": CHAT_MODEL,
        "gpt-4o-mini-audio-preview": CHAT_MODEL,
    }
)

#: OpenAI's built-in voice names: map them to registered speakers with ``voice_aliases`` for clients that
#: only accept these (e.g. ``voice_aliases=dict.fromkeys(OPENAI_VOICES, "Tingting")``).
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


def _check_name_map(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError.about(name, f"must be a dict of name -> name, got {describe_value(value)}", value)
    checked = {}
    for key, target in value.items():
        checked[check_text(key, f"{name} key")] = check_text(target, f"{name}[{key!r}]")
    return checked


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the OpenAI-compatible server; every value is checked when the object is made.

    Attributes:
        chat_model: id of Step-Audio-Chat in ``/v1/models`` (chat completions and transcriptions).
        tts_model: id of Step-Audio-TTS-3B (``/v1/audio/speech``).
        editx_model: id of Step-Audio-EditX (``/v1/audio/speech`` with ``ref_audio``, ``/v1/audio/edits``),
            served when the app is given an EditX model.
        model_aliases: other accepted model names -> ``chat_model``, ``tts_model`` or ``editx_model``
            (default: OpenAI's names, see :data:`DEFAULT_MODEL_ALIASES`); any other name is answered with 404.
        voice_aliases: other accepted voice names -> a registered speaker (checked against the speakers
            folder by :func:`~stepaudio.server.create_app`).
        api_key: when set, ``/v1/*`` requests need ``Authorization: Bearer <api_key>`` (401 otherwise).
        max_body_bytes: largest request body (413 above it); OpenAI's file limit is 25 MB.
        max_audio_seconds: most seconds of input audio in one request (all chat audio parts together,
            a transcription file, a voice-cloning ``ref_audio``, the clip of an edit).
        max_input_chars: longest ``input`` of ``/v1/audio/speech`` (OpenAI's 4096) and ``ref_text``.
        max_chat_chars: most characters of text in the messages of one chat request.
        default_max_tokens: reply length when a chat request names none.
        max_completion_tokens: largest ``max_tokens`` / ``max_completion_tokens`` a chat request may ask.
        transcription_max_tokens: longest transcript, in tokens.
        temperature, top_p: chat sampling defaults when a request names none.
        workers: model jobs that run at once (each a thread; one per set of models is the safe choice).
        max_queued_requests: requests that may wait for a worker; more are refused with 429.
        sample_rate: sample rate of all audio sent (OpenAI's 24 kHz, which clients such as pipecat assume;
            22050 keeps the TTS's own rate, no resampling) and of raw ``pcm16`` chat input.
        sentence_max_chars: streamed chat audio is spoken sentence by sentence, cut at this length.
        audio_ttl_s: how long an assistant audio id (``message.audio.id``) can be referred to in a later
            request (``expires_at``); its transcript is kept in memory until then.
        max_stored_transcripts: most assistant audio transcripts kept (oldest dropped first).
    """

    chat_model: str = CHAT_MODEL
    tts_model: str = TTS_MODEL
    editx_model: str = EDITX_MODEL
    model_aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    voice_aliases: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None
    max_body_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 120.0
    max_input_chars: int = 4096
    max_chat_chars: int = 32768
    default_max_tokens: int = 512
    max_completion_tokens: int = 2048
    transcription_max_tokens: int = 448
    temperature: float = 0.7
    top_p: float = 0.9
    workers: int = 1
    max_queued_requests: int = 16
    sample_rate: int = 24000
    sentence_max_chars: int = 60
    audio_ttl_s: int = 3600
    max_stored_transcripts: int = 1024

    def __post_init__(self) -> None:
        check_text(self.chat_model, "chat_model")
        check_text(self.tts_model, "tts_model")
        check_text(self.editx_model, "editx_model")
        if self.chat_model == self.tts_model:
            detail = f"must differ from chat_model, got {self.tts_model!r} for both"
            raise InvalidArgumentError.about("tts_model", detail, self.tts_model)
        if self.editx_model in (self.chat_model, self.tts_model):
            detail = f"must differ from chat_model and tts_model, got {self.editx_model!r}"
            raise InvalidArgumentError.about("editx_model", detail, self.editx_model)
        aliases = _check_name_map(self.model_aliases, "model_aliases")
        for alias, target in aliases.items():
            if target not in (self.chat_model, self.tts_model, self.editx_model):
                detail = (
                    f"maps {alias!r} to {target!r}, which is not served; map aliases to "
                    f"{self.chat_model!r}, {self.tts_model!r} or {self.editx_model!r}"
                )
                raise InvalidArgumentError.about("model_aliases", detail, self.model_aliases)
        object.__setattr__(self, "model_aliases", MappingProxyType(aliases))
        object.__setattr__(
            self, "voice_aliases", MappingProxyType(_check_name_map(self.voice_aliases, "voice_aliases"))
        )
        if self.api_key is not None:
            check_text(self.api_key, "api_key")
        check_int(self.max_body_bytes, "max_body_bytes", minimum=1024, hint="25 MiB is OpenAI's file limit")
        check_float(self.max_audio_seconds, "max_audio_seconds", minimum=0, exclusive_minimum=True)
        for name in ("max_input_chars", "max_chat_chars", "default_max_tokens", "max_completion_tokens"):
            check_int(getattr(self, name), name, minimum=1)
        if self.default_max_tokens > self.max_completion_tokens:
            detail = (
                f"must be at most max_completion_tokens ({self.max_completion_tokens}), got {self.default_max_tokens}"
            )
            raise InvalidArgumentError.about("default_max_tokens", detail, self.default_max_tokens)
        check_int(self.transcription_max_tokens, "transcription_max_tokens", minimum=1)
        check_float(self.temperature, "temperature", minimum=0, maximum=2)
        check_float(self.top_p, "top_p", minimum=0, maximum=1, exclusive_minimum=True)
        check_int(self.workers, "workers", minimum=1)
        check_int(self.max_queued_requests, "max_queued_requests", minimum=0, hint="0 refuses a request while busy")
        check_int(self.sample_rate, "sample_rate", minimum=8000, maximum=192000, hint="OpenAI sends 24000")
        check_int(self.sentence_max_chars, "sentence_max_chars", minimum=1)
        check_int(self.audio_ttl_s, "audio_ttl_s", minimum=1)
        check_int(self.max_stored_transcripts, "max_stored_transcripts", minimum=1)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (for logs and ``/health``), without the API key."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "api_key"}
        values["model_aliases"] = dict(self.model_aliases)
        values["voice_aliases"] = dict(self.voice_aliases)
        values["api_key_required"] = self.api_key is not None
        return values
