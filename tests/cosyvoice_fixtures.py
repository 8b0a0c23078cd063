"""Session fixtures shared by the tests/test_cosyvoice_*.py files (imported by them, not a conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from stepaudio.testing.cosyvoice_fixture import build_tiny_cosyvoice_folder


@pytest.fixture(scope="session")
def tiny_cosyvoice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CosyVoice-300M-25Hz folder in the official layout."""
    return build_tiny_cosyvoice_folder(tmp_path_factory.mktemp("cosyvoice") / "CosyVoice-300M-25Hz", seed=0)


@pytest.fixture(scope="session")
def tiny_decoder(tiny_cosyvoice_dir: Path):
    """The tiny decoder loaded on the CPU (fp32)."""
    from stepaudio.cosyvoice import CosyVoiceDecoder

    return CosyVoiceDecoder.from_pretrained(tiny_cosyvoice_dir, device="cpu")


@pytest.fixture(scope="session")
def tingting_prompt(shared_audio_dir: Path, tiny_decoder):
    """Prompt features (mel, length, x-vector) of the real Tingting prompt clip, plus random prompt tokens."""
    waveform, sample_rate = sf.read(shared_audio_dir / "speakers" / "Tingting_prompt.wav", dtype="float32")
    features = tiny_decoder.prompt_features(waveform, sample_rate)
    generator = torch.Generator().manual_seed(7)
    prompt_tokens = torch.randint(0, 5120, (1, 180), generator=generator)  # 4.3 s of tokens at 41.67/s
    return features, prompt_tokens


@pytest.fixture()
def one_torch_thread():
    """Run a test with one intra-op thread (restored afterwards).

    The test machine is shared; with two OpenMP threads and a busy core, small convolutions can stall
    for seconds, so the decoding tests pin torch to one thread while they run.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
