"""Session fixtures shared by the tests/test_cosyvoice2_*.py files (imported by them, not a conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stepaudio.testing.cosyvoice2_fixture import build_tiny_cosyvoice2_folder


@pytest.fixture(scope="session")
def tiny_cosyvoice2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Step-Audio-EditX CosyVoice-300M-25Hz folder (24 kHz decoder) in the official layout."""
    return build_tiny_cosyvoice2_folder(tmp_path_factory.mktemp("editx") / "CosyVoice-300M-25Hz", seed=0)


@pytest.fixture(scope="session")
def tiny_decoder_24k(tiny_cosyvoice2_dir: Path):
    """The tiny 24 kHz decoder loaded on the CPU (fp32)."""
    from stepaudio.cosyvoice2 import CosyVoice2Decoder

    return CosyVoice2Decoder.from_pretrained(tiny_cosyvoice2_dir, device="cpu")


def mixed_codes(groups: int, seed: int, extra: int = 0) -> list[int]:
    """``groups`` groups of 2 vq02 + 3 vq06 codes (then ``extra`` codes of a partial group), deterministic."""
    generator = torch.Generator().manual_seed(seed)
    codes: list[int] = []
    for _ in range(groups + (1 if extra else 0)):
        codes += torch.randint(0, 1024, (2,), generator=generator).tolist()
        codes += torch.randint(1024, 5120, (3,), generator=generator).tolist()
    return codes[: groups * 5 + extra]


@pytest.fixture(scope="session")
def editx_prompt():
    """Prompt codes (12 groups), a matching-length random prompt mel and x-vector."""
    generator = torch.Generator().manual_seed(11)
    return (
        mixed_codes(12, seed=5),
        torch.randn(1, 75, 80, generator=generator) - 5,
        torch.randn(1, 192, generator=generator),
    )
