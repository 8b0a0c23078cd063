"""CosyVoice-300M-25Hz speech decoder (Step-Audio-TTS-3B's vocoder): audio tokens -> 22.05 kHz waveform.

Main entry point: :class:`CosyVoiceDecoder` in :mod:`.decoder` (``from_pretrained(folder)``,
``token_to_wav_offline``, ``stream``, ``token_to_wav_stream``, ``prompt_features``); its streaming session,
:class:`TokenToWavStream`, in :mod:`.token_to_wav_stream`.  The recipe reader (:func:`load_recipe`) reads the
official hyperpyyaml ``cosyvoice.yaml`` without importing the classes it names.
"""

from .builder import DecoderRecipe, build_from_recipe
from .config import ObjectSpec, load_recipe, parse_recipe
from .decoder import DECODER_FILES, SAMPLE_RATE, CosyVoiceDecoder, PromptFeatures
from .engines import ENGINES
from .frontend import CampPlusSpeakerEncoder, MelSpectrogramConfig, kaldi_fbank, prompt_mel, resample_audio
from .token_to_wav_stream import StreamingConfig, TokenToWavState, TokenToWavStream

__all__ = [
    "CosyVoiceDecoder",
    "PromptFeatures",
    "StreamingConfig",
    "TokenToWavStream",
    "TokenToWavState",
    "DECODER_FILES",
    "SAMPLE_RATE",
    "ENGINES",
    "load_recipe",
    "parse_recipe",
    "ObjectSpec",
    "build_from_recipe",
    "DecoderRecipe",
    "MelSpectrogramConfig",
    "prompt_mel",
    "kaldi_fbank",
    "resample_audio",
    "CampPlusSpeakerEncoder",
]
