"""Kaldi-compatible log-mel filterbank features (``compute-fbank-feats``), in plain torch.

:func:`kaldi_fbank` gives the same numbers as ``torchaudio.compliance.kaldi.fbank`` (to float32
rounding) without needing torchaudio: the options, their defaults and the order of the float32
operations are the same.  Per frame of ``frame_length_ms`` every ``frame_shift_ms``:

1. frames are cut from the waveform (``snip_edges=True``: only frames that fit completely,
   ``1 + (N - window) // shift`` of them; ``False``: ``(N + shift // 2) // shift`` frames centred on
   multiples of the shift, the signal mirrored at both ends as Kaldi does);
2. optional Gaussian dither (only with an explicit ``generator``), DC removal (frame mean), the raw
   log energy (when ``use_energy``), pre-emphasis ``x[j] - c * x[j - 1]`` with ``x[-1] = x[0]``;
3. the window (hamming, hanning, povey = hann ** 0.85, rectangular, blackman), zero padding to the
   next power of two, one real FFT, power (or magnitude) spectrum;
4. Kaldi's triangular mel bins (mel = 1127 ln(1 + f / 700), ``low_freq`` .. ``high_freq``) and the
   natural log of ``max(energy, float32 eps)``.

Step-Audio uses two settings: the Paraformer (linguistic tokenizer) frontend calls it on
``waveform * 32768`` with ``window_type="hamming", energy_floor=0.0, num_mel_bins=80``; the CAM++
speaker encoder on the unscaled waveform with the povey defaults and ``num_mel_bins=80``.

Differences from torchaudio: the result is always float32 (float64 input is computed in float32),
integer input is refused (scale PCM yourself), input shorter than one frame gives ``[0, bins]``
instead of an assertion error, VTLN warping (``vtln_warp != 1``) is not implemented, and very long
inputs are processed in blocks of :data:`FRAMES_PER_BLOCK` frames to bound memory.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .errors import AudioInputError

__all__ = ["kaldi_fbank", "WINDOW_TYPES", "FRAMES_PER_BLOCK", "mel_banks", "feature_window"]

WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "blackman")
# frames per rfft call; 16384 frames = 164 s at a 10 ms shift, about 70 MB of float32 work buffers
FRAMES_PER_BLOCK = 16384

_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


@functools.lru_cache(maxsize=32)
def mel_banks(
    num_bins: int, padded_window_size: int, sample_rate: float, low_freq: float, high_freq: float, device: str = "cpu"
) -> torch.Tensor:
    """Kaldi's triangular mel filters, float32 ``[num_bins, padded_window_size // 2 + 1]``.

    The last column (the Nyquist bin) is zero, as in Kaldi.  ``high_freq <= 0`` counts down from
    Nyquist.  Arguments are assumed valid (see :func:`kaldi_fbank`); the result is cached.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    fft_bin_width = sample_rate / padded_window_size
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    mel_delta = (mel_high - mel_low) / (num_bins + 1)
    # float32 throughout, in the same order as Kaldi/torchaudio, so the filters agree bit for bit
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + index * mel_delta
    center = mel_low + (index + 1.0) * mel_delta
    right = mel_low + (index + 2.0) * mel_delta
    fft_mel = _mel(fft_bin_width * torch.arange(padded_window_size // 2, dtype=torch.float32)).unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    banks = torch.nn.functional.pad(banks, (0, 1))
    return banks.to(device)


@functools.lru_cache(maxsize=32)
def feature_window(
    window_type: str, window_size: int, blackman_coeff: float = 0.42, device: str = "cpu"
) -> torch.Tensor:
    """Kaldi's analysis window, float32 ``[window_size]`` (symmetric, i.e. not periodic); cached."""
    if window_type == "hanning":
        window = torch.hann_window(window_size, periodic=False, dtype=torch.float32)
    elif window_type == "hamming":
        window = torch.hamming_window(window_size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)
    elif window_type == "povey":
        window = torch.hann_window(window_size, periodic=False, dtype=torch.float32).pow(0.85)
    elif window_type == "rectangular":
        window = torch.ones(window_size, dtype=torch.float32)
    elif window_type == "blackman":
        step = 2 * math.pi / (window_size - 1)
        n = torch.arange(window_size, dtype=torch.float32)
        window = blackman_coeff - 0.5 * torch.cos(step * n) + (0.5 - blackman_coeff) * torch.cos(2 * step * n)
    else:
        raise AudioInputError(f"kaldi_fbank: window_type {window_type!r} is not one of {', '.join(WINDOW_TYPES)}")
    return window.to(device)


def _as_signal(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise AudioInputError(
                f"kaldi_fbank: expected float samples, got a {waveform.dtype} array; convert it to float32 "
                "(scaled as the model expects) first"
            )
        tensor = torch.from_numpy(np.array(waveform, dtype=np.float32))  # a copy: read-only arrays are fine
    elif isinstance(waveform, torch.Tensor):
        if not waveform.is_floating_point():
            raise AudioInputError(
                f"kaldi_fbank: expected float samples, got a {waveform.dtype} tensor; convert it to float32 "
                "(scaled as the model expects) first"
            )
        tensor = waveform.detach().to(torch.float32)
    else:
        raise AudioInputError(f"kaldi_fbank: expected a torch.Tensor or numpy array, got {type(waveform).__name__}")
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1:
        raise AudioInputError(f"kaldi_fbank: expected a mono waveform [N] or [1, N], got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise AudioInputError("kaldi_fbank: the waveform contains NaN or infinite samples")
    return tensor


def _frames(signal: torch.Tensor, window_size: int, window_shift: int, snip_edges: bool) -> torch.Tensor:
    """``[m, window_size]`` view of the frames (Kaldi's frame count and edge mirroring)."""
    num_samples = signal.numel()
    if snip_edges:
        return signal.unfold(0, window_size, window_shift)
    num_frames = (num_samples + window_shift // 2) // window_shift
    # frame i starts at i * shift + shift // 2 - window // 2; samples before 0 mirror as s -> -s - 1 and
    # samples past the end as s -> 2N - 1 - s, i.e. the reversed signal on either side
    pad = window_size // 2 - window_shift // 2
    reversed_signal = torch.flip(signal, [0])
    if pad > 0:
        extended = torch.cat((reversed_signal[num_samples - pad :], signal, reversed_signal))
    else:
        extended = torch.cat((signal[-pad:], reversed_signal))
    return extended.unfold(0, window_size, window_shift)[:num_frames]


def kaldi_fbank(
    waveform: torch.Tensor | np.ndarray,
    *,
    sample_rate: float = 16000.0,
    num_mel_bins: int = 23,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "povey",
    dither: float = 0.0,
    energy_floor: float = 1.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_log_fbank: bool = True,
    use_power: bool = True,
    use_energy: bool = False,
    raw_energy: bool = True,
    htk_compat: bool = False,
    subtract_mean: bool = False,
    vtln_warp: float = 1.0,
    blackman_coeff: float = 0.42,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi fbank features of a mono waveform, equal to ``torchaudio.compliance.kaldi.fbank``.

    Options and defaults are torchaudio's (``sample_frequency`` -> ``sample_rate``, ``frame_length`` ->
    ``frame_length_ms``, ``frame_shift`` -> ``frame_shift_ms``, ``preemphasis_coefficient`` ->
    ``preemphasis``); the samples are used as given (Kaldi recipes expect int16-scaled values,
    i.e. ``waveform * 32768``).

    Args:
        waveform: float samples ``[N]`` or ``[1, N]`` (numpy or torch, any device); computed in float32.
        dither: standard deviation of Gaussian noise added to every frame before anything else.  This is
            random: it needs an explicit ``generator`` (seed it for reproducible features); 0 disables it.
        energy_floor: floor on the log energy column (``use_energy``) as ``log(energy_floor)``; 0 = none.
        use_energy: add the log frame energy as an extra column (first, or last with ``htk_compat``).
        raw_energy: take that energy before pre-emphasis and windowing (else after).
        subtract_mean: subtract the mean over frames of every column.
        vtln_warp: must be 1.0 (VTLN warping is not implemented).
        generator: the random generator for ``dither`` (ignored when ``dither == 0``).

    Returns:
        float32 ``[frames, num_mel_bins + use_energy]`` on the waveform's device.  ``frames`` is
        ``1 + (N - window) // shift`` with ``snip_edges`` (window = ``int(sample_rate * frame_length_ms
        / 1000)``, 400 at 16 kHz / 25 ms; shift 160) and ``(N + shift // 2) // shift`` without; input
        shorter than one window gives zero frames.

    Raises:
        AudioInputError: bad waveform (not float, not mono, NaN/inf) or an option out of range.
    """
    signal = _as_signal(waveform)
    window_size, window_shift, padded_size = _check_options(
        sample_rate,
        num_mel_bins,
        frame_length_ms,
        frame_shift_ms,
        window_type,
        dither,
        energy_floor,
        preemphasis,
        round_to_power_of_two,
        low_freq,
        high_freq,
        vtln_warp,
        generator,
    )
    device = signal.device
    num_columns = num_mel_bins + int(use_energy)
    if signal.numel() < window_size:
        return torch.zeros((0, num_columns), dtype=torch.float32, device=device)
    frames = _frames(signal, window_size, window_shift, snip_edges)
    if frames.shape[0] == 0:
        return torch.zeros((0, num_columns), dtype=torch.float32, device=device)

    device_key = str(device)
    window = feature_window(window_type, window_size, float(blackman_coeff), device_key).unsqueeze(0)
    banks = mel_banks(num_mel_bins, padded_size, float(sample_rate), float(low_freq), float(high_freq), device_key)
    epsilon = torch.tensor(_FLOAT32_EPS, dtype=torch.float32, device=device)
    log_energy_floor = math.log(energy_floor) if energy_floor > 0.0 else None

    def log_energy(block: torch.Tensor) -> torch.Tensor:
        energy = torch.maximum(block.pow(2).sum(1), epsilon).log()
        return energy if log_energy_floor is None else torch.clamp(energy, min=log_energy_floor)

    outputs = []
    for start in range(0, frames.shape[0], FRAMES_PER_BLOCK):
        block = frames[start : start + FRAMES_PER_BLOCK]
        if dither != 0.0:
            noise = torch.randn(block.shape, generator=generator, dtype=torch.float32, device=generator.device)
            noise = noise.to(device)
            block = block + noise * dither
        if remove_dc_offset:
            block = block - torch.mean(block, dim=1).unsqueeze(1)
        energy = log_energy(block) if use_energy and raw_energy else None
        if preemphasis != 0.0:
            previous = torch.cat((block[:, :1], block[:, :-1]), dim=1)
            block = block - preemphasis * previous
        block = block * window
        if padded_size != window_size:
            block = torch.nn.functional.pad(block, (0, padded_size - window_size))
        if use_energy and not raw_energy:
            energy = log_energy(block)
        spectrum = torch.fft.rfft(block).abs()
        if use_power:
            spectrum = spectrum.pow(2.0)
        features = torch.mm(spectrum, banks.T)
        if use_log_fbank:
            features = torch.maximum(features, epsilon).log()
        if energy is not None:
            energy = energy.unsqueeze(1)
            features = torch.cat((features, energy) if htk_compat else (energy, features), dim=1)
        outputs.append(features)
    features = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    if subtract_mean:
        features = features - torch.mean(features, dim=0).unsqueeze(0)
    return features


def _check_options(
    sample_rate: float,
    num_mel_bins: int,
    frame_length_ms: float,
    frame_shift_ms: float,
    window_type: str,
    dither: float,
    energy_floor: float,
    preemphasis: float,
    round_to_power_of_two: bool,
    low_freq: float,
    high_freq: float,
    vtln_warp: float,
    generator: torch.Generator | None,
) -> tuple[int, int, int]:
    """Validate the options; returns (window_size, window_shift, padded_window_size) in samples."""
    if not (math.isfinite(sample_rate) and sample_rate > 0):
        raise AudioInputError(f"kaldi_fbank: sample_rate must be a positive number, got {sample_rate}")
    if window_type not in WINDOW_TYPES:
        raise AudioInputError(f"kaldi_fbank: window_type {window_type!r} is not one of {', '.join(WINDOW_TYPES)}")
    if isinstance(num_mel_bins, bool) or int(num_mel_bins) != num_mel_bins or num_mel_bins <= 3:
        raise AudioInputError(f"kaldi_fbank: num_mel_bins must be an integer > 3, got {num_mel_bins}")
    window_size = int(sample_rate * frame_length_ms * 0.001)  # the same float expression as Kaldi/torchaudio
    window_shift = int(sample_rate * frame_shift_ms * 0.001)
    if window_size < 2:
        raise AudioInputError(
            f"kaldi_fbank: frame_length_ms={frame_length_ms} at {sample_rate} Hz gives {window_size} samples; "
            "need at least 2"
        )
    if window_shift < 1:
        raise AudioInputError(
            f"kaldi_fbank: frame_shift_ms={frame_shift_ms} at {sample_rate} Hz gives {window_shift} samples; "
            "need at least 1"
        )
    padded_size = 1 << (window_size - 1).bit_length() if round_to_power_of_two else window_size
    if padded_size % 2:
        raise AudioInputError(
            f"kaldi_fbank: the frame of {window_size} samples is odd; use round_to_power_of_two=True or change "
            "frame_length_ms"
        )
    if not 0.0 <= preemphasis <= 1.0:
        raise AudioInputError(f"kaldi_fbank: preemphasis must be in [0, 1], got {preemphasis}")
    if not (math.isfinite(dither) and dither >= 0.0):
        raise AudioInputError(f"kaldi_fbank: dither must be >= 0, got {dither}")
    if dither > 0.0 and generator is None:
        raise AudioInputError(
            f"kaldi_fbank: dither={dither} adds random noise; pass generator=torch.Generator().manual_seed(...) "
            "or use dither=0.0"
        )
    if not (math.isfinite(energy_floor) and energy_floor >= 0.0):
        raise AudioInputError(f"kaldi_fbank: energy_floor must be >= 0, got {energy_floor}")
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise AudioInputError(
            f"kaldi_fbank: need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); got low_freq={low_freq}, "
            f"high_freq={high_freq} (= {high} Hz)"
        )
    if vtln_warp != 1.0:
        raise AudioInputError(f"kaldi_fbank: VTLN warping is not supported; vtln_warp must be 1.0, got {vtln_warp}")
    return window_size, window_shift, padded_size
