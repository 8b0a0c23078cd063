"""Whisper's 128-bin log-mel spectrogram of 16 kHz audio, computed without openai-whisper.

Same recipe as ``whisper.log_mel_spectrogram(audio, n_mels=128)`` (what upstream feeds the vq06 ONNX):
periodic Hann window 400, n_fft 400, hop 160, centred STFT with reflect padding, the last frame dropped
(``T = N // 160`` frames), power spectrum, librosa's slaney-normalised mel filters (whisper's
``mel_filters.npz`` holds exactly ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=128)``),
``log10(max(., 1e-10))``, clamped to ``max - 8`` and mapped with ``(x + 4) / 4``.

The clamp floor depends on the maximum of the whole window, so the function is split in two steps
(:func:`log10_mel` and :func:`normalize_log_mel`) for the streaming tokenizer, which tracks that
maximum itself.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "SAMPLE_RATE",
    "N_FFT",
    "HOP_LENGTH",
    "N_MELS",
    "mel_filters",
    "log10_mel",
    "normalize_log_mel",
    "whisper_log_mel",
]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney mel filter bank ``[n_mels, 201]`` (float32), identical to whisper's stored filters."""
    import librosa

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)
    return torch.from_numpy(filters.astype(np.float32))


def log10_mel(audio: np.ndarray | torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """``log10`` of the mel power spectrum, ``[n_mels, N // 160]`` float32 (before clamping/scaling).

    Args:
        audio: mono 16 kHz float samples, at least 201 long (reflect padding needs ``N > 200``).
    """
    samples = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    window = torch.hann_window(N_FFT)
    spectrum = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = spectrum[..., :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power
    return torch.clamp(mel, min=1e-10).log10()


def normalize_log_mel(log_spec: torch.Tensor, window_max: float | torch.Tensor) -> torch.Tensor:
    """Whisper's dynamic-range clamp (``window_max - 8``) and ``(x + 4) / 4`` scaling."""
    floor = torch.as_tensor(window_max, dtype=log_spec.dtype) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def whisper_log_mel(audio: np.ndarray | torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """The complete whisper log-mel ``[n_mels, N // 160]`` of one window of 16 kHz audio."""
    log_spec = log10_mel(audio, n_mels)
    return normalize_log_mel(log_spec, log_spec.max())
