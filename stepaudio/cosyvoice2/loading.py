"""``load_speech_decoder``: open a ``CosyVoice-300M-25Hz`` folder with the decoder its recipe describes.

Step-Audio-TTS-3B's folder holds the 22.05 kHz CosyVoice decoder (recipe flow class
``MaskedDiffWithXvec``); Step-Audio-EditX's folder of the same name holds the 24 kHz CosyVoice2-style
decoder (``CausalMaskedDiffWithXvec``).  The recipe, not the folder name, decides.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..cosyvoice.config import ObjectSpec, load_recipe
from ..cosyvoice.decoder import CosyVoiceDecoder, missing_file_error
from ..errors import CheckpointConfigError
from .builder import FLOW_CLASS
from .decoder import CosyVoice2Decoder

__all__ = ["decoder_kind", "load_speech_decoder"]

_KINDS = {"MaskedDiffWithXvec": "cosyvoice-22k", FLOW_CLASS: "cosyvoice2-24k"}


def decoder_kind(folder: str | Path) -> str:
    """``"cosyvoice-22k"`` (Step-Audio-TTS-3B) or ``"cosyvoice2-24k"`` (Step-Audio-EditX), read from the recipe.

    Raises:
        CheckpointFileNotFoundError: the folder has no ``cosyvoice.yaml``.
        CheckpointConfigError: the recipe's ``flow`` entry names neither flow class.
    """
    folder = Path(folder)
    recipe_path = folder / "cosyvoice.yaml"
    if not recipe_path.is_file():
        raise missing_file_error(
            recipe_path,
            folder,
            "pass a CosyVoice-300M-25Hz folder (Step-Audio-TTS-3B or Step-Audio-EditX) itself, not its parent.",
        )
    flow = load_recipe(recipe_path).get("flow")
    name = flow.name if isinstance(flow, ObjectSpec) else None
    if name not in _KINDS:
        found = flow.tag if isinstance(flow, ObjectSpec) else "no !new: entry"
        raise CheckpointConfigError(
            f"{recipe_path}: 'flow' is {found}; expected !new:...MaskedDiffWithXvec (Step-Audio-TTS-3B, 22.05 kHz) "
            f"or !new:...{FLOW_CLASS} (Step-Audio-EditX, 24 kHz)",
            folder=folder,
            file=recipe_path,
        )
    return _KINDS[name]


def load_speech_decoder(
    folder: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
    n_timesteps: int = 10,
) -> CosyVoiceDecoder | CosyVoice2Decoder:
    """The decoder of ``folder``: :class:`CosyVoiceDecoder` (22.05 kHz) or :class:`CosyVoice2Decoder` (24 kHz).

    Arguments are passed to the chosen class's ``from_pretrained``; both expose ``sample_rate``.
    """
    if decoder_kind(folder) == "cosyvoice2-24k":
        return CosyVoice2Decoder.from_pretrained(folder, device, dtype, seed=seed, n_timesteps=n_timesteps)
    return CosyVoiceDecoder.from_pretrained(folder, device, dtype, seed=seed, n_timesteps=n_timesteps)
