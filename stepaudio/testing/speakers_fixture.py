"""A speakers folder in the upstream format with synthetic prompt clips (no real voices are shipped).

The clips are vowel-like signals (a harmonic series under a moving pitch contour with syllable-rate
amplitude modulation and a little noise), written at the sample rates and bit depths of the upstream
speakers (44.1 kHz 16-bit, 48 kHz 16-bit, 48 kHz 24-bit), so every loading path runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

__all__ = ["FIXTURE_SPEAKERS", "build_tiny_speakers_folder", "synthetic_voice"]

#: speaker id -> (transcript, sample rate, soundfile subtype, seconds, base pitch in Hz)
FIXTURE_SPEAKERS: dict[str, tuple[str, int, str, float, float]] = {
    "Tingting": ("那等我们到海洋馆之后，给妈妈买个礼物，好不好呀？", 44100, "PCM_16", 3.0, 220.0),
    "TingtingRAP": ("（RAP）远远甩开的笑他是陆行龟", 48000, "PCM_16", 3.0, 200.0),
    "Tingting哼唱": ("（哼唱）你从一座叫我的小镇经过", 48000, "PCM_24", 3.0, 260.0),
}


def synthetic_voice(seconds: float, sample_rate: int, pitch_hz: float, seed: int = 0) -> np.ndarray:
    """A deterministic vowel-like float32 signal in [-0.8, 0.8], with 0.2 s of silence at both ends."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    contour = pitch_hz * (1.0 + 0.15 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(contour) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t)) ** 2 / 4.0
    signal = voice * envelope + 0.01 * rng.standard_normal(t.shape)
    silence = int(0.2 * sample_rate)
    signal[:silence] = 0.0
    signal[-silence:] = 0.0
    return (0.8 * signal / np.abs(signal).max()).astype(np.float32)


def build_tiny_speakers_folder(folder: str | Path, seed: int = 0) -> Path:
    """Write ``speakers_info.json`` and ``{id}_prompt.wav`` for the three upstream speaker ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = {}
    for index, (speaker, (text, rate, subtype, seconds, pitch)) in enumerate(FIXTURE_SPEAKERS.items()):
        info[speaker] = text
        soundfile.write(
            folder / f"{speaker}_prompt.wav", synthetic_voice(seconds, rate, pitch, seed + index), rate, subtype=subtype
        )
    (folder / "speakers_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=4), encoding="utf-8")
    return folder
