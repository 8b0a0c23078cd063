"""vq06 semantic codes (25 Hz, 4096 codes) from ``speech_tokenizer_v1.onnx`` through onnxruntime.

Offline (as upstream): the 16 kHz audio is cut into 30-second windows (480,000 samples; a trailing
window shorter than 480 samples is dropped), each window gets its own whisper log-mel
(:mod:`stepaudio.tokenizer.mel`) and is encoded on its own; the window codes are concatenated.  A
window of ``N`` samples gives ``T = N // 160`` mel frames and ``ceil(ceil(T / 2) / 2)`` codes.

Streaming (:class:`SemanticStream`): the ONNX model is a whisper-style encoder with full attention over
its window, so a code depends on the whole 30 s window it sits in.  The stream therefore re-encodes a
bounded *segment* of the current offline window -- at most ``left_context`` seconds before the first
code it has not emitted yet, up to the newest sample -- and emits only codes that have at least
``right_context`` seconds of audio after them.  Segments start on the 640-sample code grid of the
offline window and never cross an offline window boundary, so

- the number of codes is always exactly the offline number, and every segment that reaches a window's
  end (or the end of the audio) sees the same right edge as offline;
- the clamp floor of the log-mel uses the running maximum of the window so far (never above the
  offline one);
- with ``right_context >= 30 s`` no code is emitted before its window is complete, every code is
  computed from the complete offline window and the stream equals offline exactly (tested), at the
  price of up to 30 s latency; with the default bounded context (3 s left, 1 s right) codes can differ
  where the segment's context or clamp floor differs from the full window's (tested bound on the
  tiny fixture: same length, at most 5% of vq06 codes differ; not measured on the real checkpoint).

Per-chunk work is one segment encode of at most ``left_context + chunk + right_context`` seconds,
independent of how much audio came before.

With ``causal_gain`` (``StepAudioTokenizer.stream(causal_gain=True)``) each segment is scaled, when it
is encoded, by ``0.999 / max(peak, 0.01)`` of the largest ``|sample|`` received so far; the running
clamp floor follows the gain (a gain ``g`` moves every log10-mel value by ``2 log10 g``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import PEAK_FLOOR, scale_to_peak
from ..errors import CheckpointError
from ..streaming import Stream
from .mel import HOP_LENGTH, log10_mel, normalize_log_mel

logger = logging.getLogger(__name__)

__all__ = ["SemanticTokenizer", "SemanticStream", "SemanticStreamState", "semantic_code_count"]

WINDOW_SAMPLES = 30 * 16000
MIN_WINDOW_SAMPLES = 480
SAMPLES_PER_CODE = 4 * HOP_LENGTH  # 640 samples = 40 ms


def semantic_code_count(num_samples: int) -> int:
    """Codes the ONNX model returns for one window of ``num_samples`` 16 kHz samples."""
    frames = num_samples // HOP_LENGTH
    return math.ceil(math.ceil(frames / 2) / 2)


def choose_onnx_providers(device_type: str) -> list[str]:
    """CUDA provider (with CPU fallback) when the device is CUDA and onnxruntime has it, else CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device_type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning(
            "the tokenizer runs on CUDA but onnxruntime %s has no CUDAExecutionProvider (available: %s); "
            "vq06 runs on CPU. Install onnxruntime-gpu for GPU vq06",
            onnxruntime.__version__,
            ", ".join(available),
        )
    return ["CPUExecutionProvider"]


class SemanticTokenizer:
    """The ``speech_tokenizer_v1.onnx`` session and the window logic around it."""

    def __init__(self, onnx_path: Path, device_type: str, folder: Path | None = None) -> None:
        import onnxruntime

        self.providers = choose_onnx_providers(device_type)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning ORT worker threads would compete with torch's threads for the same cores between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), sess_options=options, providers=self.providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            raise CheckpointError(
                f"onnxruntime cannot load {onnx_path} ({' '.join(str(err).split())}); the file is corrupt or "
                "incomplete. Re-download speech_tokenizer_v1.onnx of Step-Audio-Tokenizer",
                folder=folder,
                file=onnx_path,
            ) from err
        inputs = self.session.get_inputs()
        if len(inputs) != 2 or not self.session.get_outputs():
            raise CheckpointError(
                f"{onnx_path} has inputs {[i.name for i in inputs]}; expected two (feats [1, 128, T] float32, "
                "feats_length [1] int32) and an integer output (indices [1, T'])",
                folder=folder,
                file=onnx_path,
            )
        # Upstream addresses the inputs by position; so do we (names: feats, feats_length).
        self._feats_name = inputs[0].name
        self._length_name = inputs[1].name
        logger.info("vq06 ONNX tokenizer %s on onnxruntime providers %s", onnx_path.name, self.session.get_providers())

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        """Run the ONNX model on one normalised log-mel ``[128, T]``; returns int64 codes ``[T']``."""
        feats = np.ascontiguousarray(mel[np.newaxis], dtype=np.float32)
        length = np.array([feats.shape[2]], dtype=np.int32)
        (indices,) = self.session.run(None, {self._feats_name: feats, self._length_name: length})[:1]
        return np.asarray(indices).reshape(-1).astype(np.int64)

    def encode_window(self, audio: np.ndarray) -> np.ndarray:
        """Codes of one window (<= 30 s) of 16 kHz audio, normalised by its own log-mel maximum."""
        log_spec = log10_mel(audio)
        return self.encode_mel(normalize_log_mel(log_spec, log_spec.max()).numpy())

    def encode(self, audio: np.ndarray, on_progress: Callable[[int], object] | None = None) -> list[int]:
        """Offline vq06 codes of 16 kHz mono audio (30 s windows, tiny trailing window dropped).

        ``on_progress(samples)`` is called after each window with the number of samples it covered.
        """
        codes: list[int] = []
        for start in range(0, len(audio), WINDOW_SAMPLES):
            window = audio[start : start + WINDOW_SAMPLES]
            if len(window) < MIN_WINDOW_SAMPLES:
                if on_progress is not None:
                    on_progress(len(window))
                continue
            window_codes = self.encode_window(window)
            expected = semantic_code_count(len(window))
            if len(window_codes) != expected:
                raise CheckpointError(
                    f"speech_tokenizer_v1.onnx returned {len(window_codes)} codes for {len(window)} samples; "
                    f"expected {expected} (two stride-2 convolutions over {len(window) // HOP_LENGTH} mel frames)"
                )
            codes.extend(int(c) for c in window_codes)
            if on_progress is not None:
                on_progress(len(window))
        return codes


@dataclass
class SemanticStreamState:
    """Mutable state of a :class:`SemanticStream` (all positions are relative to the current 30 s window).

    Attributes:
        buffer: samples of the current window from ``buffer_start`` on.
        buffer_start: window position of ``buffer[0]`` (a multiple of 640 samples).
        received: samples of the current window received so far.
        emitted: codes of the current window emitted so far.
        running_max: largest log10-mel value seen in the current window (clamp floor is this - 8), of
            audio normalised with ``running_max_peak`` (``causal_gain``; else of the audio as fed).
        windows_done: completed 30 s windows.
        peak: with ``causal_gain``, the largest ``|sample|`` of the clip so far (all windows), else 0.
        running_max_peak: the ``peak`` that ``running_max`` refers to; when ``peak`` grows, the gain
            falls and ``running_max`` moves down by ``2 * log10`` of the gain ratio (a power spectrum).
    """

    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    buffer_start: int = 0
    received: int = 0
    emitted: int = 0
    running_max: float = -math.inf
    windows_done: int = 0
    peak: float = 0.0
    running_max_peak: float = 0.0


class SemanticStream(Stream[np.ndarray, list[int]]):
    """Incremental vq06 codes with bounded per-chunk work (see the module docstring for the design).

    ``feed(audio)`` returns the codes that became final; ``close()`` returns the codes of the last
    (partial) window -- a window shorter than 480 samples is dropped, as offline; ``reset()`` starts
    a new clip.

    With ``causal_gain`` the stream normalises the loudness itself, at encode time: the buffered
    segment is scaled by ``0.999 / max(peak, 0.01)`` with ``peak`` the largest ``|sample|`` received
    so far (look-ahead included), so every segment is scaled uniformly by the best peak known when
    it is encoded (see ``StepAudioTokenizer.stream``).
    """

    def __init__(
        self,
        tokenizer: SemanticTokenizer,
        left_context_s: float,
        right_context_s: float,
        min_emit_codes: int = 3,
        causal_gain: bool = False,
    ) -> None:
        super().__init__()
        if left_context_s < 0 or right_context_s < 0:
            raise ValueError(f"context lengths must be >= 0 s; got left {left_context_s}, right {right_context_s}")
        self.tokenizer = tokenizer
        # At least one code of left context keeps every segment longer than the STFT's reflect padding.
        self.left_context = max(1, math.ceil(left_context_s * 16000 / SAMPLES_PER_CODE)) * SAMPLES_PER_CODE
        self.right_context = math.ceil(right_context_s * 16000 / SAMPLES_PER_CODE) * SAMPLES_PER_CODE
        self.min_emit_codes = max(1, int(min_emit_codes))
        self.causal_gain = bool(causal_gain)
        self.state = SemanticStreamState()

    def _reset(self) -> None:
        self.state = SemanticStreamState()

    def _feed(self, audio: np.ndarray) -> list[int]:
        audio = np.asarray(audio, dtype=np.float32)
        if self.causal_gain and len(audio):
            self.state.peak = max(self.state.peak, float(np.max(np.abs(audio))))
        out: list[int] = []
        position = 0
        while position < len(audio):
            state = self.state
            take = min(len(audio) - position, WINDOW_SAMPLES - state.received)
            state.buffer = np.concatenate([state.buffer, audio[position : position + take]])
            state.received += take
            position += take
            if state.received == WINDOW_SAMPLES:
                out.extend(self._finish_window())
            else:
                out.extend(self._emit_ready())
        return out

    def _flush(self) -> list[int]:
        if self.state.received >= MIN_WINDOW_SAMPLES:
            return self._finish_window()
        self.state = SemanticStreamState(windows_done=self.state.windows_done, peak=self.state.peak)
        return []

    def _encode_segment(self) -> np.ndarray:
        """Encode the buffered segment; returns codes indexed from ``buffer_start // 640``."""
        state = self.state
        segment = state.buffer
        if self.causal_gain:
            segment = scale_to_peak(segment, state.peak)
            if state.peak != state.running_max_peak:
                ratio = max(state.running_max_peak, PEAK_FLOOR) / max(state.peak, PEAK_FLOOR)
                state.running_max += 2.0 * math.log10(ratio)  # -inf stays -inf
                state.running_max_peak = state.peak
        log_spec = log10_mel(segment)
        state.running_max = max(state.running_max, float(log_spec.max()))
        return self.tokenizer.encode_mel(normalize_log_mel(log_spec, state.running_max).numpy())

    def _take(self, codes: np.ndarray, stop: int) -> list[int]:
        """Emit window codes ``emitted .. stop`` and drop buffered audio that is no longer needed."""
        state = self.state
        first = state.buffer_start // SAMPLES_PER_CODE
        taken = [int(c) for c in codes[state.emitted - first : stop - first]]
        state.emitted = stop
        new_start = max(0, stop * SAMPLES_PER_CODE - self.left_context)
        if new_start > state.buffer_start:
            state.buffer = state.buffer[new_start - state.buffer_start :]
            state.buffer_start = new_start
        return taken

    def _emit_ready(self) -> list[int]:
        state = self.state
        ready = (state.received - self.right_context) // SAMPLES_PER_CODE
        if ready - state.emitted < self.min_emit_codes or len(state.buffer) < MIN_WINDOW_SAMPLES:
            return []
        return self._take(self._encode_segment(), ready)

    def _finish_window(self) -> list[int]:
        state = self.state
        total = semantic_code_count(state.received)
        codes = self._take(self._encode_segment(), total) if total > state.emitted else []
        # The next window starts empty; the clip's window count and peak carry on.
        self.state = SemanticStreamState(windows_done=state.windows_done + 1, peak=state.peak)
        return codes
