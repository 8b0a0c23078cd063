"""Flow model of the Step-Audio-EditX decoder (``CausalMaskedDiffWithXvec``): dual-codebook steps -> 50 Hz mel.

Pieces (state-dict prefixes): ``input_embedding.embedding`` (one table for both codebooks, each step's
two rows concatenated), ``spk_embed_affine_layer`` (L2-normalised CAM++ x-vector -> 80),
``encoder`` (:class:`~stepaudio.cosyvoice2.encoder.UpsampleConformerEncoder`), ``encoder_proj`` (-> 80)
and ``decoder`` (:class:`CausalCFM`, Euler solver of the flow ODE with a cosine time schedule and
classifier-free guidance; its DiT is ``decoder.estimator``).

Chunking.  The original decodes a stream chunk by chunk: the prompt first, then chunks of 15, 24, 48,
48, ... steps (each needing ``pre_lookahead_len`` further steps), the rest as the last chunk.  Within a
chunk attention is full; across chunks it only looks back, and the DiT sees the prompt plus the last
96 frames.  :class:`ChunkPlan` describes that schedule; :meth:`CausalFlow.inference` either attends over
everything (the original's offline path) or, with a plan, replays the stream's attention with masks so
that offline and streamed decoding give the same mel.  The ODE's initial noise is indexed by absolute
frame (prompt included) through :class:`~stepaudio.cosyvoice.flow.FrameNoise`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..cosyvoice.flow import FrameNoise
from .dit import DiT, DiTCache
from .encoder import EncoderCache, UpsampleConformerEncoder, chunk_causal_mask

__all__ = ["CausalCFM", "CausalFlow", "ChunkPlan", "DualCodebookEmbedding", "FlowStreamState"]


class DualCodebookEmbedding(nn.Module):
    """One table (``embedding``) of ``vocab_size`` rows x ``input_size / 2``; a step [.., 2] -> [.., input_size]."""

    def __init__(self, vocab_size: int, input_size: int) -> None:
        super().__init__()
        if input_size % 2:
            raise ValueError(f"DualCodebookEmbedding input_size must be even, got {input_size}")
        self.embedding = nn.Embedding(vocab_size, input_size // 2)

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.embedding(steps[..., 0]), self.embedding(steps[..., 1])], dim=-1)


class CausalCFM(nn.Module):
    """Euler ODE solver with classifier-free guidance around the DiT (``decoder``; no weights of its own)."""

    def __init__(self, estimator: DiT, inference_cfg_rate: float = 0.7) -> None:
        super().__init__()
        self.estimator = estimator
        self.inference_cfg_rate = float(inference_cfg_rate)

    @staticmethod
    def time_span(n_timesteps: int, device: torch.device) -> torch.Tensor:
        """``1 - cos(pi/2 * linspace(0, 1, n + 1))`` (float32)."""
        span = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=torch.float32)
        return 1 - torch.cos(span * 0.5 * math.pi)

    def solve(
        self,
        noise: torch.Tensor,
        mu: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        n_timesteps: int,
        caches: list[DiTCache] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[DiTCache]]:
        """Integrate from ``noise`` [1, 80, T] over one chunk; ``caches`` holds one DiT cache per Euler step.

        The guided velocity is ``(1 + r) v(mu, spks, cond) - r v(0, 0, 0)`` with ``r = inference_cfg_rate``.
        """
        span = self.time_span(n_timesteps, mu.device)
        mu_in = torch.cat([mu, torch.zeros_like(mu)])
        spks_in = torch.cat([spks, torch.zeros_like(spks)])
        cond_in = torch.cat([cond, torch.zeros_like(cond)])
        x = noise
        new_caches = []
        for step in range(n_timesteps):
            t = span[step].to(mu.dtype).expand(2)
            velocity, cache = self.estimator(
                torch.cat([x, x]), mu_in, t, spks_in, cond_in, caches[step] if caches else None, mask
            )
            new_caches.append(cache)
            guided, unguided = velocity.chunk(2)
            rate = self.inference_cfg_rate
            x = x + (span[step + 1] - span[step]).to(x.dtype) * ((1.0 + rate) * guided - rate * unguided)
        return x, new_caches


@dataclass(frozen=True)
class ChunkPlan:
    """The chunk schedule of a stream, in dual-codebook steps (25/s; each step is 2 mel frames).

    Attributes:
        chunk_steps: sizes of the first chunks after the prompt; the last size repeats.
        lookahead_steps: steps after a chunk that must be known before it is decoded (the encoder's
            ``pre_lookahead_len``).
        estimator_context_frames: earlier non-prompt frames the DiT still attends to (the original keeps
            the prompt plus 96 frames, about 2 s).
    """

    chunk_steps: tuple[int, ...] = (15, 24, 48)
    lookahead_steps: int = 3
    estimator_context_frames: int = 96

    def chunk_size(self, index: int) -> int:
        """Steps of chunk ``index`` (0 = the first chunk after the prompt) when the stream is not finished."""
        return self.chunk_steps[min(index, len(self.chunk_steps) - 1)]

    def chunks(self, total_steps: int) -> list[int]:
        """The chunk sizes a stream of ``total_steps`` steps is decoded in (the last one holds the rest)."""
        sizes: list[int] = []
        done = 0
        while done + self.chunk_size(len(sizes)) + self.lookahead_steps <= total_steps:
            sizes.append(self.chunk_size(len(sizes)))
            done += sizes[-1]
        if done < total_steps:
            sizes.append(total_steps - done)
        return sizes


@dataclass
class FlowStreamState:
    """Caches of a chunked decode: encoder caches and one DiT cache per Euler step."""

    encoder: EncoderCache | None = None
    estimator: list[DiTCache] = field(default_factory=list)
    prompt_frames: int = 0
    frames_done: int = 0  # frames decoded so far, prompt included


class CausalFlow(nn.Module):
    """``CausalMaskedDiffWithXvec``: embedding, speaker projection, encoder, projection and CFM decoder."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        spk_embed_dim: int,
        vocab_size: int,
        encoder: UpsampleConformerEncoder,
        decoder: CausalCFM,
        input_embedding: DualCodebookEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.vocab_size = vocab_size
        self.input_embedding = input_embedding or DualCodebookEmbedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = encoder
        self.encoder_proj = nn.Linear(encoder.output_size, output_size)
        self.decoder = decoder

    @property
    def frames_per_step(self) -> int:
        """Mel frames per dual-codebook step (the encoder's upsampling stride, 2)."""
        return self.encoder.up_stride

    @property
    def lookahead_steps(self) -> int:
        """Steps the encoder looks ahead (``pre_lookahead_len``)."""
        return self.encoder.pre_lookahead_len

    def speaker_condition(self, embedding: torch.Tensor) -> torch.Tensor:
        """x-vector [1, 192] -> the DiT's speaker channels [1, 80] (L2-normalised, then projected)."""
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def _mu(self, steps: torch.Tensor, **encoder_args: object) -> tuple[torch.Tensor, EncoderCache]:
        hidden, cache = self.encoder(self.input_embedding(steps.clamp(min=0)), **encoder_args)
        return self.encoder_proj(hidden).transpose(1, 2), cache

    def inference(
        self,
        steps: torch.Tensor,
        prompt_steps: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        noise: FrameNoise,
        n_timesteps: int,
        plan: ChunkPlan | None = None,
    ) -> torch.Tensor:
        """Mel [1, 80, 2 * T] of ``steps`` [1, T, 2] after the prompt (``prompt_steps`` [1, P, 2], ``prompt_feat``
        [1, 2 * P, 80] aligned to them), in one pass.

        ``plan`` None attends over everything (the original's offline decode); a :class:`ChunkPlan` masks
        attention as a stream with that plan would see it, giving the streamed mel.
        """
        all_steps = torch.cat([prompt_steps, steps], dim=1)
        encoder_mask = estimator_mask = None
        if plan is not None:
            chunks = [prompt_steps.shape[1]] + plan.chunks(steps.shape[1])
            chunks = [size for size in chunks if size]
            encoder_mask = chunk_causal_mask(chunks, device=steps.device)
            estimator_mask = self._estimator_mask(chunks, prompt_steps.shape[1], plan, steps.device)
        mu, _ = self._mu(all_steps, mask=encoder_mask)
        prompt_frames = prompt_feat.shape[1]
        cond = torch.zeros_like(mu)
        cond[:, :, :prompt_frames] = prompt_feat.transpose(1, 2)
        start = noise.frames(0, mu.shape[2]).to(mu.device, mu.dtype)
        mel, _ = self.decoder.solve(
            start, mu, self.speaker_condition(embedding), cond, n_timesteps, mask=estimator_mask
        )
        return mel[:, :, prompt_frames:]

    def _estimator_mask(
        self, chunks: list[int], prompt_steps: int, plan: ChunkPlan, device: torch.device
    ) -> torch.Tensor:
        stride = self.frames_per_step
        visible = chunk_causal_mask(chunks, repeat=stride, device=device)
        bounds = torch.tensor([0] + chunks, device=device).cumsum(0) * stride
        chunk_of = torch.repeat_interleave(
            torch.arange(len(chunks), device=device), torch.tensor(chunks, device=device) * stride
        )
        starts = bounds[chunk_of]  # first frame of each query's chunk
        frames = torch.arange(int(bounds[-1]), device=device)
        recent = frames.unsqueeze(0) >= (starts - plan.estimator_context_frames).unsqueeze(1)
        prompt = (frames < prompt_steps * stride).unsqueeze(0)
        return visible & (recent | prompt)

    # ------------------------------------------------------------------------------------------- streaming
    def decode_chunk(
        self,
        state: FlowStreamState,
        steps: torch.Tensor,
        lookahead: torch.Tensor | None,
        speaker: torch.Tensor,
        noise: FrameNoise,
        n_timesteps: int,
        plan: ChunkPlan,
        prompt_feat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode one chunk with the caches in ``state`` (updated in place) and return its mel [1, 80, 2 * T].

        Args:
            steps: the chunk's steps [1, T, 2].
            lookahead: up to ``lookahead_steps`` following steps [1, L, 2], None at the end of the utterance.
            speaker: :meth:`speaker_condition` of the x-vector.
            prompt_feat: the aligned prompt mel [1, 2 * T, 80] when this chunk is the prompt (its ``cond``).
        """
        embedded_lookahead = None if lookahead is None else self.input_embedding(lookahead.clamp(min=0))
        mu, state.encoder = self._mu(steps, lookahead=embedded_lookahead, cache=state.encoder)
        cond = torch.zeros_like(mu) if prompt_feat is None else prompt_feat.transpose(1, 2).to(mu.dtype)
        start = noise.frames(state.frames_done, state.frames_done + mu.shape[2]).to(mu.device, mu.dtype)
        mel, caches = self.decoder.solve(start, mu, speaker, cond, n_timesteps, state.estimator or None)
        if prompt_feat is not None:
            state.prompt_frames += mu.shape[2]
        state.frames_done += mu.shape[2]
        state.estimator = [self._trim(cache, state.prompt_frames, plan.estimator_context_frames) for cache in caches]
        return mel

    @staticmethod
    def _trim(cache: DiTCache, prompt_frames: int, context_frames: int) -> DiTCache:
        """Keep the prompt's keys/values and the last ``context_frames`` others (the original's cache limit)."""
        blocks = []
        for (key, value), conv in cache.blocks:
            extra = key.shape[2] - prompt_frames - context_frames
            if extra > 0:
                keep = torch.cat([torch.arange(prompt_frames), torch.arange(prompt_frames + extra, key.shape[2])]).to(
                    key.device
                )
                key, value = key.index_select(2, keep), value.index_select(2, keep)
            blocks.append(((key, value), conv))
        return DiTCache(blocks)
