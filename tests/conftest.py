"""Shared pytest fixtures: the real speech in ../shared/audio and tiny official-layout checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO_DIR = PROJECT_ROOT.parent / "shared" / "audio"


@pytest.fixture(scope="session")
def shared_audio_dir() -> Path:
    """The folder of real speech clips that sits beside the project checkout (never copied into it)."""
    if not SHARED_AUDIO_DIR.is_dir():
        pytest.fail(
            f"real speech for the tests is expected at {SHARED_AUDIO_DIR} (the shared/ folder beside the "
            "project checkout); check out shared/ next to the project before running the tests"
        )
    return SHARED_AUDIO_DIR


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Step-Audio-Chat folder in the official layout, built once per test session."""
    from stepaudio.testing import build_tiny_chat_checkpoint

    return build_tiny_chat_checkpoint(tmp_path_factory.mktemp("ckpt") / "Step-Audio-Chat")


@pytest.fixture(scope="session")
def tiny_tts_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Step-1 part of a tiny Step-Audio-TTS-3B folder (TTS tokenizer config: no add_bos_token key)."""
    from stepaudio.testing import build_tiny_tts_lm_checkpoint

    return build_tiny_tts_lm_checkpoint(tmp_path_factory.mktemp("ckpt") / "Step-Audio-TTS-3B")
