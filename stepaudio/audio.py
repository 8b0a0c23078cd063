"""General audio helpers shared by the tokenizer and the TTS side.

Conventions used throughout stepaudio:

- A waveform is a float32 numpy array in [-1, 1], either mono ``[T]`` or channels-first ``[C, T]``.
- **Layout rule for 2-D input**: arrays are read as ``[C, T]`` (channels first, the torch/torchaudio
  convention).  A 2-D array whose first axis is longer than :data:`MAX_CHANNELS` while its second is
  not looks like soundfile's ``[T, C]`` layout and is refused with an :class:`AudioInputError` that
  says to pass ``wav.T`` -- it is never transposed by guesswork.
- Multi-channel audio (stereo, 3-channel, ...) is mixed to mono by averaging the channels.
- Integer PCM arrays are scaled to float by their type's full scale (int16: 32768, int32: 2**31).
- Files are read with soundfile (wav incl. 16/24/32-bit PCM and float, flac, ogg/vorbis, mp3 where
  the installed libsndfile supports it); nothing here uses torchaudio.
- Sample rates are changed with :func:`resample` (defined in :mod:`stepaudio.resample`, re-exported
  here): the same values as ``torchaudio.transforms.Resample`` with its defaults, as upstream uses.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioInputError
from .resample import resample  # the package's resampler (torchaudio's default Resample), re-exported

logger = logging.getLogger(__name__)

__all__ = [
    "AudioLike",
    "MAX_CHANNELS",
    "as_waveform",
    "audio_duration",
    "energy_norm",
    "PEAK_FLOOR",
    "TARGET_PEAK",
    "scale_to_peak",
    "load_audio",
    "resample",
    "to_mono",
    "trim_silence",
    "write_audio",
    "check_finite",
]

MAX_CHANNELS = 8
"""Most channels a ``[C, T]`` array may have; larger first axes are taken as a ``[T, C]`` mistake."""

AudioLike = Union[np.ndarray, "torch.Tensor", str, Path]  # noqa: F821 (torch is optional here)


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile.

    Args:
        path: a wav/flac/ogg/mp3 file (any bit depth libsndfile reads, including 24-bit PCM).

    Returns:
        ``(waveform, sample_rate)`` with the waveform float32 ``[C, T]`` (channels first).

    Raises:
        AudioInputError: the path is missing, a directory, or not a readable audio file.
    """
    import soundfile

    data, sample_rate = _with_soundfile(path, lambda name: soundfile.read(name, dtype="float32", always_2d=True))
    return np.ascontiguousarray(data.T), int(sample_rate)


def _with_soundfile(path: str | Path, action):
    """``action(str(path))`` for an existing audio file; a folder, a missing or unreadable file -> AudioInputError."""
    import soundfile

    path = Path(path)
    if path.is_dir():
        raise AudioInputError(f"{path} is a directory, not an audio file; pass the path of a wav/flac/mp3/ogg file")
    if not path.exists():
        raise AudioInputError(f"audio file {path} does not exist; check the path")
    try:
        return action(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioInputError(
            f"cannot read {path} as audio ({err}); it is corrupt or not in a format soundfile/libsndfile "
            f"reads (wav, flac, ogg, mp3 with libsndfile >= 1.1). Convert it, e.g. `ffmpeg -i IN out.wav`"
        ) from err


def audio_duration(audio: object, sample_rate: int | None = None) -> float:
    """Duration in seconds of a file (read from its header, nothing decoded) or of ``[T]``/``[C, T]`` samples.

    Used to refuse audio that cannot fit a model's context before spending time tokenizing it.

    Raises:
        AudioInputError: the file is missing, a directory or unreadable; an array comes without a rate.
    """
    if isinstance(audio, (str, Path)):
        import soundfile

        path = Path(audio)
        info = _with_soundfile(path, soundfile.info)
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
        waveform, rate = load_audio(path)  # formats whose header has no length: decode to count
        return waveform.shape[-1] / rate
    valid_rate = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool) and sample_rate > 0
    if not valid_rate:
        raise AudioInputError(
            f"the sample rate of array audio must be a positive integer number of Hz; got {sample_rate!r}"
        )
    shape = np.shape(audio)
    return (shape[-1] if shape else 0) / int(sample_rate)


def write_audio(path: str | Path, waveform: object, sample_rate: int) -> Path:
    """Write ``[T]`` or ``[C, T]`` float audio as a 16-bit PCM wav, creating the folder; all or nothing.

    The samples go to a temporary file beside ``path`` that is renamed over it when complete, so an
    interrupted or failed write never leaves a truncated file behind.
    """
    import os

    import soundfile

    path = Path(path)
    data = np.asarray(_to_numpy(waveform), dtype=np.float32)
    data = data.T if data.ndim == 2 else data  # soundfile wants [T, C]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        soundfile.write(str(temporary), data, int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _to_numpy(wav: object) -> np.ndarray:
    """Turn a torch tensor or array-like into a numpy array without changing its values."""
    if hasattr(wav, "detach") and hasattr(wav, "cpu"):  # a torch.Tensor
        tensor = wav.detach().cpu()
        if str(tensor.dtype) in ("torch.bfloat16", "torch.float16"):
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(wav, np.ndarray):
        return wav
    if isinstance(wav, (list, tuple)):
        return np.asarray(wav)
    raise AudioInputError(
        f"audio of type {type(wav).__name__} is not supported; pass a float numpy array or torch tensor "
        "of shape [T] or [C, T], an int16/int32 PCM array, or a path to an audio file"
    )


def as_waveform(wav: object) -> np.ndarray:
    """Convert array/tensor audio to a float32 ``[C, T]`` numpy array (no mixing, no resampling).

    Integer PCM is scaled to [-1, 1]: int16 by 1/32768, int32 by 1/2**31, uint8 as 8-bit offset PCM.
    Raises :class:`AudioInputError` for unsupported dtypes, more than two dimensions, or a ``[T, C]``
    looking array (see the module docstring for the layout rule).
    """
    array = _to_numpy(wav)
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif array.dtype == np.int32:
        array = (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif array.dtype == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    else:
        raise AudioInputError(
            f"audio samples of dtype {array.dtype} are not supported; use float32/float64 in [-1, 1] or int16/int32 PCM"
        )
    if array.ndim == 1:
        return array[np.newaxis, :]
    if array.ndim != 2:
        raise AudioInputError(
            f"audio must have shape [T] or [C, T]; got {array.ndim} dimensions {tuple(array.shape)}. "
            "Squeeze batch dimensions before passing a single clip"
        )
    channels, frames = array.shape
    if channels > MAX_CHANNELS and frames <= MAX_CHANNELS:
        raise AudioInputError(
            f"audio of shape {tuple(array.shape)} looks like [T, C] (time first, soundfile's layout); "
            f"stepaudio reads 2-D audio as [C, T] with at most {MAX_CHANNELS} channels. Pass wav.T"
        )
    if channels > MAX_CHANNELS:
        raise AudioInputError(
            f"audio of shape {tuple(array.shape)} has {channels} channels (first axis); at most "
            f"{MAX_CHANNELS} are accepted in [C, T] layout. Mix or select channels first"
        )
    return array


def check_finite(wav: np.ndarray, what: str = "audio") -> None:
    """Raise :class:`AudioInputError` if ``wav`` holds NaN or infinite samples."""
    finite = np.isfinite(wav)
    if not finite.all():
        bad = int(wav.size - np.count_nonzero(finite))
        raise AudioInputError(
            f"{what} contains {bad} NaN/inf sample(s) out of {wav.size}; clean the signal "
            "(e.g. np.nan_to_num) before tokenizing"
        )


def to_mono(wav: np.ndarray) -> np.ndarray:
    """Mix ``[C, T]`` (or pass ``[T]``) to mono ``[T]`` by averaging channels (upstream does the same)."""
    if wav.ndim == 1:
        return wav
    if wav.shape[0] == 1:
        return wav[0]
    return wav.mean(axis=0, dtype=np.float64).astype(np.float32)


#: Peak that energy normalisation scales a clip to (upstream's ``energy_norm``).
TARGET_PEAK = 0.999
#: Peaks below this count as this (upstream's ``energy_norm``): quiet audio is amplified at most 99.9x.
PEAK_FLOOR = 0.01


def scale_to_peak(wav: np.ndarray, peak: float) -> np.ndarray:
    """``wav / max(peak, 0.01) * 0.999`` in float32: energy normalisation with a given (e.g. running) peak."""
    return (wav / max(peak, PEAK_FLOOR) * TARGET_PEAK).astype(np.float32)


def energy_norm(wav: np.ndarray) -> np.ndarray:
    """Upstream's energy normalisation: ``wav / max(max|wav|, 0.01) * 0.999``."""
    return scale_to_peak(wav, float(np.max(np.abs(wav))) if wav.size else 0.0)


def trim_silence(wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Upstream's prompt trimming: librosa trim (top_db 20, frame 512, hop 128), then fixed margins.

    The output starts 0.05 s before the detected speech (zero-padded on the left when the speech starts
    earlier than that) and is ``ceil(speech_len / 240) * 240 + 0.27 s`` samples long (0.05 s left plus
    0.22 s right margin), cut or zero-padded at the end.
    """
    import librosa

    _, (start, end) = librosa.effects.trim(wav, top_db=20, frame_length=512, hop_length=128)
    speech_blocks = math.ceil((end - start) / 240)
    left_margin = int(0.05 * sample_rate)
    start_index = start - left_margin
    if start_index > 0:
        trimmed = wav[start_index:]
    else:
        trimmed = np.concatenate([np.zeros(-start_index, dtype=np.float32), wav])
    out_length = int(speech_blocks * 240 + (0.05 + 0.22) * sample_rate)
    if out_length < trimmed.shape[0]:
        trimmed = trimmed[:out_length]
    else:
        trimmed = np.concatenate([trimmed, np.zeros(out_length - trimmed.shape[0], dtype=np.float32)])
    return trimmed.astype(np.float32, copy=False)
