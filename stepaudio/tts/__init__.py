"""Step-Audio-TTS-3B: text (with instruction tags) and a voice prompt to audio tokens, then to speech."""

from .prompts import (
    KNOWN_INSTRUCTIONS,
    MUSIC_DECODER,
    SPEECH_DECODER,
    TTSRequestPlan,
    build_tts_prompt_ids,
    leading_instruction,
    plan_tts_request,
    system_prompts,
)
from .sampling import RepetitionAwareLogitsProcessor
from .text import check_tts_text, has_speakable_text, split_tts_text

__all__ = [
    "KNOWN_INSTRUCTIONS",
    "MUSIC_DECODER",
    "SPEECH_DECODER",
    "RepetitionAwareLogitsProcessor",
    "TTSRequestPlan",
    "build_tts_prompt_ids",
    "check_tts_text",
    "has_speakable_text",
    "split_tts_text",
    "leading_instruction",
    "plan_tts_request",
    "system_prompts",
]
