"""``RealtimeConfig``: every threshold and limit of the realtime voice layer in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RealtimeConfigError
from ..llm.prompts import DEFAULT_VOICE_SYSTEM_PROMPT

__all__ = ["RealtimeConfig", "SAMPLE_RATE", "FRAME_SAMPLES"]

#: Rate of the audio the controller works on (the microphone is resampled to it).
SAMPLE_RATE = 16000
#: Samples per VAD frame (silero-vad takes exactly 512 samples at 16 kHz: 32 ms).
FRAME_SAMPLES = 512


@dataclass
class RealtimeConfig:
    """Settings of a :class:`~stepaudio.realtime.RealtimeSession` (all durations in milliseconds of audio).

    Attributes:
        vad_threshold: speech probability at or above which a frame counts as speech.
        vad_negative_threshold: probability below which a frame counts as silence (between the two
            thresholds a frame keeps the previous decision: hysteresis).
        min_speech_ms: speech must last this long to start a user turn or to resume a paused one.
        barge_in_ms: speech must last this long during a bot reply to interrupt it (a little longer
            than ``min_speech_ms`` so that a cough or the bot's own echo does not cut the reply).
        pause_ms: silence after speech that makes the turn *paused*: a speculative reply is started.
        end_of_turn_ms: silence after speech that ends the user turn (must exceed ``pause_ms``).
        preroll_ms: audio before the detected speech start that is still fed to the tokenizer.
        speculative: start replies speculatively at pauses (off: generate only at the end of turn).
        tokenizer_right_context_s: vq06 right context of the streaming tokenizer; it bounds how long
            after the end of speech the tokens cover all of it (see ``StepAudioTokenizer.stream``).
        speaker: TTS voice of the replies.
        system_prompt: system prompt of the chat model.
        max_new_tokens, temperature, top_p, do_sample: reply generation settings.
        max_sentence_chars: reply text is cut into TTS segments at sentence ends, or at clause breaks
            once a segment is this long (shorter segments: first audio sooner).
        context_token_budget: prompt budget of the history; the oldest turns are evicted beyond it.
        transcribe_history: replace past user audio by its transcript (the chat model with the ASR
            instruction, unless another transcriber is given).
        transcript_max_new_tokens: length limit of one transcript.
        chat_kwargs: extra keyword arguments for ``StepAudioChat.stream``.
    """

    vad_threshold: float = 0.5
    vad_negative_threshold: float = 0.35
    min_speech_ms: int = 96
    barge_in_ms: int = 192
    pause_ms: int = 200
    end_of_turn_ms: int = 600
    preroll_ms: int = 192
    speculative: bool = True
    tokenizer_right_context_s: float = 0.3
    speaker: str = "Tingting"
    system_prompt: str | None = DEFAULT_VOICE_SYSTEM_PROMPT
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    do_sample: bool = True
    max_sentence_chars: int = 60
    context_token_budget: int = 3000
    transcribe_history: bool = True
    transcript_max_new_tokens: int = 128
    chat_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RealtimeConfigError` naming the first inconsistent setting."""
        if not 0.0 < self.vad_threshold <= 1.0:
            raise RealtimeConfigError(f"vad_threshold must be in (0, 1]; got {self.vad_threshold}")
        if not 0.0 <= self.vad_negative_threshold <= self.vad_threshold:
            raise RealtimeConfigError(
                f"vad_negative_threshold must be in [0, vad_threshold={self.vad_threshold}]; "
                f"got {self.vad_negative_threshold}"
            )
        for name in ("min_speech_ms", "barge_in_ms", "pause_ms", "end_of_turn_ms"):
            if getattr(self, name) <= 0:
                raise RealtimeConfigError(
                    f"{name} must be a positive number of milliseconds; got {getattr(self, name)}"
                )
        if self.preroll_ms < 0:
            raise RealtimeConfigError(f"preroll_ms must be >= 0; got {self.preroll_ms}")
        if self.end_of_turn_ms <= self.pause_ms:
            raise RealtimeConfigError(
                f"end_of_turn_ms ({self.end_of_turn_ms}) must be longer than pause_ms ({self.pause_ms}): "
                "a turn pauses before it ends"
            )
        if self.max_new_tokens < 1 or self.transcript_max_new_tokens < 1:
            raise RealtimeConfigError("max_new_tokens and transcript_max_new_tokens must be at least 1")
        if self.max_sentence_chars < 1:
            raise RealtimeConfigError(f"max_sentence_chars must be at least 1; got {self.max_sentence_chars}")
        if self.context_token_budget < 16:
            raise RealtimeConfigError(
                f"context_token_budget must be at least 16 tokens; got {self.context_token_budget}"
            )
        if self.tokenizer_right_context_s <= 0:
            raise RealtimeConfigError(
                f"tokenizer_right_context_s must be positive; got {self.tokenizer_right_context_s}"
            )

    @staticmethod
    def frames(milliseconds: int) -> int:
        """Number of whole 32 ms frames that cover ``milliseconds`` (at least one)."""
        return max(1, -(-milliseconds * SAMPLE_RATE // (1000 * FRAME_SAMPLES)))
