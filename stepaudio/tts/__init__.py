"""Step-Audio-TTS-3B: text (with instruction tags) and a voice prompt to audio tokens, then to speech.

``from stepaudio.tts import StepAudioTTS`` (and its ``SAMPLE_RATE``, 22050); they are imported on first use,
so that the light parts here (prompts, text checks) do not pull in the models.
"""

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

# Imported on first use: the model pulls in transformers and the CosyVoice decoder.
_LAZY_EXPORTS = {"SAMPLE_RATE": "stepaudio.tts.tts", "StepAudioTTS": "stepaudio.tts.tts"}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stepaudio.tts' has no attribute {name!r}")


__all__ = [
    "KNOWN_INSTRUCTIONS",
    "MUSIC_DECODER",
    "SPEECH_DECODER",
    "RepetitionAwareLogitsProcessor",
    "SAMPLE_RATE",
    "StepAudioTTS",
    "TTSRequestPlan",
    "build_tts_prompt_ids",
    "check_tts_text",
    "has_speakable_text",
    "split_tts_text",
    "leading_instruction",
    "plan_tts_request",
    "system_prompts",
]
