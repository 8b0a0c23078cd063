"""Tiny random checkpoints in the official folder layouts, for tests, demos and benchmarks.

Weights cannot be downloaded in CI, and mocks of our own classes would prove nothing, so every
loader is exercised on small folders that have exactly the official file names, keys and formats
but tiny dimensions and random weights.  Nothing binary is committed: the folders are built at run
time in seconds.  From the shell::

    python -m stepaudio.testing OUT_DIR      # writes OUT_DIR/Step-Audio-Chat, ...

Fixture weights are random: a model loaded from them produces gibberish text and noise audio.
"""

from __future__ import annotations

from pathlib import Path

from .llm_fixture import build_tiny_step1_checkpoint, tiny_step1_config_dict, write_step1_checkpoint
from .speakers_fixture import build_tiny_speakers_folder
from .text_tokenizer_fixture import build_step_sentencepiece_model

__all__ = [
    "build_step_sentencepiece_model",
    "build_tiny_chat_checkpoint",
    "build_tiny_editx_checkpoint",
    "build_tiny_step1_checkpoint",
    "build_tiny_tts_lm_checkpoint",
    "build_tiny_checkpoints",
    "build_tiny_speakers_folder",
    "build_tiny_tokenizer_checkpoint",
    "build_tiny_tts_checkpoint",
    "tiny_step1_config_dict",
    "write_step1_checkpoint",
]


def build_tiny_chat_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """A tiny ``Step-Audio-Chat`` folder (Step-1 LM, Chat tokenizer config with chat template)."""
    return build_tiny_step1_checkpoint(folder, kind="chat", seed=seed)


def build_tiny_tts_lm_checkpoint(folder: str | Path, seed: int = 1) -> Path:
    """The Step-1 part of a tiny ``Step-Audio-TTS-3B`` folder (TTS tokenizer config, no chat template)."""
    return build_tiny_step1_checkpoint(folder, kind="tts", seed=seed)


def build_tiny_tts_checkpoint(folder: str | Path, seed: int = 1) -> Path:
    """A tiny ``Step-Audio-TTS-3B`` folder: the Step-1 LM plus ``CosyVoice-300M-25Hz`` and ``-Music``."""
    from .cosyvoice_fixture import build_tiny_cosyvoice_folder

    folder = build_tiny_tts_lm_checkpoint(folder, seed=seed)
    build_tiny_cosyvoice_folder(folder / "CosyVoice-300M-25Hz", seed=seed)
    build_tiny_cosyvoice_folder(folder / "CosyVoice-300M-25Hz-Music", seed=seed, music=True)
    return folder


def build_tiny_editx_checkpoint(folder: str | Path, seed: int = 2) -> Path:
    """A tiny ``Step-Audio-EditX`` folder: the Step-1 LM (TTS-3B layout) plus the 24 kHz ``CosyVoice-300M-25Hz``."""
    from .editx_fixture import build_tiny_editx_checkpoint as build

    return build(folder, seed=seed)


def build_tiny_tokenizer_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """A tiny ``Step-Audio-Tokenizer`` folder (streaming Paraformer, k-means, ONNX tokenizer)."""
    from .tokenizer_fixture import build_tiny_tokenizer_checkpoint as build

    return build(Path(folder), seed=seed)


def build_tiny_checkpoints(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny official-layout folder under ``out_dir``, named exactly like the official ones.

    Also writes ``speakers/`` (the upstream speakers-folder format with synthetic prompt clips).

    Returns:
        ``{folder name: path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "Step-Audio-Chat": build_tiny_chat_checkpoint(out_dir / "Step-Audio-Chat", seed=seed),
        "Step-Audio-TTS-3B": build_tiny_tts_checkpoint(out_dir / "Step-Audio-TTS-3B", seed=seed + 1),
        "Step-Audio-Tokenizer": build_tiny_tokenizer_checkpoint(out_dir / "Step-Audio-Tokenizer", seed=seed),
        "Step-Audio-EditX": build_tiny_editx_checkpoint(out_dir / "Step-Audio-EditX", seed=seed + 2),
        "speakers": build_tiny_speakers_folder(out_dir / "speakers", seed=seed),
    }
