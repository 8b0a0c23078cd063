"""Shared pytest fixtures: the real speech in ../shared/audio and tiny official-layout checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tests run tiny models: one intra-op thread avoids OpenMP overhead that dwarfs their tiny kernels."""
    import torch

    torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Step-Audio-Tokenizer folder (streaming Paraformer, k-means, ONNX), built once."""
    from stepaudio.testing import build_tiny_tokenizer_checkpoint

    return build_tiny_tokenizer_checkpoint(tmp_path_factory.mktemp("tok") / "Step-Audio-Tokenizer", seed=0)


@pytest.fixture(scope="session")
def tiny_tts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Step-Audio-TTS-3B folder: Step-1 LM + CosyVoice-300M-25Hz and -Music decoders."""
    from stepaudio.testing import build_tiny_tts_checkpoint

    return build_tiny_tts_checkpoint(tmp_path_factory.mktemp("ckpt") / "Step-Audio-TTS-3B")


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root with the tiny official folders and speakers/, as `python -m stepaudio.testing OUT` writes it
    (read-only for the tests that share it)."""
    from stepaudio.testing import build_tiny_checkpoints

    folder = tmp_path_factory.mktemp("models")
    build_tiny_checkpoints(folder)
    return folder


@pytest.fixture(scope="module")
def realtime_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, tmp_path_factory):
    """A ``StepAudio`` over the tiny fixtures with a speakers folder, for the realtime tests (one per module)."""
    from realtime_helpers import fixture_pipeline

    from stepaudio.testing import build_tiny_speakers_folder

    speakers = build_tiny_speakers_folder(tmp_path_factory.mktemp("speakers") / "speakers")
    return fixture_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, speakers)
