"""Typed events of a realtime session (what ``RealtimeSession.events()`` yields).

Every event is a frozen dataclass with a ``type`` string (the ``"type"`` of its JSON form on the
WebSocket) and :meth:`RealtimeEvent.to_json`.  Audio chunks carry float32 samples; the server sends
them as a JSON header followed by one binary PCM16 message.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "ConversationState",
    "RealtimeEvent",
    "StateChanged",
    "Transcript",
    "ReplyTextDelta",
    "AudioChunk",
    "SpeculationUpdate",
    "BargeIn",
    "TurnMetrics",
    "ErrorEvent",
]


class ConversationState(str, enum.Enum):
    """The controller's four states."""

    SILENCE = "silence"
    USER_SPEAKING = "user_speaking"
    USER_PAUSED = "user_paused"
    BOT_REPLYING = "bot_replying"


@dataclass(frozen=True)
class RealtimeEvent:
    """Base class; ``type`` names the event in its JSON form."""

    type: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable dict (``{"type": ..., fields...}``)."""
        payload = asdict(self)
        for key, value in payload.items():
            if isinstance(value, enum.Enum):
                payload[key] = value.value
        return {"type": self.type, **payload}


@dataclass(frozen=True)
class StateChanged(RealtimeEvent):
    """The controller moved from ``previous`` to ``state`` (``turn`` counts user turns from 1)."""

    type: ClassVar[str] = "state"
    state: ConversationState
    previous: ConversationState
    turn: int


@dataclass(frozen=True)
class Transcript(RealtimeEvent):
    """The transcript of user turn ``turn`` (made in the background after the turn ended)."""

    type: ClassVar[str] = "transcript"
    turn: int
    text: str


@dataclass(frozen=True)
class ReplyTextDelta(RealtimeEvent):
    """A new piece of the reply text of ``turn`` (only for the reply actually being given)."""

    type: ClassVar[str] = "reply_text"
    turn: int
    text: str


@dataclass(frozen=True)
class AudioChunk(RealtimeEvent):
    """A piece of reply speech: mono float32 ``samples`` at ``sample_rate`` (22050 for Step-Audio-TTS).

    ``index`` counts the chunks of the reply; ``segment`` is the index of the piece of reply text the
    chunk speaks (a sentence or clause) and ``segment_text`` that text, so a client can caption what
    it is playing.
    """

    type: ClassVar[str] = "audio"
    turn: int
    index: int
    sample_rate: int
    samples: np.ndarray = field(repr=False, compare=False)
    segment: int = 0
    segment_text: str = ""

    @property
    def seconds(self) -> float:
        """Duration of the chunk."""
        return self.samples.shape[0] / self.sample_rate

    def pcm16(self) -> bytes:
        """The samples as little-endian 16-bit PCM bytes."""
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).astype("<i2").tobytes()

    def to_json(self) -> dict[str, Any]:
        """Header of the chunk (the samples travel separately as binary PCM16)."""
        return {
            "type": self.type,
            "turn": self.turn,
            "index": self.index,
            "sample_rate": self.sample_rate,
            "samples": int(self.samples.shape[0]),
            "segment": self.segment,
            "segment_text": self.segment_text,
        }


@dataclass(frozen=True)
class SpeculationUpdate(RealtimeEvent):
    """A speculative reply was ``started``, ``committed`` or ``discarded`` (``reason`` says why)."""

    type: ClassVar[str] = "speculation"
    turn: int
    action: str
    reason: str
    audio_ids: int


@dataclass(frozen=True)
class BargeIn(RealtimeEvent):
    """The user spoke over reply ``turn``: output stopped; ``played_text`` is what stays in the history."""

    type: ClassVar[str] = "barge_in"
    turn: int
    played_text: str
    played_seconds: float


@dataclass(frozen=True)
class TurnMetrics(RealtimeEvent):
    """Measurements of one finished (or interrupted) reply.

    Attributes:
        end_of_speech_to_first_audio_s: wall time from processing the user's last speech frame to
            the first reply audio chunk (what a user hears as latency, for real-time input).
        end_of_turn_to_first_audio_s: wall time from the end-of-turn decision to the first chunk.
        speculative_started / committed / discarded: speculative replies of this turn.
        committed_audio_chunks: audio chunks the committed speculative reply had ready at commit.
        barge_in: the reply was interrupted.
        session_commit_rate: committed / started over the whole session so far.
        session_barge_ins: interruptions over the whole session so far.
        context_tokens: prompt tokens of the history + current turn used for the reply.
        compression_ratio: audio tokens / transcript tokens of the past user turns in the history.
        streamed_ids_differing: ids of the turn's streamed tokenization that differ from its offline
            tokenization (position by position, plus the length difference); ``None`` without
            ``retokenize_turns`` or before the offline ids arrived.
        retokenize_s: wall time the offline re-tokenization of the turn took (``None`` without it).
    """

    type: ClassVar[str] = "metrics"
    turn: int
    end_of_speech_to_first_audio_s: float | None
    end_of_turn_to_first_audio_s: float | None
    speculative_started: int
    speculative_committed: int
    speculative_discarded: int
    committed_audio_chunks: int
    barge_in: bool
    session_commit_rate: float | None
    session_barge_ins: int
    context_tokens: int
    compression_ratio: float | None
    streamed_ids_differing: int | None = None
    retokenize_s: float | None = None


@dataclass(frozen=True)
class ErrorEvent(RealtimeEvent):
    """Something went wrong; ``code`` is machine readable, ``message`` says what and how to fix it."""

    type: ClassVar[str] = "error"
    code: str
    message: str
