"""Step-Audio-TTS-3B: text (with instruction tags) and a voice prompt to audio tokens, then to speech."""

from .prompts import (
    MUSIC_DECODER,
    SPEECH_DECODER,
    TTSRequestPlan,
    build_tts_prompt_ids,
    leading_instruction,
    plan_tts_request,
    system_prompts,
)
from .sampling import RepetitionAwareLogitsProcessor

__all__ = [
    "MUSIC_DECODER",
    "SPEECH_DECODER",
    "RepetitionAwareLogitsProcessor",
    "TTSRequestPlan",
    "build_tts_prompt_ids",
    "leading_instruction",
    "plan_tts_request",
    "system_prompts",
]
