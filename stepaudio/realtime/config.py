"""``RealtimeConfig``: every threshold and limit of the realtime voice layer in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError, PromptError, RealtimeConfigError
from ..llm.prompts import DEFAULT_VOICE_SYSTEM_PROMPT
from ..validation import check_bool, check_float, check_int, check_safe_name, check_text

__all__ = ["RealtimeConfig", "SAMPLE_RATE", "FRAME_SAMPLES"]

#: Rate of the audio the controller works on (the microphone is resampled to it).
SAMPLE_RATE = 16000
#: Samples per VAD frame (silero-vad takes exactly 512 samples at 16 kHz: 32 ms).
FRAME_SAMPLES = 512
#: Longest duration setting accepted (one minute of audio).
MAX_MILLISECONDS = 60_000
#: Fewest prompt tokens the chat model must have room for after the reply budget (a system prompt and a turn).
MIN_PROMPT_TOKENS = 64


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
        stream_gain: scale the streamed microphone audio by the tokenizer's causal gain (0.999 over the
            turn's running peak; see ``StepAudioTokenizer.stream(causal_gain=True)``), so a quiet
            microphone gives codes close to the offline, peak-normalised ones.
        retokenize_turns: at the end of each user turn, tokenize its audio again offline with the exact
            energy normalisation; the reply (unless a speculative one is committed) and the history use
            those ids, identical to what the offline path makes of the same audio.
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
    stream_gain: bool = True
    retokenize_turns: bool = True
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
        """Raise :class:`RealtimeConfigError` (a usage error) naming the first out-of-range or inconsistent setting."""
        try:
            check_float(self.vad_threshold, "vad_threshold", minimum=0.0, maximum=1.0, exclusive_minimum=True)
            check_float(self.vad_negative_threshold, "vad_negative_threshold", minimum=0.0, maximum=self.vad_threshold)
            for name in ("min_speech_ms", "barge_in_ms", "pause_ms", "end_of_turn_ms"):
                check_int(getattr(self, name), name, minimum=1, maximum=MAX_MILLISECONDS, hint="milliseconds")
            check_int(self.preroll_ms, "preroll_ms", minimum=0, maximum=MAX_MILLISECONDS, hint="milliseconds")
            check_safe_name(self.speaker, "speaker")
            if self.system_prompt is not None:
                check_text(self.system_prompt, "system_prompt")
            check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
            check_int(self.transcript_max_new_tokens, "transcript_max_new_tokens", minimum=1)
            check_float(self.temperature, "temperature", minimum=0.0, exclusive_minimum=True)
            check_float(self.top_p, "top_p", minimum=0.0, maximum=1.0, exclusive_minimum=True)
            check_int(self.max_sentence_chars, "max_sentence_chars", minimum=1)
            check_int(self.context_token_budget, "context_token_budget", minimum=16, hint="tokens of history")
            check_float(self.tokenizer_right_context_s, "tokenizer_right_context_s", minimum=0, exclusive_minimum=True)
            for name in ("speculative", "do_sample", "transcribe_history", "stream_gain", "retokenize_turns"):
                check_bool(getattr(self, name), name)
        except InvalidArgumentError as error:
            raise RealtimeConfigError(str(error), name=error.name, value=error.value) from None
        if not isinstance(self.chat_kwargs, dict):
            raise RealtimeConfigError(f"chat_kwargs must be a dict, got {type(self.chat_kwargs).__name__}")
        if self.end_of_turn_ms <= self.pause_ms:
            raise RealtimeConfigError(
                f"end_of_turn_ms ({self.end_of_turn_ms}) must be longer than pause_ms ({self.pause_ms}): "
                "a turn pauses before it ends",
                name="end_of_turn_ms",
                value=self.end_of_turn_ms,
            )

    def check_models(self, pipeline: Any) -> int:
        """Check the settings against the loaded models (when a session starts, before any audio).

        Returns:
            The longest prompt the chat model can take with room for the reply
            (``max_seq_len - max_new_tokens``).

        Raises:
            RealtimeConfigError: the reply budget leaves fewer than :data:`MIN_PROMPT_TOKENS` prompt tokens
                in the chat model's ``max_seq_len``, or the TTS speakers folder does not register ``speaker``.
        """
        max_prompt_tokens = pipeline.llm.max_seq_len - self.max_new_tokens
        if max_prompt_tokens < MIN_PROMPT_TOKENS:
            raise RealtimeConfigError(
                f"max_new_tokens {self.max_new_tokens} leaves {max_prompt_tokens} prompt tokens in the chat "
                f"model's max_seq_len {pipeline.llm.max_seq_len}; at least {MIN_PROMPT_TOKENS} are needed: "
                "lower max_new_tokens",
                name="max_new_tokens",
                value=self.max_new_tokens,
            )
        try:
            pipeline.tts.check_speaker(self.speaker)
        except (PromptError, InvalidArgumentError) as error:
            raise RealtimeConfigError(f"speaker: {error}", name="speaker", value=self.speaker) from None
        return max_prompt_tokens

    @staticmethod
    def frames(milliseconds: int) -> int:
        """Number of whole 32 ms frames that cover ``milliseconds`` (at least one)."""
        return max(1, -(-milliseconds * SAMPLE_RATE // (1000 * FRAME_SAMPLES)))
