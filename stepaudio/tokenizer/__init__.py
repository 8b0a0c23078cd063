"""Step-Audio's dual-codebook audio tokenizer (vq02 linguistic + vq06 semantic, 2:3 interleave)."""

from .interleave import AUDIO_ID_OFFSET, deinterleave, ids_to_string, interleave, string_to_ids
from .stream import TokenizerStream
from .tokenizer import StepAudioTokenizer

__all__ = [
    "AUDIO_ID_OFFSET",
    "StepAudioTokenizer",
    "TokenizerStream",
    "deinterleave",
    "ids_to_string",
    "interleave",
    "string_to_ids",
]
