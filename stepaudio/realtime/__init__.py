"""Real-time voice interaction over a :class:`~stepaudio.StepAudio` pipeline.

* :class:`RealtimeSession` -- push microphone audio, ``async for`` typed events.
* :class:`TurnController` -- the Silence / UserSpeaking / UserPaused / BotReplying state machine with
  speculative replies and barge-in; the one owner of turn state, fed typed input events
  (:mod:`stepaudio.realtime.inputs`) from one :class:`Inbox`.
* :class:`ModelWorkers` / :class:`ManualWorkers` -- where model work runs (threads / only when told).
* :class:`ConversationContext` -- history as text under a token budget.
* :class:`SileroVAD` / :class:`ScriptedVAD` -- voice activity detection.
* ``stepaudio serve-realtime`` (:mod:`stepaudio.realtime.server`) -- WebSocket server + browser page.
"""

from __future__ import annotations

from .config import FRAME_SAMPLES, SAMPLE_RATE, RealtimeConfig
from .context import ChatTranscriber, ConversationContext, Transcriber
from .controller import TurnController
from .events import (
    AudioChunk,
    BargeIn,
    ConversationState,
    ErrorEvent,
    RealtimeEvent,
    ReplyTextDelta,
    SpeculationUpdate,
    StateChanged,
    Transcript,
    TurnMetrics,
)
from .inputs import Inbox
from .session import RealtimeSession
from .vad import ScriptedVAD, SileroVAD, SpeechGate, VoiceActivityDetector
from .workers import ManualWorkers, ModelWorkers

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioChunk",
    "BargeIn",
    "ChatTranscriber",
    "ConversationContext",
    "ConversationState",
    "ErrorEvent",
    "Inbox",
    "ManualWorkers",
    "ModelWorkers",
    "RealtimeConfig",
    "RealtimeEvent",
    "RealtimeSession",
    "ReplyTextDelta",
    "ScriptedVAD",
    "SileroVAD",
    "SpeculationUpdate",
    "SpeechGate",
    "StateChanged",
    "Transcript",
    "Transcriber",
    "TurnController",
    "TurnMetrics",
    "VoiceActivityDetector",
]
