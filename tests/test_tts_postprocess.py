"""Speed (pitch-preserving tempo) and volume changes."""

import numpy as np
import pytest
import torch

from stepaudio.tts.postprocess import change_speed, change_volume

SAMPLE_RATE = 22050


def _dominant_frequency(wav: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(wav[0].numpy() * np.hanning(wav.shape[1])))
    return float(np.fft.rfftfreq(wav.shape[1], 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize("speed", [0.8, 1.25, 2.0])
def test_speed_changes_length_but_not_pitch(speed):
    t = torch.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    wav = (0.5 * torch.sin(2 * torch.pi * 440.0 * t))[None]
    faster = change_speed(wav, SAMPLE_RATE, speed)
    assert faster.dtype == torch.float32 and faster.shape[0] == 1
    assert faster.shape[1] == pytest.approx(wav.shape[1] / speed, rel=0.02)
    assert _dominant_frequency(faster) == pytest.approx(440.0, abs=5.0)


def test_speed_one_is_identity_and_out_of_range_rejected():
    wav = torch.randn(1, 1000)
    assert change_speed(wav, SAMPLE_RATE, 1.0) is wav
    with pytest.raises(ValueError, match="speed_ratio"):
        change_speed(wav, SAMPLE_RATE, 10.0)


def test_volume_scales_and_clips(caplog):
    wav = torch.tensor([[0.1, -0.2, 0.4]])
    assert torch.allclose(change_volume(wav, 2.0), torch.tensor([[0.2, -0.4, 0.8]]))
    loud = change_volume(wav, 5.0)
    assert loud.abs().max() <= 0.99 and "clips" in caplog.text
    with pytest.raises(ValueError, match="volume_ratio"):
        change_volume(wav, -1.0)
