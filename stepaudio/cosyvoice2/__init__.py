"""Step-Audio-EditX speech decoder (its ``CosyVoice-300M-25Hz`` folder): mixed audio codes -> 24 kHz waveform.

Despite the folder name this is a CosyVoice2-style decoder: dual-codebook token embedding
(:mod:`.tokens`, :class:`~.flow.DualCodebookEmbedding`), upsampling conformer encoder (:mod:`.encoder`),
DiT flow-matching estimator (:mod:`.dit`, :mod:`.flow`) and a 24 kHz HiFT vocoder (:mod:`.hift`), with
chunked streaming (:mod:`.stream`).  Main entry points: :class:`CosyVoice2Decoder` and
:func:`load_speech_decoder`, which picks this decoder or the 22.05 kHz
:class:`~stepaudio.cosyvoice.CosyVoiceDecoder` from the folder's recipe.
"""

from .builder import Decoder24kRecipe, build_24k_recipe
from .decoder import DECODER_24K_FILES, SAMPLE_RATE_24K, CosyVoice2Decoder, PromptFeatures24k, limit_prompt_peak
from .flow import ChunkPlan
from .loading import decoder_kind, load_speech_decoder
from .stream import CosyVoice2Stream, CosyVoice2StreamState, StreamConfig
from .tokens import check_mixed_tokens, mixed_to_dual

__all__ = [
    "CosyVoice2Decoder",
    "CosyVoice2Stream",
    "CosyVoice2StreamState",
    "ChunkPlan",
    "DECODER_24K_FILES",
    "Decoder24kRecipe",
    "PromptFeatures24k",
    "SAMPLE_RATE_24K",
    "StreamConfig",
    "build_24k_recipe",
    "check_mixed_tokens",
    "decoder_kind",
    "limit_prompt_peak",
    "load_speech_decoder",
    "mixed_to_dual",
]
