"""A tiny random ``Step-Audio-EditX`` folder in the official layout, for tests.

The published folder holds a Step-1 LM of exactly Step-Audio-TTS-3B's shape (``config.json``,
safetensors shards with their index, ``tokenizer.model`` + ``tokenizer_config.json``, the remote-code
files) and the 24 kHz speech decoder in ``CosyVoice-300M-25Hz/``.  The LM part is written here with
tiny dimensions; the decoder sub-folder is written by :mod:`stepaudio.testing.cosyvoice2_fixture`.
"""

from __future__ import annotations

from pathlib import Path

from .cosyvoice2_fixture import build_tiny_cosyvoice2_folder
from .llm_fixture import build_tiny_step1_checkpoint

__all__ = ["build_tiny_editx_checkpoint", "build_tiny_editx_root"]

DECODER_FOLDER = "CosyVoice-300M-25Hz"


def build_tiny_editx_checkpoint(folder: str | Path, seed: int = 2, with_decoder: bool = True) -> Path:
    """Write a tiny ``Step-Audio-EditX`` folder: the LM in the TTS-3B layout plus the 24 kHz decoder.

    Args:
        folder: destination (created), typically ``.../Step-Audio-EditX``.
        seed: seed of the random weights.
        with_decoder: also write ``CosyVoice-300M-25Hz/`` (the CosyVoice2-style 24 kHz decoder).
    """
    folder = build_tiny_step1_checkpoint(folder, kind="tts", seed=seed)
    if with_decoder:
        build_tiny_cosyvoice2_folder(folder / DECODER_FOLDER, seed=seed)
    return folder


def build_tiny_editx_root(out_dir: str | Path, seed: int = 2, with_decoder: bool = True) -> Path:
    """The folder the original's ``tts_infer.py --model-path`` expects.

    It holds ``Step-Audio-EditX/`` and ``Step-Audio-Tokenizer/``.
    """
    from . import build_tiny_tokenizer_checkpoint

    out_dir = Path(out_dir)
    build_tiny_editx_checkpoint(out_dir / "Step-Audio-EditX", seed=seed, with_decoder=with_decoder)
    build_tiny_tokenizer_checkpoint(out_dir / "Step-Audio-Tokenizer", seed=0)
    return out_dir
