"""``StepAudioTokenizer``: Step-Audio's dual-codebook audio tokenizer (vq02 + vq06, 2:3 interleave)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..audio import as_waveform, check_finite, load_audio, resample, to_mono, trim_silence
from ..audio import energy_norm as normalize_energy
from ..device import resolve_device
from ..errors import AudioInputError, InvalidArgumentError
from ..validation import check_bool, check_float, check_int, describe_value, invalid_value
from .interleave import ids_to_string, interleave
from .layout import locate_tokenizer_files
from .linguistic import LinguisticStream, LinguisticTokenizer
from .semantic import SemanticStream, SemanticTokenizer
from .stream import TokenizerStream

logger = logging.getLogger(__name__)

__all__ = ["StepAudioTokenizer", "MIN_DURATION_S"]

SAMPLE_RATE = 16000
MIN_DURATION_S = 0.1

AudioInput = "np.ndarray | torch.Tensor | str | Path"

_PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]"


def _check_sr(sr: object, name: str = "sr") -> int | None:
    """``None`` (files carry their rate) or a positive whole number of Hz; bools and floats are refused."""
    if sr is None:
        return None
    return check_int(sr, name, minimum=1, hint="the sample rate of array audio in Hz, e.g. 16000")


class StepAudioTokenizer:
    """Turns speech into Step-Audio's interleaved audio tokens (upstream call shapes kept).

    Loads the official ``Step-Audio-Tokenizer`` folder unchanged: ``linguistic_tokenizer.npy`` and the
    ``dengcunqin/...-online`` streaming Paraformer (rebuilt natively, no funasr) for vq02,
    ``speech_tokenizer_v1.onnx`` (through onnxruntime) for vq06.

    Accepted audio: float numpy arrays / torch tensors of shape ``[T]`` or ``[C, T]`` (channels are
    averaged; ``[T, C]``-looking arrays are refused, see :mod:`stepaudio.audio`), int16/int32 PCM
    arrays, or a path to a wav/flac/ogg/mp3 file (``sr`` omitted).  Any sample rate is accepted and
    resampled to 16 kHz like upstream's ``torchaudio.transforms.Resample`` (:mod:`stepaudio.resample`);
    16 kHz input is used as is.

    Refused with :class:`~stepaudio.errors.AudioInputError`: empty audio, audio shorter than 0.1 s,
    NaN/inf samples, and all-zero audio (digital silence carries nothing to tokenize and usually means
    a failed recording; streams accept silent chunks).

    Args:
        path: the ``Step-Audio-Tokenizer`` folder, or a folder that contains it under that name.
        device: torch device for the Paraformer and the centroid search (``None``: CUDA if available,
            else CPU).  onnxruntime uses its CUDA provider when the device is CUDA and the provider is
            installed, else CPU; the choice is made once here and logged once.
    """

    def __init__(self, path: str | Path, device: str | torch.device | None = None) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            detail = f"must be the path of the Step-Audio-Tokenizer folder, got {describe_value(path)}"
            raise InvalidArgumentError.about("path", detail, path)
        self.device = resolve_device(device)
        self.files = locate_tokenizer_files(path)  # the layout is checked before anything is loaded
        self.linguistic = LinguisticTokenizer(
            self.files.paraformer_folder, self.files.linguistic_centroids, self.device, self.files.folder
        )
        self.semantic = SemanticTokenizer(self.files.semantic_onnx, self.device.type, self.files.folder)
        logger.info(
            "StepAudioTokenizer from %s: vq02 on %s, vq06 on %s",
            self.files.folder,
            self.device,
            self.semantic.session.get_providers()[0],
        )

    # ----------------------------------------------------------------------------------- input handling
    @staticmethod
    def _read(wav: object, sr: int | None) -> tuple[np.ndarray, int, str]:
        """Any accepted input -> (mono float32 [T], sample rate, description for messages)."""
        if isinstance(wav, (str, Path)):
            waveform, file_sr = load_audio(wav)
            if sr is not None and sr != file_sr:
                raise AudioInputError(
                    f"sr={sr} was passed with the file {wav}, which is {file_sr} Hz; omit sr for files"
                )
            what, sr = f"audio file {wav}", file_sr
        else:
            if sr is None:
                raise AudioInputError(
                    "the sample rate is required for array/tensor audio: call tok(wav, sr) or tok.wav2token(wav, sr)"
                )
            waveform, what = as_waveform(wav), f"audio array of shape {tuple(np.shape(wav))}"
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise AudioInputError(f"sample rate must be a positive integer number of Hz; got {sr!r}")
        if waveform.size == 0:
            raise AudioInputError(f"{what} is empty; nothing to tokenize")
        check_finite(waveform, what)
        return to_mono(waveform), int(sr), what

    def preprocess_wav(
        self, wav: object, sr: int | None = None, enable_trim: bool = True, normalize: bool = True
    ) -> np.ndarray:
        """Upstream pre-processing: mono, 16 kHz (torchaudio-equal resampler), energy normalisation, optional trim."""
        sr = _check_sr(sr)
        enable_trim = check_bool(enable_trim, "enable_trim")
        normalize = check_bool(normalize, "normalize")
        mono, sr, what = self._read(wav, sr)
        if mono.shape[0] < MIN_DURATION_S * sr:
            raise AudioInputError(
                f"{what} lasts {mono.shape[0] / sr:.3f} s; at least {MIN_DURATION_S} s is needed "
                "(one 2+3 token group covers 0.12 s)"
            )
        if not np.any(mono):
            raise AudioInputError(
                f"{what} is all zeros (digital silence); there is nothing to tokenize. Check the recording"
            )
        audio = resample(mono, sr, SAMPLE_RATE)
        if normalize:
            audio = normalize_energy(audio)
        if enable_trim:
            audio = trim_silence(audio, SAMPLE_RATE)
        return audio

    # ---------------------------------------------------------------------------------------- offline
    def wav2token(
        self,
        wav: object,
        sr: int | None = None,
        enable_trim: bool = True,
        energy_norm: bool = True,
        progress: bool = False,
    ) -> tuple[list[int], list[int], list[int]]:
        """Tokenize one clip (upstream's ``wav2token``).

        Args:
            wav: audio (see the class docstring); a file path when ``sr`` is omitted.
            sr: sample rate of array/tensor audio (a positive whole number of Hz).
            enable_trim: trim leading/trailing silence (upstream: on for TTS prompts, off for chat input).
            energy_norm: scale to peak 0.999 (upstream default on).
            progress: show tqdm bars on stderr over the vq02 strides and the vq06 windows of the clip
                (seconds of audio done; the bars vanish when done).  The result is the same either way.

        Returns:
            ``(interleaved LLM ids (65536 + N), vq02 codes 0..1023, vq06 codes 0..4095)``.

        Raises:
            InvalidArgumentError: ``sr`` not a positive whole number, a flag that is not a bool.
            AudioInputError: unreadable, empty, too short, silent or non-finite audio.
        """
        sr = _check_sr(sr)
        enable_trim = check_bool(enable_trim, "enable_trim")
        energy_norm = check_bool(energy_norm, "energy_norm")
        progress = check_bool(progress, "progress")
        audio = self.preprocess_wav(wav, sr, enable_trim=enable_trim, normalize=energy_norm)
        return self._tokenize_16k(audio, progress)

    def _tokenize_16k(self, audio: np.ndarray, progress: bool = False) -> tuple[list[int], list[int], list[int]]:
        if not progress:
            vq02 = self.linguistic.encode(audio)
            vq06 = self.semantic.encode(audio)
            return interleave(vq02, vq06), vq02, vq06
        with _progress_bar(audio, "vq02 (linguistic)") as advance:
            vq02 = self.linguistic.encode(audio, on_progress=advance)
        with _progress_bar(audio, "vq06 (semantic)") as advance:
            vq06 = self.semantic.encode(audio, on_progress=advance)
        return interleave(vq02, vq06), vq02, vq06

    def __call__(self, wav: object, sr: int | None = None) -> str:
        """The ``<audio_N>...`` string of a clip, as upstream's ``tok(audio, sr)`` (no trim, energy norm on)."""
        ids, _, _ = self.wav2token(wav, sr, enable_trim=False, energy_norm=True)
        return ids_to_string(ids)

    def batch_wav2token(
        self,
        wavs: Iterable[object],
        sr: int | None = None,
        enable_trim: bool = True,
        energy_norm: bool = True,
        progress: bool = False,
        batch_size: int = 8,
    ) -> list[tuple[list[int], list[int], list[int]]]:
        """:meth:`wav2token` over many clips (paths, or arrays with ``sr`` / ``(array, sr)`` pairs).

        Every clip is read and checked before any is encoded (a bad clip fails fast, naming itself).
        The vq02 encoder runs ``batch_size`` clips at a time in one batch; the codes equal
        :meth:`wav2token` of each clip.

        Args:
            progress: show a tqdm progress bar over the clips (while they are read and checked).
            batch_size: clips encoded together by the vq02 encoder (>= 1).
        """
        check_int(
            batch_size, "batch_size", minimum=1, hint="it is how many clips the vq02 encoder runs at once (e.g. 8)"
        )
        sr = _check_sr(sr)
        enable_trim = check_bool(enable_trim, "enable_trim")
        energy_norm = check_bool(energy_norm, "energy_norm")
        progress = check_bool(progress, "progress")
        if isinstance(wavs, (str, bytes, Path)) or hasattr(wavs, "shape") or not isinstance(wavs, Iterable):
            detail = (
                "must be a list of clips (paths, arrays with sr, or (array, sr) pairs), "
                f"got {describe_value(wavs)}; use wav2token for one clip"
            )
            raise InvalidArgumentError.about("wavs", detail, wavs)
        items: Sequence[object] = list(wavs)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc="tokenize", unit="clip")
        clips = []
        for index, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], (int, float)):
                clip, clip_sr = item
                clip_sr = _check_sr(clip_sr, f"the sample rate of clip {index}")
            else:
                clip, clip_sr = item, sr
            try:
                clips.append(self.preprocess_wav(clip, clip_sr, enable_trim=enable_trim, normalize=energy_norm))
            except AudioInputError as error:
                raise AudioInputError(f"clip {index}: {error}") from None
        results = []
        for start in range(0, len(clips), batch_size):
            group = clips[start : start + batch_size]
            vq02_batch = self.linguistic.encode_batch(group)
            for audio, vq02 in zip(group, vq02_batch, strict=True):
                vq06 = self.semantic.encode(audio)
                results.append((interleave(vq02, vq06), vq02, vq06))
        return results

    # -------------------------------------------------------------------------------------- streaming
    def stream(
        self,
        sample_rate: int,
        *,
        peak: float | None = None,
        causal_gain: bool = False,
        semantic_left_context_s: float = 3.0,
        semantic_right_context_s: float = 1.0,
    ) -> TokenizerStream:
        """Start an independent streaming session (``feed(chunk) -> ids``, ``close() -> ids``, ``reset()``).

        The concatenated output equals ``wav2token(audio, sample_rate, enable_trim=False,
        energy_norm=False)[0]`` for vq02 exactly and for vq06 up to the bounded-context approximation
        described in :mod:`stepaudio.tokenizer.semantic` (exact when ``semantic_right_context_s >= 30``).

        **Loudness.**  Offline tokenization scales the whole clip by ``0.999 / max(peak, 0.01)``
        (``energy_norm=True``, the default of ``wav2token`` and ``__call__``), so the codes do not
        depend on the recording level.  A stream cannot know the clip's peak; it has three choices:

        - neither ``peak`` nor ``causal_gain`` (default): no normalisation; the output equals offline
          ``energy_norm=False``.  A quiet microphone gives codes unlike offline ``energy_norm=True``.
        - ``peak``: the 16 kHz peak is known in advance; samples are scaled exactly as offline
          ``energy_norm=True`` (same float32 operations), so the output equals it.
        - ``causal_gain=True``: a running peak instead.  ``running_peak`` is the largest ``|sample|`` of
          the 16 kHz audio fed so far, the current chunk included, and the gain is
          ``0.999 / max(running_peak, 0.01)``: nothing exceeds 0.999, the gain never rises, and when
          the first chunk holds the clip's peak (e.g. the whole clip in one chunk) the output equals
          offline ``energy_norm=True`` (exactly with ``semantic_right_context_s >= 30``).  Before the
          loudest part arrives, audio is scaled more than offline would scale it (at most 99.9x,
          the 0.01 floor).  ``state.running_peak`` and ``state.gain`` show the current values.

          The gain is applied when audio is *encoded*, not when it arrives: each 240 ms vq02 stride
          is scaled when it is complete, and each vq06 segment -- the bounded window of left
          context, new codes and right context that the stream re-encodes anyway -- is scaled as a
          whole, with the peak of everything received by then (the vq06 clamp floor is moved by the
          gain change).  So a code is computed from uniformly scaled audio, with a peak that already
          includes its look-ahead.  Applying the gain to each chunk as it arrives (the buffered
          audio then mixes gains) was measured too (``benchmarks/loudness.py`` setting: four shared
          clips at peaks 0.05 / 0.3 / 1.0 after 0.3 s of silence, 32 ms chunks, tiny fixture): ids
          agreeing with offline ``energy_norm=True`` 92.5% per chunk vs 95.8% at encode time with a
          0.3 s right context (92.7% vs 98.1% with 1 s); without gain 65%.  The output is
          independent of the input level as long as the running peak is above 0.01 (bit for bit for
          power-of-two level changes; otherwise up to float rounding of the scaled samples).

        Args:
            sample_rate: rate of the chunks that will be fed (resampled to 16 kHz by
                :class:`~stepaudio.resample.ResamplerStream`, equal to offline resampling).
            peak: the peak of the 16 kHz audio, if known in advance (see above); ``None``: unknown.
            causal_gain: normalise with the running peak (see above); not together with ``peak``.
            semantic_left_context_s / semantic_right_context_s: audio re-encoded before / required after
                a vq06 code before it is emitted (latency is about the right context).
        """
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise AudioInputError(f"stream sample_rate must be a positive integer number of Hz; got {sample_rate!r}")
        causal_gain = check_bool(causal_gain, "causal_gain")
        if peak is not None:
            check_float(peak, "peak", minimum=0, hint="the peak of the 16 kHz audio, or None to not normalise")
            if causal_gain:
                raise invalid_value(
                    "peak",
                    "None when causal_gain=True",
                    peak,
                    "pass peak (the clip's peak, known in advance) or causal_gain=True (a running peak), not both",
                )
        check_float(semantic_left_context_s, "semantic_left_context_s", minimum=0)
        check_float(semantic_right_context_s, "semantic_right_context_s", minimum=0)
        return TokenizerStream(
            sample_rate=int(sample_rate),
            linguistic=LinguisticStream(self.linguistic, causal_gain=causal_gain),
            semantic=SemanticStream(
                self.semantic, semantic_left_context_s, semantic_right_context_s, causal_gain=causal_gain
            ),
            peak=None if peak is None else float(peak),
        )


@contextmanager
def _progress_bar(audio: np.ndarray, desc: str) -> Iterator[Callable[[int], object]]:
    """A tqdm bar in seconds of 16 kHz audio, on stderr, gone when done; yields ``advance(samples)``."""
    from tqdm import tqdm

    bar = tqdm(
        total=len(audio) / SAMPLE_RATE, desc=desc, unit="s", leave=False, file=sys.stderr, bar_format=_PROGRESS_FORMAT
    )
    try:
        yield lambda samples: bar.update(samples / SAMPLE_RATE)
    finally:
        bar.close()
