"""stepaudio: inference for StepFun's Step-Audio that loads the official checkpoints unchanged.

Public API (upstream call shapes kept)::

    from stepaudio import StepAudioChat
    chat = StepAudioChat("Step-Audio-Chat")
    chat([{"role": "user", "content": "Hello"}])

    from stepaudio import ModelSettings, load_pipeline
    pipeline = load_pipeline("models", ModelSettings(device="cuda"))   # the three official folders in models/
    text, wav, sample_rate = pipeline(messages, "Tingting")

Importing the package registers the native Step-1 model with transformers' Auto classes.
"""

from __future__ import annotations

from . import llm  # noqa: F401  (registers model_type "step1" with AutoConfig / AutoModelForCausalLM)
from .errors import (
    AudioInputError,
    AudioTokenError,
    CheckpointError,
    PromptError,
    StepAudioError,
)
from .llm.chat import StepAudioChat

__version__ = "0.1.0"

# Imported on first use: the tokenizer pulls in onnxruntime and librosa, which take a while to import.
_LAZY_EXPORTS = {
    "ModelSettings": "stepaudio.assembly",
    "load_pipeline": "stepaudio.assembly",
    "StepAudio": "stepaudio.pipeline",
    "StepAudioTTS": "stepaudio.tts.tts",
    "StepAudioEditX": "stepaudio.editx",
    "StepAudioTokenizer": "stepaudio.tokenizer",
}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stepaudio' has no attribute {name!r}")


__all__ = [
    "AudioInputError",
    "AudioTokenError",
    "CheckpointError",
    "ModelSettings",
    "PromptError",
    "StepAudio",
    "StepAudioChat",
    "StepAudioEditX",
    "StepAudioError",
    "StepAudioTTS",
    "StepAudioTokenizer",
    "__version__",
    "load_pipeline",
]
