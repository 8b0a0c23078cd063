"""Speed and volume changes applied to synthesised speech (upstream used sox ``tempo`` and ``vol``)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..validation import check_float

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_SPEED_RATIO",
    "MAX_VOLUME_RATIO",
    "MIN_SPEED_RATIO",
    "change_speed",
    "change_volume",
    "check_speed_ratio",
    "check_volume_ratio",
]

#: Largest absolute sample value after a volume change; louder samples are clipped.
CLIP_LEVEL = 0.99
#: Accepted tempo factors (the time stretch degrades audibly beyond them).
MIN_SPEED_RATIO = 0.25
MAX_SPEED_RATIO = 4.0
#: Largest accepted volume factor.
MAX_VOLUME_RATIO = 10.0


def check_speed_ratio(speed_ratio: object, name: str = "speed_ratio") -> float:
    """A tempo factor from 0.25 to 4.0 (1.0 keeps the tempo); raises InvalidArgumentError otherwise."""
    return check_float(
        speed_ratio,
        name,
        minimum=MIN_SPEED_RATIO,
        maximum=MAX_SPEED_RATIO,
        hint="1.0 keeps the tempo",
    )


def check_volume_ratio(volume_ratio: object, name: str = "volume_ratio") -> float:
    """A volume factor from 0 to 10 (1.0 keeps the volume); raises InvalidArgumentError otherwise."""
    return check_float(volume_ratio, name, minimum=0.0, maximum=MAX_VOLUME_RATIO, hint="1.0 keeps the volume")


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
    speed_ratio = check_speed_ratio(speed_ratio)
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
    volume_ratio = check_volume_ratio(volume_ratio)
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
