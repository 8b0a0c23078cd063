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
from .text_tokenizer_fixture import build_step_sentencepiece_model

__all__ = [
    "build_step_sentencepiece_model",
    "build_tiny_chat_checkpoint",
    "build_tiny_step1_checkpoint",
    "build_tiny_tts_lm_checkpoint",
    "build_tiny_checkpoints",
    "tiny_step1_config_dict",
    "write_step1_checkpoint",
]


def build_tiny_chat_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """A tiny ``Step-Audio-Chat`` folder (Step-1 LM, Chat tokenizer config with chat template)."""
    return build_tiny_step1_checkpoint(folder, kind="chat", seed=seed)


def build_tiny_tts_lm_checkpoint(folder: str | Path, seed: int = 1) -> Path:
    """The Step-1 part of a tiny ``Step-Audio-TTS-3B`` folder (TTS tokenizer config, no chat template)."""
    return build_tiny_step1_checkpoint(folder, kind="tts", seed=seed)


def build_tiny_checkpoints(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny official-layout folder under ``out_dir``, named exactly like the official ones.

    Returns:
        ``{folder name: path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {"Step-Audio-Chat": build_tiny_chat_checkpoint(out_dir / "Step-Audio-Chat", seed=seed)}
