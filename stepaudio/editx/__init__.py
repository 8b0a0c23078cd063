"""Step-Audio-EditX: zero-shot TTS and iterative audio editing on the Step-Audio tokenizer and a Step-1 3B LM.

``StepAudioEditX(model_dir, tokenizer).clone(text, prompt_wav, prompt_text)`` and
``.edit(audio, audio_text, edit_type, edit_info, iterations)``, streamed with ``.clone_stream(...)`` /
``.edit_stream(...)``; ``stepaudio edit`` on the command line.
"""

from .edit_config import EDIT_INFO_CHOICES, EDIT_TYPES, LANGUAGES, PARALINGUISTIC_TAGS, check_edit_request
from .model import EditStep, PreparedAudio, StepAudioEditX, iteration_requests

__all__ = [
    "EDIT_INFO_CHOICES",
    "EDIT_TYPES",
    "LANGUAGES",
    "PARALINGUISTIC_TAGS",
    "EditStep",
    "PreparedAudio",
    "StepAudioEditX",
    "check_edit_request",
    "iteration_requests",
]
