"""``ServerState``: what every route shares (the loaded pipeline, the settings, the work queue, audio ids)."""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from ..tts.prompts import MUSIC_INSTRUCTIONS
from .errors import APIError
from .settings import ServerSettings
from .work_queue import WorkQueue

__all__ = ["AudioTranscripts", "ServerState", "State", "get_state"]


class AudioTranscripts:
    """Transcripts of the assistant audio the server produced, by audio id, until they expire.

    A later chat request may refer to an earlier reply by ``{"role": "assistant", "audio": {"id": ...}}``
    (as with OpenAI); the model then sees the reply's transcript.  Nothing but the text is kept.
    """

    def __init__(self, ttl_s: int, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        """A fresh audio id (``audio_`` + 24 hex digits)."""
        return f"audio_{secrets.token_hex(12)}"

    def add(self, transcript: str, audio_id: str | None = None) -> tuple[str, int]:
        """Store ``transcript`` (under ``audio_id`` or a new id); returns ``(audio id, expires_at unix seconds)``."""
        audio_id = audio_id or self.new_id()
        expires_at = int(time.time()) + self.ttl_s
        with self._lock:
            self._entries[audio_id] = (expires_at, transcript)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return audio_id, expires_at

    def get(self, audio_id: str) -> str | None:
        """The transcript of a live audio id, else ``None`` (unknown or expired)."""
        with self._lock:
            entry = self._entries.get(audio_id)
            if entry is None:
                return None
            if entry[0] < time.time():
                del self._entries[audio_id]
                return None
            return entry[1]


@dataclass
class ServerState:
    """The shared state of one app (``app.state.stepaudio``).

    ``editx`` is the :class:`~stepaudio.editx.StepAudioEditX` the app serves as ``settings.editx_model``,
    or ``None`` when it has none (its requests are then answered 404).
    """

    pipeline: Any
    settings: ServerSettings
    work_queue: WorkQueue
    transcripts: AudioTranscripts
    editx: Any = None
    created: int = field(default_factory=lambda: int(time.time()))

    # The pipeline's parts (``pipeline.tts`` / ``pipeline.tokenizer`` are newer names of the same objects).
    @property
    def llm(self) -> Any:
        return self.pipeline.llm

    @property
    def tts(self) -> Any:
        return self.pipeline.decoder

    @property
    def tokenizer(self) -> Any:
        return self.pipeline.encoder

    def served_models(self) -> list[str]:
        """The model ids this app serves: the chat model, the TTS and, when loaded, EditX."""
        names = [self.settings.chat_model, self.settings.tts_model]
        return names + [self.settings.editx_model] if self.editx is not None else names

    @property
    def chat_defaults(self) -> dict[str, Any]:
        """Sampling defaults: the pipeline's ``generation`` settings where it has them, else the server's."""
        generation = getattr(self.pipeline, "generation", None) or {}
        return {
            "temperature": generation.get("temperature", self.settings.temperature),
            "top_p": generation.get("top_p", self.settings.top_p),
        }

    # ------------------------------------------------------------------------------------- voices
    def speaker_ids(self) -> list[str]:
        speakers = getattr(self.tts, "speakers", None)
        return list(speakers.speaker_ids) if speakers is not None else []

    def voices(self) -> list[dict[str, Any]]:
        """Registered voices (style prompts such as ``TingtingRAP`` are listed as styles of ``Tingting``)."""
        ids = self.speaker_ids()
        styles = {f"{base}{style}": (base, style) for base in ids for style in MUSIC_INSTRUCTIONS}
        listed = []
        for speaker in ids:
            if speaker in styles:
                continue
            voice_styles = sorted(style for style in MUSIC_INSTRUCTIONS if f"{speaker}{style}" in ids)
            listed.append({"id": speaker, "object": "voice", "styles": voice_styles})
        aliases = [
            {"id": alias, "object": "voice", "alias_of": target}
            for alias, target in self.settings.voice_aliases.items()
        ]
        return listed + aliases

    def resolve_voice(self, voice: object, param: str = "voice") -> str:
        """A registered speaker id for ``voice`` (a name or ``{"id": name}``, aliases followed), else 400."""
        if isinstance(voice, dict):
            voice = voice.get("id")
        if not isinstance(voice, str) or not voice.strip():
            raise APIError(400, f"{param} must be the name of a voice", param=param, code="invalid_value")
        speaker = self.settings.voice_aliases.get(voice, voice)
        ids = self.speaker_ids()
        if speaker in ids:
            return speaker
        if not ids:
            raise APIError(
                400,
                f"unknown voice {voice!r}: this server has no registered voices; clone one per request with ref_audio "
                "(the clip, base64 or an upload) and ref_text (its transcript)",
                param=param,
                code="voice_not_found",
            )
        names = [entry["id"] for entry in self.voices()]
        raise APIError(
            400,
            f"unknown voice {voice!r}; this server has {', '.join(names)} (GET /v1/audio/voices), or clone a voice "
            "with ref_audio + ref_text",
            param=param,
            code="voice_not_found",
        )

    # ------------------------------------------------------------------------------------- access
    def check_api_key(self, request: Request) -> None:
        """401 unless ``Authorization: Bearer <api_key>`` matches (when the server has an API key)."""
        expected = self.settings.api_key
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), expected):
            raise APIError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )


def get_state(request: Request) -> ServerState:
    """The route dependency: the app's :class:`ServerState`, after the API key check."""
    state: ServerState = request.app.state.stepaudio
    state.check_api_key(request)
    return state


#: Route parameter type: ``state: State`` gives the app's :class:`ServerState` after the API key check.
State = Annotated[ServerState, Depends(get_state)]
