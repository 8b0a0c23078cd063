"""``TokenToWavStream``: streaming CosyVoice decoding, audio token pieces in, 22.05 kHz waveform chunks out.

Made by :meth:`CosyVoiceDecoder.stream() <stepaudio.cosyvoice.decoder.CosyVoiceDecoder.stream>`; chunked as its
:class:`StreamingConfig` says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..streaming import Stream
from .flow import FrameNoise, mel_frames_for_tokens
from .hift import SampleNoise, SourceState

if TYPE_CHECKING:
    from .decoder import CosyVoiceDecoder

__all__ = ["StreamingConfig", "TokenToWavState", "TokenToWavStream"]


@dataclass(frozen=True)
class StreamingConfig:
    """Chunking of :meth:`CosyVoiceDecoder.token_to_wav_stream` (tokens at ~41.67/s, mel at ~86.13 frames/s).

    Attributes:
        first_chunk_tokens: tokens committed by the first flow window (small, for latency).
        chunk_tokens: tokens committed by the second flow window; later windows commit
            ``chunk_growth`` times more than the previous one, up to ``max_chunk_tokens`` (larger
            windows amortise the prompt, which every window re-processes).
        chunk_growth: growth factor of the window size after the second window.
        max_chunk_tokens: cap of the window size.
        lookahead_tokens: future tokens a window must see before its tokens are committed; the first
            audio therefore comes out after ``first_chunk_tokens + lookahead_tokens`` tokens.
        left_context_tokens: already-committed tokens re-encoded as left context of each window
            (bounds the cost of a window, independent of utterance length).
        mel_crossfade_frames: frames over which a window's mel fades in over the previous window's
            provisional mel.
        hift_context_frames: mel frames (with their cached source) re-vocoded as left context.
        hift_lookahead_frames: provisional mel frames vocoded as right context.
        audio_crossfade_frames: frames (x256 samples) of audio cross-faded between vocoder calls.
    """

    first_chunk_tokens: int = 15
    chunk_tokens: int = 30
    chunk_growth: float = 2.0
    max_chunk_tokens: int = 120
    lookahead_tokens: int = 10
    left_context_tokens: int = 60
    mel_crossfade_frames: int = 6
    hift_context_frames: int = 16
    hift_lookahead_frames: int = 16
    audio_crossfade_frames: int = 2

    def __post_init__(self) -> None:
        if self.chunk_growth < 1:
            raise ValueError(f"StreamingConfig.chunk_growth must be >= 1, got {self.chunk_growth}")
        for name in ("first_chunk_tokens", "chunk_tokens", "max_chunk_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"StreamingConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "lookahead_tokens",
            "left_context_tokens",
            "mel_crossfade_frames",
            "hift_context_frames",
            "hift_lookahead_frames",
            "audio_crossfade_frames",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"StreamingConfig.{name} must be >= 0, got {getattr(self, name)}")

    def window_tokens(self, window_index: int) -> int:
        """Tokens committed by flow window ``window_index`` (0-based) when the stream is not finished."""
        if window_index == 0:
            return self.first_chunk_tokens
        grown = self.chunk_tokens * self.chunk_growth ** (window_index - 1)
        return int(min(grown, max(self.max_chunk_tokens, self.chunk_tokens)))

    @property
    def tokens_before_first_audio(self) -> int:
        """Tokens that must have arrived before the first non-empty audio chunk (if the utterance is longer)."""
        return self.first_chunk_tokens + self.lookahead_tokens


@dataclass
class TokenToWavState:
    """All mutable state of a :class:`TokenToWavStream`.

    Token indices count speech tokens of this utterance (prompt excluded); frame indices count mel
    frames after the prompt; sample indices count output samples.
    """

    tokens: list[int] = field(default_factory=list)
    committed_tokens: int = 0
    committed_mel: list[torch.Tensor] = field(default_factory=list)  # committed, not yet vocoded frames
    committed_frames: int = 0
    provisional_mel: torch.Tensor | None = None  # frames after committed_frames, from the last window
    vocoded_frames: int = 0  # frames whose audio is final or held in audio_tail
    mel_history: torch.Tensor | None = None  # last committed frames used as vocoder context
    source_history: torch.Tensor | None = None  # their source samples
    source_state: SourceState | None = None
    audio_tail: torch.Tensor | None = None  # held-back audio of the last audio_crossfade_frames frames
    emitted_samples: int = 0
    flow_windows: int = 0
    vocoder_calls: int = 0


def _fade_in(length: int, device: torch.device) -> torch.Tensor:
    """Raised-cosine ramp 0 -> 1 of ``length`` points (excluding both end points)."""
    steps = torch.arange(1, length + 1, device=device, dtype=torch.float32) / (length + 1)
    return 0.5 - 0.5 * torch.cos(torch.pi * steps)


class TokenToWavStream(Stream[object, torch.Tensor]):
    """Streaming token-to-waveform decoding with bounded per-chunk cost.

    Each flow window re-encodes ``left_context_tokens`` committed tokens, the tokens to commit and
    ``lookahead_tokens`` future tokens (plus the prompt), decodes their mel frames with the same
    per-frame noise as the offline decode, fades its first frames in over the previous window's
    provisional frames, and commits the frames of its own tokens.  The vocoder then runs on the
    newly committed frames with cached left context (mel + harmonic source, so the sine phase is
    continuous) and provisional look-ahead frames, and its output is cross-faded over a few frames
    with the held-back tail of the previous call.

    ``reset()`` starts a new utterance with the same prompt, speaker and seed.
    """

    def __init__(
        self,
        decoder: CosyVoiceDecoder,
        prompt_feat: torch.Tensor,
        prompt_token: torch.Tensor,
        embedding: torch.Tensor,
        config: StreamingConfig,
        seed: int,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.config = config
        self.prompt_feat = prompt_feat
        self.prompt_token = prompt_token
        with torch.inference_mode():
            self.speaker = decoder.flow.speaker_condition(embedding)
        self.frame_noise = FrameNoise(seed, decoder.flow.output_size)
        self.sample_noise = SampleNoise(seed, decoder.hift.harmonics)
        self.state = self._initial_state()

    def _initial_state(self) -> TokenToWavState:
        return TokenToWavState(source_state=SourceState(self.decoder.hift.harmonics))

    # --------------------------------------------------------------------------------------- Stream API
    def _feed(self, piece: object) -> torch.Tensor:
        raw = torch.as_tensor(piece)
        if raw.numel() == 0:
            return torch.zeros(1, 0)
        ids = self.decoder.check_token_ids(raw.reshape(-1), "token piece")
        self.state.tokens.extend(int(i) for i in ids[0])
        chunks = []
        while True:
            target = self._next_commit_target()
            if target is None:
                break
            self._run_flow_window(target, final=False)
            chunks.append(self._run_vocoder(final=False))
        return torch.cat(chunks, dim=1) if chunks else torch.zeros(1, 0)

    def _flush(self) -> torch.Tensor:
        chunks = []
        if len(self.state.tokens) > self.state.committed_tokens:
            self._run_flow_window(len(self.state.tokens), final=True)
        chunks.append(self._run_vocoder(final=True))
        return torch.cat(chunks, dim=1)

    def _reset(self) -> None:
        # The prompt, speaker condition and noise generators stay: the noise is indexed by absolute
        # frame / sample position, so a new utterance gets the same noise as a new stream would.
        self.state = self._initial_state()

    # --------------------------------------------------------------------------------------- flow
    def _frames(self, tokens: int) -> int:
        return mel_frames_for_tokens(tokens, self.decoder.flow.input_frame_rate)

    def _next_commit_target(self) -> int | None:
        state, config = self.state, self.config
        target = state.committed_tokens + config.window_tokens(state.flow_windows)
        if len(state.tokens) < target + config.lookahead_tokens:
            return None
        return target

    @torch.inference_mode()
    def _run_flow_window(self, commit_to: int, final: bool) -> None:
        state, config, flow = self.state, self.config, self.decoder.flow
        start_token = max(0, state.committed_tokens - config.left_context_tokens)
        stop_token = len(state.tokens) if final else min(len(state.tokens), commit_to + config.lookahead_tokens)
        frame_start = state.committed_frames
        commit_frame = self._frames(commit_to)
        frame_stop = commit_frame if final else max(commit_frame, self._frames(stop_token))
        if frame_stop <= frame_start:
            state.committed_tokens = commit_to
            return
        window = torch.tensor([state.tokens[start_token:stop_token]], device=self.decoder.device)
        mel = flow.inference_window(
            window,
            start_token,
            frame_start,
            frame_stop,
            self.prompt_token,
            self.prompt_feat,
            self.speaker,
            self.frame_noise,
            self.decoder.n_timesteps,
            self.decoder.runtime.velocity,
        )
        mel = mel.float()
        previous = state.provisional_mel
        if previous is not None and previous.shape[2] and config.mel_crossfade_frames:
            overlap = min(config.mel_crossfade_frames, previous.shape[2], mel.shape[2])
            ramp = _fade_in(overlap, mel.device)
            mel[:, :, :overlap] = previous[:, :, :overlap] * (1 - ramp) + mel[:, :, :overlap] * ramp
        committed = mel[:, :, : commit_frame - frame_start]
        state.committed_mel.append(committed)
        state.committed_frames = commit_frame
        state.committed_tokens = commit_to
        state.provisional_mel = mel[:, :, commit_frame - frame_start :]
        state.flow_windows += 1

    # --------------------------------------------------------------------------------------- vocoder
    @torch.inference_mode()
    def _run_vocoder(self, final: bool) -> torch.Tensor:
        state, config, hift = self.state, self.config, self.decoder.hift
        per_frame = hift.samples_per_frame
        new_mel = torch.cat(state.committed_mel, dim=2) if state.committed_mel else None
        state.committed_mel = []
        if new_mel is None or new_mel.shape[2] == 0:
            return self._release_tail() if final else torch.zeros(1, 0)
        commit = new_mel.shape[2]
        context_mel = state.mel_history if state.mel_history is not None else new_mel[:, :, :0]
        context_source = (
            state.source_history if state.source_history is not None else torch.zeros(1, 1, 0, device=new_mel.device)
        )
        lookahead = new_mel[:, :, :0]
        if not final and state.provisional_mel is not None:
            lookahead = state.provisional_mel[:, :, : config.hift_lookahead_frames]
        window = torch.cat([context_mel, new_mel, lookahead], dim=2)
        waveform, new_source = hift.vocode_window(
            window, context_source, state.source_state, self.sample_noise, commit, self.decoder.runtime.hift
        )
        state.vocoder_calls += 1
        context_frames = context_mel.shape[2]
        # audio of [vocoded - tail, vocoded + commit): the tail region was produced by the previous call too
        tail_frames = 0 if state.audio_tail is None else state.audio_tail.shape[1] // per_frame
        start = (context_frames - tail_frames) * per_frame
        audio = waveform[:, start : (context_frames + commit) * per_frame].float().cpu()
        if tail_frames:
            length = state.audio_tail.shape[1]
            ramp = _fade_in(length, audio.device)
            audio[:, :length] = state.audio_tail * (1 - ramp) + audio[:, :length] * ramp
        state.vocoded_frames += commit
        keep = min(config.hift_context_frames + config.audio_crossfade_frames, window.shape[2] - lookahead.shape[2])
        history_mel = torch.cat([context_mel, new_mel], dim=2)
        state.mel_history = history_mel[:, :, history_mel.shape[2] - keep :]
        history_source = torch.cat([context_source.to(new_source.dtype), new_source], dim=-1)
        state.source_history = history_source[..., history_source.shape[-1] - keep * per_frame :]
        hold = 0 if final else min(config.audio_crossfade_frames, commit) * per_frame
        state.audio_tail = audio[:, audio.shape[1] - hold :] if hold else None
        out = audio[:, : audio.shape[1] - hold]
        state.emitted_samples += out.shape[1]
        return out

    def _release_tail(self) -> torch.Tensor:
        tail = self.state.audio_tail if self.state.audio_tail is not None else torch.zeros(1, 0)
        self.state.audio_tail = None
        self.state.emitted_samples += tail.shape[1]
        return tail
