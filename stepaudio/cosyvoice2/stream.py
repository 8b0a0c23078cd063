"""``CosyVoice2Stream``: streaming EditX decoding, mixed audio code pieces in, 24 kHz waveform chunks out.

Made by :meth:`CosyVoice2Decoder.stream() <stepaudio.cosyvoice2.decoder.CosyVoice2Decoder.stream>`.

Flow.  As in the original, the prompt is encoded first (once ``pre_lookahead_len`` steps of speech are
known), then chunks of 15, 24, 48, 48, ... steps (25 steps/s, 3 per group of 5 codes), each as soon as
its steps and the ``pre_lookahead_len`` steps after it have arrived; ``close`` decodes the rest.  Every
chunk reuses the keys/values and convolution inputs of the earlier chunks (the DiT keeps the prompt
and the last 96 frames), so a chunk's mel is final when it is made and costs the same wherever it
falls in the utterance.  The mel equals :meth:`token_to_wav_offline(..., attention="chunked")
<stepaudio.cosyvoice2.decoder.CosyVoice2Decoder.token_to_wav_offline>` up to float rounding.

Vocoder.  Each vocoder call covers the new final mel frames except the last ``vocoder_lookahead_frames``,
with ``vocoder_context_frames`` earlier frames as context and the held-back frames as look-ahead; the
harmonic phase and the noise are indexed by absolute sample, so when both margins exceed the vocoder's
receptive field the streamed waveform equals the offline one (no cross-fade is needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..cosyvoice.flow import FrameNoise
from ..cosyvoice.hift import SampleNoise
from ..streaming import Stream
from .flow import ChunkPlan, FlowStreamState
from .hift import SourceCarry
from .tokens import GROUP_SIZE, check_mixed_tokens, log_misaligned, mixed_to_dual

if TYPE_CHECKING:
    from .decoder import CosyVoice2Decoder

__all__ = ["CosyVoice2Stream", "CosyVoice2StreamState", "StreamConfig"]


@dataclass(frozen=True)
class StreamConfig:
    """Chunking of a :class:`CosyVoice2Stream` (steps: 25/s, 3 per 5 codes; mel frames: 50/s, 480 samples each).

    Attributes:
        chunk_steps: steps of the first chunks after the prompt; the last value repeats (original: 15, 24, 48
            = 0.6 s, 0.96 s, 1.92 s).  The first audio therefore needs ``chunk_steps[0] + pre_lookahead_len``
            steps (30 codes with the original's values).
        estimator_context_frames: non-prompt frames the DiT keeps attending to (original: 96).
        vocoder_context_frames: already vocoded mel frames re-vocoded as left context.
        vocoder_lookahead_frames: final mel frames held back as the vocoder's right context.  The HiFT's
            receptive field is about 12 frames each side (measured: with 8 / 10 / 12 frames of both the
            streamed waveform differs from the offline one by 4e-5 / 1.5e-6 / 1.3e-7 at most), so 12 and 12
            make streaming exact up to float rounding; the first audio comes with the first chunk
            (``2 * chunk_steps[0] - 12`` frames of it, 0.36 s with the original's chunks).
    """

    chunk_steps: tuple[int, ...] = (15, 24, 48)
    estimator_context_frames: int = 96
    vocoder_context_frames: int = 12
    vocoder_lookahead_frames: int = 12

    def __post_init__(self) -> None:
        if not self.chunk_steps or any(int(size) < 1 for size in self.chunk_steps):
            raise ValueError(f"StreamConfig.chunk_steps must be positive step counts, got {self.chunk_steps}")
        for name in ("estimator_context_frames", "vocoder_context_frames", "vocoder_lookahead_frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"StreamConfig.{name} must be >= 0, got {getattr(self, name)}")

    def plan(self, lookahead_steps: int) -> ChunkPlan:
        """The flow's :class:`ChunkPlan` for an encoder looking ``lookahead_steps`` ahead."""
        return ChunkPlan(tuple(int(size) for size in self.chunk_steps), lookahead_steps, self.estimator_context_frames)


@dataclass
class CosyVoice2StreamState:
    """All mutable state of a :class:`CosyVoice2Stream` (step/frame indices count from the first speech step)."""

    codes: list[int] = field(default_factory=list)
    steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))  # complete groups
    prompt_done: bool = False
    steps_done: int = 0
    chunks_done: int = 0
    flow: FlowStreamState = field(default_factory=FlowStreamState)
    mel: torch.Tensor | None = None  # final mel frames from mel_start on [1, 80, F]
    mel_start: int = 0
    frames_made: int = 0
    frames_vocoded: int = 0
    carry: SourceCarry | None = None
    emitted_samples: int = 0
    vocoder_calls: int = 0
    misaligned: bool = False  # a code of the wrong codebook for its slot was seen (and logged once)


class CosyVoice2Stream(Stream[object, torch.Tensor]):
    """Streaming code-to-waveform decoding with cached chunk attention (see the module docstring).

    ``reset()`` starts a new utterance with the same prompt, speaker, seed and configuration.
    """

    def __init__(
        self,
        decoder: CosyVoice2Decoder,
        prompt_steps: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        config: StreamConfig,
        seed: int,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.config = config
        self.plan = config.plan(decoder.flow.lookahead_steps)
        self.prompt_steps = prompt_steps
        self.prompt_feat = prompt_feat
        with torch.inference_mode():
            self.speaker = decoder.flow.speaker_condition(embedding)
        self.frame_noise = FrameNoise(seed, decoder.flow.output_size)
        self.sample_noise = SampleNoise(seed, decoder.hift.harmonics)
        self.state = self._initial_state()

    def _initial_state(self) -> CosyVoice2StreamState:
        return CosyVoice2StreamState(carry=SourceCarry(self.decoder.hift.harmonics))

    @property
    def first_audio_codes(self) -> int:
        """Codes that must have arrived before the first audio (when the utterance is longer)."""
        steps = self.plan.chunk_size(0) + self.plan.lookahead_steps
        return -(-steps // 3) * GROUP_SIZE

    # --------------------------------------------------------------------------------------- Stream API
    def _feed(self, piece: object) -> torch.Tensor:
        raw = torch.as_tensor(piece)
        if raw.numel() == 0:
            return torch.zeros(1, 0)
        state = self.state
        codes = check_mixed_tokens(raw.reshape(-1), "token piece", warn=False)
        if not state.misaligned:  # logged once per utterance
            state.misaligned = log_misaligned(codes, "token piece", start=len(state.codes))
        state.codes.extend(codes)
        complete = len(state.codes) // GROUP_SIZE * GROUP_SIZE
        known = state.steps.shape[0] // 3 * GROUP_SIZE
        if complete > known:
            state.steps = torch.cat([state.steps, mixed_to_dual(state.codes[known:complete])])
        return self._advance(state.steps, final=False)

    def _flush(self) -> torch.Tensor:
        state = self.state
        if not state.codes:
            return torch.zeros(1, 0)
        steps = mixed_to_dual(state.codes)  # the last partial group completed, as offline
        return self._advance(steps, final=True)

    def _reset(self) -> None:
        self.state = self._initial_state()

    # --------------------------------------------------------------------------------------- scheduling
    @torch.inference_mode()
    def _advance(self, steps: torch.Tensor, final: bool) -> torch.Tensor:
        """Decode every chunk ``steps`` allows (all of them when ``final``) and return the new audio."""
        state, plan = self.state, self.plan
        audio = []
        lookahead = plan.lookahead_steps
        if not state.prompt_done:
            if self.prompt_steps.shape[1] == 0:
                state.prompt_done = True
            elif final or steps.shape[0] >= lookahead:
                self._flow_chunk(self.prompt_steps, steps[:lookahead], prompt=True)
                state.prompt_done = True
        while state.prompt_done:
            size = plan.chunk_size(state.chunks_done)
            if state.steps_done + size + lookahead > steps.shape[0]:
                break
            stop = state.steps_done + size
            self._flow_chunk(steps[state.steps_done : stop], steps[stop : stop + lookahead])
            state.steps_done, state.chunks_done = stop, state.chunks_done + 1
            audio.append(self._vocode(final=False))
        if final and state.prompt_done:
            if state.steps_done < steps.shape[0]:
                self._flow_chunk(steps[state.steps_done :], None)
                state.steps_done, state.chunks_done = steps.shape[0], state.chunks_done + 1
            audio.append(self._vocode(final=True))
        return torch.cat(audio, dim=1) if audio else torch.zeros(1, 0)

    def _flow_chunk(self, steps: torch.Tensor, lookahead: torch.Tensor | None, prompt: bool = False) -> None:
        device = self.decoder.device
        mel = self.decoder.flow.decode_chunk(
            self.state.flow,
            steps.reshape(1, -1, 2).to(device),
            None if lookahead is None else lookahead.reshape(1, -1, 2).to(device),
            self.speaker,
            self.frame_noise,
            self.decoder.n_timesteps,
            self.plan,
            prompt_feat=self.prompt_feat if prompt else None,
        )
        if prompt:
            return
        state = self.state
        mel = mel.float()
        state.mel = mel if state.mel is None else torch.cat([state.mel, mel], dim=2)
        state.frames_made += mel.shape[2]

    # --------------------------------------------------------------------------------------- vocoder
    def _vocode(self, final: bool) -> torch.Tensor:
        state, config, hift = self.state, self.config, self.decoder.hift
        stop = state.frames_made if final else state.frames_made - config.vocoder_lookahead_frames
        if stop <= state.frames_vocoded or state.mel is None:
            return torch.zeros(1, 0)
        first = max(0, state.frames_vocoded - config.vocoder_context_frames)
        window = state.mel[:, :, first - state.mel_start :]
        waveform = hift.vocode_window(
            window, first, state.carry, self.sample_noise, (state.frames_vocoded, stop), last_is_end=final
        )
        per_frame = hift.samples_per_frame
        audio = waveform[:, (state.frames_vocoded - first) * per_frame : (stop - first) * per_frame].cpu()
        state.frames_vocoded = stop
        state.vocoder_calls += 1
        state.emitted_samples += audio.shape[1]
        # keep only the frames a later window can still need as context
        drop = max(0, state.frames_vocoded - config.vocoder_context_frames) - state.mel_start
        if drop > 0:
            state.mel = state.mel[:, :, drop:]
            state.mel_start += drop
        return audio
