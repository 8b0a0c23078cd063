"""Speed and volume changes applied to synthesised speech (upstream used sox ``tempo`` and ``vol``)."""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["change_speed", "change_volume"]

#: Largest absolute sample value after a volume change; louder samples are clipped.
CLIP_LEVEL = 0.99


def change_speed(wav: torch.Tensor, sample_rate: int, speed_ratio: float) -> torch.Tensor:
    """Change the tempo by ``speed_ratio`` (2.0 = twice as fast) without changing the pitch.

    Uses Rubber Band through ``pedalboard`` (a phase-vocoder time stretch comparable to sox ``tempo``).

    Args:
        wav: ``[channels, samples]`` float waveform.
        sample_rate: its sample rate.
        speed_ratio: tempo factor, 0.25..4; 1.0 returns ``wav`` unchanged.

    Returns:
        ``[channels, round(samples / speed_ratio)]`` float32 waveform.
    """
    if not 0.25 <= speed_ratio <= 4.0:
        raise ValueError(f"speed_ratio must be between 0.25 and 4.0, got {speed_ratio}")
    if speed_ratio == 1.0:
        return wav
    import pedalboard

    audio = wav.detach().to(torch.float32).cpu().numpy()
    stretched = pedalboard.time_stretch(
        np.ascontiguousarray(audio), float(sample_rate), stretch_factor=float(speed_ratio)
    )
    return torch.from_numpy(np.ascontiguousarray(stretched, dtype=np.float32))


def change_volume(wav: torch.Tensor, volume_ratio: float) -> torch.Tensor:
    """Scale the amplitude by ``volume_ratio`` (0..10), clipping to ±0.99 (logged when it clips)."""
    if not 0.0 <= volume_ratio <= 10.0:
        raise ValueError(f"volume_ratio must be between 0 and 10, got {volume_ratio}")
    if volume_ratio == 1.0:
        return wav
    scaled = wav * volume_ratio
    peak = float(scaled.abs().max()) if scaled.numel() else 0.0
    if peak > CLIP_LEVEL:
        logger.warning(
            "volume_ratio=%.2f clips the waveform (peak %.2f); samples are limited to ±%.2f",
            volume_ratio,
            peak,
            CLIP_LEVEL,
        )
    return scaled.clamp(-CLIP_LEVEL, CLIP_LEVEL)
