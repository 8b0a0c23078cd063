"""Prompt frontend of the CosyVoice decoder: the prompt mel spectrogram and the CAM++ speaker x-vector.

* :func:`prompt_mel` — the flow's ``feat_extractor`` (matcha-style): reflect-pad ``(n_fft - hop) / 2``,
  STFT (hann, ``center=False``), magnitude ``sqrt(re^2 + im^2 + 1e-9)``, librosa slaney mel filters,
  natural log of ``max(., 1e-5)``.  22.05 kHz, 80 bins, n_fft 1024, hop 256, fmax 8000.
* :class:`CampPlusSpeakerEncoder` — ``campplus.onnx`` run with onnxruntime on CPU on Kaldi fbank
  features (:func:`stepaudio.kaldi_fbank.kaldi_fbank`, equal to ``torchaudio.compliance.kaldi.fbank``:
  80 bins, dither 0, 25/10 ms povey window, unscaled waveform, mean-normalised over time) of 16 kHz
  audio; returns a 192-d x-vector.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import resample
from ..errors import AudioInputError, CheckpointConfigError, CheckpointFileNotFoundError
from ..kaldi_fbank import kaldi_fbank as _kaldi_fbank

__all__ = [
    "MelSpectrogramConfig",
    "prompt_mel",
    "kaldi_fbank",
    "CampPlusSpeakerEncoder",
    "resample_audio",
    "XVECTOR_SAMPLE_RATE",
]

logger = logging.getLogger(__name__)

XVECTOR_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MelSpectrogramConfig:
    """Parameters of the prompt mel (``feat_extractor`` in the recipe); defaults = CosyVoice-300M-25Hz."""

    n_fft: int = 1024
    num_mels: int = 80
    sampling_rate: int = 22050
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0
    center: bool = False

    @classmethod
    def from_recipe(cls, **kwargs: Any) -> "MelSpectrogramConfig":
        """Build from the keyword arguments of the recipe's ``feat_extractor`` entry.

        The entry is ``!name:cosyvoice.matcha.audio.mel_spectrogram`` in Step-Audio's tree and
        ``!name:matcha.utils.audio.mel_spectrogram`` in the CosyVoice recipes (same function).
        """
        config = cls(**kwargs)
        if config.center:
            raise CheckpointConfigError(
                "feat_extractor center=True is not supported, stepaudio implements center=False: "
                "CosyVoice pads by (n_fft - hop) / 2 itself"
            )
        return config


@functools.lru_cache(maxsize=8)
def _mel_filters(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    import librosa

    return torch.from_numpy(
        librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax)
    ).float()


def _check_waveform(waveform: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(waveform, dtype=torch.float32)
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1:
        raise AudioInputError(f"{what}: expected a mono waveform [N] or [1, N], got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise AudioInputError(f"{what}: the waveform is empty")
    if not torch.isfinite(tensor).all():
        raise AudioInputError(f"{what}: the waveform contains NaN or infinite samples")
    return tensor


def prompt_mel(
    waveform: np.ndarray | torch.Tensor, config: MelSpectrogramConfig = MelSpectrogramConfig()
) -> torch.Tensor:
    """Log-mel spectrogram of a mono ``config.sampling_rate`` waveform, as the flow's prompt feature.

    Returns:
        float32 [1, T, num_mels] with ``T = (N + 2 * pad - n_fft) // hop + 1``, ``pad = (n_fft - hop) // 2``.
    """
    signal = _check_waveform(waveform, "prompt_mel")
    pad = (config.n_fft - config.hop_size) // 2
    if signal.numel() <= pad:
        raise AudioInputError(
            f"prompt_mel: {signal.numel()} samples are too short for reflect padding of {pad}; use at least "
            f"{config.n_fft} samples"
        )
    padded = torch.nn.functional.pad(signal[None, None], (pad, pad), mode="reflect")[0, 0]
    spec = torch.stft(
        padded,
        config.n_fft,
        config.hop_size,
        config.win_size,
        window=torch.hann_window(config.win_size),
        center=False,
        return_complex=True,
    )
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    filters = _mel_filters(
        config.sampling_rate,
        config.n_fft,
        config.num_mels,
        float(config.fmin),
        None if config.fmax is None else float(config.fmax),
    )
    mel = torch.log(torch.clamp(filters @ magnitude, min=1e-5))
    return mel.T.unsqueeze(0).contiguous()


def _campplus_fbank(waveform: np.ndarray | torch.Tensor, sample_rate: int, num_bins: int) -> torch.Tensor:
    signal = _check_waveform(waveform, "kaldi_fbank")
    # CosyVoice: kaldi.fbank(speech, num_mel_bins=80, dither=0, sample_frequency=16000), all else default
    features = _kaldi_fbank(signal, sample_rate=float(sample_rate), num_mel_bins=num_bins, dither=0.0)
    if features.shape[0] == 0:
        raise AudioInputError(
            f"kaldi_fbank: {signal.numel()} samples at {sample_rate} Hz are shorter than one 25 ms frame"
        )
    return features


def kaldi_fbank(
    waveform: np.ndarray | torch.Tensor, sample_rate: int = XVECTOR_SAMPLE_RATE, num_bins: int = 80
) -> np.ndarray:
    """Kaldi log-mel filterbank with CosyVoice's CAM++ settings (dither 0, povey window, 25/10 ms, snip edges).

    A thin call of :func:`stepaudio.kaldi_fbank.kaldi_fbank` (equal to ``torchaudio.compliance.kaldi.fbank``).
    The waveform is used as given (float in [-1, 1], not scaled to int16), as CosyVoice does.

    Returns:
        float32 [frames, num_bins].

    Raises:
        AudioInputError: the audio is empty, not mono, non-finite or shorter than one 25 ms frame.
    """
    return _campplus_fbank(waveform, sample_rate, num_bins).numpy()


def resample_audio(waveform: np.ndarray | torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample a mono waveform with the package's resampler (:func:`stepaudio.resample.resample`).

    The values are those of ``torchaudio.transforms.Resample(from_rate, to_rate)`` with its defaults,
    which the original CosyVoice frontend uses.

    Returns float32 ``[N']``; equal rates return a copy of the input.
    """
    signal = _check_waveform(waveform, "resample_audio").numpy()
    return torch.from_numpy(np.array(resample(signal, int(from_rate), int(to_rate)), dtype=np.float32))


class CampPlusSpeakerEncoder:
    """CAM++ x-vector extractor around ``campplus.onnx`` (onnxruntime, CPU, one thread per op set)."""

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 1) -> None:
        import onnxruntime

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise CheckpointFileNotFoundError(
                f"CAM++ speaker model not found at {self.path}; it ships as campplus.onnx inside the "
                "CosyVoice-300M-25Hz folder of Step-Audio-TTS-3B",
                file=self.path,
                folder=self.path.parent,
            )
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, waveform_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        """x-vector [1, 192] float32 of a 16 kHz mono waveform."""
        features = _campplus_fbank(waveform_16k, XVECTOR_SAMPLE_RATE, 80)
        features = features - features.mean(dim=0, keepdim=True)
        output = self.session.run(None, {self.input_name: features[None].numpy()})[0]
        embedding = torch.from_numpy(np.asarray(output, dtype=np.float32)).reshape(1, -1)
        if not torch.isfinite(embedding).all():
            raise AudioInputError(f"{self.path.name} returned a non-finite speaker embedding for this audio")
        return embedding
