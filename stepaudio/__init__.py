"""stepaudio: inference for StepFun's Step-Audio that loads the official checkpoints unchanged.

Public API (upstream call shapes kept)::

    from stepaudio import StepAudioChat
    chat = StepAudioChat("Step-Audio-Chat")
    chat([{"role": "user", "content": "Hello"}])

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

__all__ = [
    "AudioInputError",
    "AudioTokenError",
    "CheckpointError",
    "PromptError",
    "StepAudioChat",
    "StepAudioError",
    "__version__",
]
