"""Band-limited resampling that reproduces ``torchaudio.transforms.Resample(orig, new)`` with its defaults.

This module is the one place where stepaudio changes sample rates.  It computes what the original
Step-Audio code gets from ``torchaudio.transforms.Resample(orig_freq, new_freq)`` (method
``sinc_interp_hann``, ``lowpass_filter_width=6``, ``rolloff=0.99``, ``dtype=None``) without importing
torchaudio, offline (:func:`resample`) and in pieces (:class:`ResamplerStream`).

The algorithm, in short:

1. Both rates are divided by their greatest common divisor, giving ``orig`` input samples for every
   ``new`` output samples.  The output is a polyphase FIR filter: output ``j`` belongs to *frame*
   ``f = j // new`` and *phase* ``p = j % new``, and is the dot product of the filter row of phase
   ``p`` with ``K = 2 * width + orig`` consecutive samples of the input, starting ``f * orig`` samples
   into the input padded with ``width`` zeros in front (``width`` zeros of look-back, one frame of
   ``orig`` samples and ``width`` samples of look-ahead).
2. The filter is a windowed sinc low-pass at ``cutoff = 0.99 * min(orig, new)`` (in units of the
   reduced rates) that reaches ``6`` zero crossings on each side: ``width = ceil(6 * orig / cutoff)``.
   Row ``p`` samples it at the offsets ``(i / orig - p / new) * cutoff`` for ``i`` in
   ``[-width, width + orig)``, clipped to ``[-6, 6]``; the window is Hann shaped,
   ``cos(t * pi / 12) ** 2``; the sinc is ``sin(pi t) / (pi t)`` (1 at 0); the row is scaled by
   ``cutoff / orig``.  The rows are evaluated in float64 and stored as float32, exactly as torchaudio
   does when ``dtype`` is ``None`` -- including torchaudio's detail that the phase term ``p / new`` is
   computed in float32 (an int64 ``arange`` divided by an int gives torch's default float dtype)
   before it is added to the float64 offsets.  The resulting kernel is bit-identical to torchaudio's.
3. The input is padded with ``width`` zeros on the left and ``width + orig`` zeros on the right and
   convolved with stride ``orig`` (``torch.nn.functional.conv1d``, ``new`` output channels), giving
   ``new`` outputs per frame.  The output is cut to torchaudio's length:
   ``ceil(float32(new * T / orig))`` -- torchaudio turns the exact quotient into a float32 tensor
   before the ``ceil``, so for inputs of a few seconds and more whose exact quotient lies just above an
   integer the output is one sample shorter than ``ceil(new * T / orig)`` (see :func:`resampled_length`).

Numerics: offline, the whole padded input goes through one float32 ``conv1d`` with the float32 kernel,
the same call torchaudio makes, so the output is bit-identical to torchaudio's on the same machine
(inputs above ``_SINGLE_CALL_SAMPLES`` samples, over 20 minutes at 48 kHz, are convolved in blocks to
bound memory, which can change the last float32 bit).  The stream cannot make that one call; it
accumulates each output in float64 from the same float32 samples and kernel and rounds once, which
makes its values independent of the chunking and within a few float32 ulps (below 1e-6 absolute for
audio in [-1, 1]) of the offline output.

Equal rates return the input unchanged.  Unlike the original code, which only accepts audio of at
least 16 kHz, upsampling (e.g. 8 kHz -> 16 kHz) is accepted: it is the same formula.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import AudioInputError
from .streaming import Stream

__all__ = ["resample", "resampled_length", "ResamplerStream", "ResamplerState"]

ZERO_CROSSINGS = 6
"""torchaudio's ``lowpass_filter_width``: zero crossings of the sinc kept on each side."""

ROLLOFF = 0.99
"""torchaudio's ``rolloff``: the low-pass cutoff as a fraction of the lower rate's Nyquist frequency."""

MAX_KERNEL_VALUES = 1 << 24
"""Largest polyphase kernel (``new * K`` float32 values, 64 MiB) built; rate pairs that need more are refused."""

_BLOCK_INPUT_SAMPLES = 1 << 20
"""About how many input samples one streaming convolution call sees (bounds scratch memory)."""

_SINGLE_CALL_SAMPLES = 1 << 26
"""Offline inputs up to this length are convolved in one float32 call, exactly as torchaudio does."""


@dataclass(frozen=True)
class _Kernel:
    """The polyphase filter of one rate pair (rates reduced by their gcd)."""

    orig: int
    new: int
    width: int
    weight32: torch.Tensor  # the float32 kernel, shape [new, 1, 2 * width + orig] (offline, as torchaudio)
    weight: torch.Tensor  # float64 copy of it (streaming: chunk-independent sums)

    @property
    def taps(self) -> int:
        return self.weight.shape[-1]


def _check_rate(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise AudioInputError(
            f"{name} must be a positive integer number of Hz; got {value!r}. Pass the rate as an int, e.g. 16000"
        )
    return int(value)


def _check_rates(orig_sr: object, target_sr: object) -> tuple[int, int]:
    return _check_rate(orig_sr, "orig_sr"), _check_rate(target_sr, "target_sr")


@functools.lru_cache(maxsize=16)
def _kernel(orig_sr: int, target_sr: int) -> _Kernel:
    """Build (once per rate pair) the kernel torchaudio's default ``Resample(orig_sr, target_sr)`` holds."""
    divisor = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // divisor, target_sr // divisor
    cutoff = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / cutoff)
    taps = 2 * width + orig
    if new * taps > MAX_KERNEL_VALUES:
        raise AudioInputError(
            f"resampling {orig_sr} Hz -> {target_sr} Hz reduces to the ratio {orig}:{new}, whose filter would "
            f"hold {new * taps:,} values (more than {MAX_KERNEL_VALUES:,}); convert the audio to a common rate "
            "(e.g. 16000, 22050, 44100 or 48000 Hz) first"
        )
    # Input offsets of the taps, in input periods: float64.
    offsets = torch.arange(-width, width + orig, dtype=torch.float64).view(1, 1, taps) / orig
    # Output phases p / new, in input periods.  torchaudio divides an int64 arange by an int, which
    # yields float32; the float32 quotient is then promoted to float64 by the addition below.
    phases = torch.arange(0, -new, -1, dtype=torch.float32).view(new, 1, 1) / new
    t = (phases + offsets) * cutoff
    t = t.clamp(-ZERO_CROSSINGS, ZERO_CROSSINGS)
    hann = torch.cos(t * math.pi / ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=torch.float64), torch.sin(t) / t)
    rows = sinc * (hann * (cutoff / orig))
    weight32 = rows.to(torch.float32)  # stored as float32, like torchaudio
    return _Kernel(orig=orig, new=new, width=width, weight32=weight32, weight=weight32.to(torch.float64))


def _output_length(samples: int, kernel: _Kernel) -> int:
    """torchaudio's output length for ``samples`` input samples (see :func:`resampled_length`)."""
    if samples <= 0:
        return 0
    ratio = np.float32(kernel.new * samples / kernel.orig)  # torchaudio: torch.as_tensor(python float) is float32
    return min(math.ceil(float(ratio)), kernel.new * (samples // kernel.orig + 1))


def resampled_length(samples: int, orig_sr: int, target_sr: int) -> int:
    """Number of samples :func:`resample` (and torchaudio's default ``Resample``) returns for ``samples`` inputs.

    It is ``ceil(new * samples / orig)`` with ``orig:new`` the gcd-reduced rates, except that -- like
    torchaudio -- the quotient is rounded to float32 before the ``ceil`` (and the result never exceeds
    the ``new * (samples // orig + 1)`` outputs the padded convolution produces).  Below 2**24 output
    samples this is the exact ceiling or, for inputs of a few seconds and more whose exact quotient lies
    just above an integer, one sample less; beyond, it can be a few samples off either way.  Equal rates
    give ``samples``.
    """
    orig_sr, target_sr = _check_rates(orig_sr, target_sr)
    if orig_sr == target_sr:
        return int(samples)
    return _output_length(int(samples), _kernel(orig_sr, target_sr))


def _convolve(
    kernel: _Kernel, segment: Callable[[int, int], np.ndarray], frames: int, out: np.ndarray, exact: bool = True
) -> None:
    """Compute ``frames`` output frames into ``out`` (``[C, frames * new]``, float32).

    ``segment(start, stop)`` returns ``[C, stop - start]`` samples of the zero-padded input, counted
    from the first frame's first tap.  Work is split into blocks of whole frames (about
    ``_BLOCK_INPUT_SAMPLES`` inputs each) so that scratch memory stays at some tens of MiB however long
    the input is; each output depends only on its own taps, so the split does not change the values.
    """
    block = max(1, _BLOCK_INPUT_SAMPLES // kernel.orig)
    for first in range(0, frames, block):
        last = min(frames, first + block)
        chunk = segment(first * kernel.orig, (last - 1) * kernel.orig + kernel.taps)
        signal = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        weight = kernel.weight if exact else kernel.weight32
        signal = signal.to(weight.dtype)
        values = torch.nn.functional.conv1d(signal[:, None, :], weight, stride=kernel.orig)
        # [C, new, frames] -> frame-major [C, frames * new]
        out[:, first * kernel.new : last * kernel.new] = values.transpose(1, 2).reshape(signal.shape[0], -1).numpy()


def _as_float32(wav: object, what: str) -> np.ndarray:
    array = np.asarray(wav)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioInputError(
            f"{what} must hold float samples in [-1, 1]; got dtype {array.dtype}. Convert PCM first "
            "(stepaudio.audio.as_waveform does)"
        )
    return array.astype(np.float32, copy=False)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample float audio like ``torchaudio.transforms.Resample(orig_sr, target_sr)`` with default settings.

    Args:
        wav: mono ``[T]`` or channels-first ``[C, T]`` float audio (float64 is converted to float32,
            the precision torchaudio's cached kernel works in).
        orig_sr: the rate of ``wav`` in Hz (positive int).
        target_sr: the wanted rate in Hz (positive int); higher than ``orig_sr`` is fine.

    Returns:
        float32 ``[T']`` or ``[C, T']`` with ``T' = resampled_length(T, orig_sr, target_sr)``; ``wav``
        itself (the same object, unchanged) when the rates are equal.

    Raises:
        AudioInputError: a rate is not a positive int, ``wav`` is not float audio of 1 or 2 dimensions,
            or the reduced rate ratio is so unusual that its filter would be too large.
    """
    orig_sr, target_sr = _check_rates(orig_sr, target_sr)
    if orig_sr == target_sr:
        return wav
    signal = _as_float32(wav, "resample() input")
    if signal.ndim not in (1, 2):
        raise AudioInputError(
            f"resample() takes audio of shape [T] or [C, T]; got shape {signal.shape}. Squeeze batch dimensions"
        )
    rows = signal[np.newaxis] if signal.ndim == 1 else signal
    kernel = _kernel(orig_sr, target_sr)
    length = _output_length(rows.shape[1], kernel)
    if rows.shape[1] <= _SINGLE_CALL_SAMPLES:
        # torchaudio's call: pad width zeros left and width + orig right, one strided float32 conv1d.
        padded_input = torch.nn.functional.pad(torch.from_numpy(rows), (kernel.width, kernel.width + kernel.orig))
        values = torch.nn.functional.conv1d(padded_input[:, None, :], kernel.weight32, stride=kernel.orig)
        values = values.transpose(1, 2).reshape(rows.shape[0], -1)[:, :length].numpy()
        return values[0] if signal.ndim == 1 else np.ascontiguousarray(values)
    frames = -(-length // kernel.new)
    out = np.empty((rows.shape[0], frames * kernel.new), dtype=np.float32)

    def padded(start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of ``width`` zeros + the input + zeros."""
        piece = np.zeros((rows.shape[0], stop - start), dtype=np.float32)
        first, last = max(start - kernel.width, 0), min(stop - kernel.width, rows.shape[1])
        if last > first:
            piece[:, first + kernel.width - start : last + kernel.width - start] = rows[:, first:last]
        return piece

    _convolve(kernel, padded, frames, out, exact=False)
    return out[0, :length] if signal.ndim == 1 else np.ascontiguousarray(out[:, :length])


@dataclass
class ResamplerState:
    """What a :class:`ResamplerStream` carries between chunks.

    Attributes:
        history: the zero-padded input from the first tap of frame ``frame`` on (float32); after every
            ``feed`` it is shorter than one filter length (``2 * width + orig`` samples of the reduced
            rates), except for a few frames more on inputs of an hour or more, where torchaudio's float32 output
            length caps what may be returned.
        frame: index of the first frame not yet fully returned.
        samples_in: input samples received.
        samples_out: output samples returned.
    """

    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    frame: int = 0
    samples_in: int = 0
    samples_out: int = 0


class ResamplerStream(Stream[np.ndarray, np.ndarray]):
    """Streaming form of :func:`resample`: ``feed(chunk) -> new samples``, ``close() -> the rest``.

    ``feed`` returns every output sample whose filter taps all lie in the input received so far (and
    never more than :func:`resampled_length` of that input, so nothing returned can turn out to be past
    the end); ``close`` computes the remaining samples with the same zero padding as the offline
    function.  The concatenated outputs equal ``resample(whole_input)`` in length exactly and in value
    (bit for bit in practice; always within float32 rounding), for any chunking.  The state holds less
    than one filter length of input.  Output lags input by at most ``width + orig`` input samples of the
    reduced rates (the filter's look-ahead plus one frame): 10 ms at 44.1 kHz -> 16 kHz, 1 ms at
    8 kHz -> 16 kHz.

    Equal rates pass chunks through (converted to float32).

    Args:
        orig_sr: rate of the chunks that will be fed, in Hz (positive int).
        target_sr: rate of the output, in Hz (positive int).
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        super().__init__()
        self.orig_sr, self.target_sr = _check_rates(orig_sr, target_sr)
        self._kernel = None if self.orig_sr == self.target_sr else _kernel(self.orig_sr, self.target_sr)
        self.state = self._initial_state()

    def _initial_state(self) -> ResamplerState:
        width = 0 if self._kernel is None else self._kernel.width
        return ResamplerState(history=np.zeros(width, dtype=np.float32))

    def _reset(self) -> None:
        self.state = self._initial_state()

    def _feed(self, piece: np.ndarray) -> np.ndarray:
        chunk = _as_float32(piece, "ResamplerStream.feed() chunk")
        if chunk.ndim != 1:
            raise AudioInputError(f"ResamplerStream takes mono chunks of shape [T]; got shape {chunk.shape}")
        state = self.state
        state.samples_in += chunk.shape[0]
        if self._kernel is None:
            state.samples_out += chunk.shape[0]
            return chunk
        if chunk.shape[0]:
            state.history = np.concatenate([state.history, chunk])
        return self._emit()

    def _flush(self) -> np.ndarray:
        kernel = self._kernel
        if kernel is None:
            return np.zeros(0, dtype=np.float32)
        state = self.state
        # Zero-extend the history up to the last frame the output still needs (within torchaudio's padding).
        frames_needed = -(-_output_length(state.samples_in, kernel) // kernel.new) - state.frame
        short = (frames_needed - 1) * kernel.orig + kernel.taps - state.history.shape[0]
        if frames_needed > 0 and short > 0:
            state.history = np.concatenate([state.history, np.zeros(short, dtype=np.float32)])
        out = self._emit()
        state.history = np.zeros(0, dtype=np.float32)
        return out

    def _emit(self) -> np.ndarray:
        """Return the outputs whose taps are all in ``history``, up to the output length of the input so far."""
        kernel, state = self._kernel, self.state
        held = state.history.shape[0]
        complete = (held - kernel.taps) // kernel.orig + 1 if held >= kernel.taps else 0
        stop = min((state.frame + complete) * kernel.new, _output_length(state.samples_in, kernel))
        if stop <= state.samples_out:
            return np.zeros(0, dtype=np.float32)
        frames = -(-stop // kernel.new) - state.frame
        values = np.empty((1, frames * kernel.new), dtype=np.float32)
        history = state.history
        _convolve(kernel, lambda start, end: history[np.newaxis, start:end], frames, values)
        base = state.frame * kernel.new
        out = values[0, state.samples_out - base : stop - base]
        state.samples_out = stop
        done = stop // kernel.new - state.frame  # frames returned in full
        state.frame += done
        state.history = history[done * kernel.orig :].copy()
        return out
