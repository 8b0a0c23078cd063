"""Flow model of the CosyVoice-300M(-25Hz) decoder: tokens + speaker + prompt mel -> mel spectrogram.

Pieces (state-dict prefixes in brackets): token embedding (``input_embedding``), speaker x-vector
projection (``spk_embed_affine_layer``), :class:`~stepaudio.cosyvoice.encoder.ConformerEncoder`
(``encoder``) and its projection to mel width (``encoder_proj``), :class:`InterpolateRegulator`
(``length_regulator``: linear interpolation to the mel frame rate, then convolutions) and
:class:`ConditionalCFM` (``decoder``: Euler solver of the conditional flow-matching ODE with a
cosine time schedule and classifier-free guidance; its U-Net is ``decoder.estimator``).

The initial noise of the ODE is passed in explicitly (see :class:`FrameNoise`) so that offline and
streaming decoding use the same noise for the same mel frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import ConformerEncoder
from .estimator import ConditionalDecoder

__all__ = [
    "CFMParams",
    "ConditionalCFM",
    "FlowModel",
    "FrameNoise",
    "InterpolateRegulator",
    "mel_frames_for_tokens",
    "MEL_SAMPLE_RATE",
    "MEL_HOP",
    "VelocityFn",
]

#: ``velocity(x, mu, spks, cond, t)`` -> guided velocity [1, 80, T] for ``x`` [1, 80, T] at time ``t`` [1]
#: (both classifier-free-guidance branches combined); an engine's replacement of the eager estimator calls
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

MEL_SAMPLE_RATE = 22050
MEL_HOP = 256


def mel_frames_for_tokens(num_tokens: int, input_frame_rate: float) -> int:
    """Mel frames the flow produces for ``num_tokens`` tokens: ``int(n / rate * 22050 / 256)`` (upstream rule)."""
    return int(num_tokens / input_frame_rate * MEL_SAMPLE_RATE / MEL_HOP)


class FrameNoise:
    """Deterministic standard-normal noise indexed by absolute mel frame.

    Frame ``f`` always gets the same ``channels``-vector for a given seed, whatever window it is
    requested in, so a streamed decode uses exactly the noise of the offline decode.  Noise is made
    in blocks of ``block`` frames, each from its own seeded CPU generator.
    """

    def __init__(self, seed: int, channels: int, block: int = 256) -> None:
        self.seed = int(seed)
        self.channels = channels
        self.block = block
        self._blocks: dict[int, torch.Tensor] = {}

    def _get_block(self, index: int) -> torch.Tensor:
        if index not in self._blocks:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            self._blocks[index] = torch.randn(self.channels, self.block, generator=generator)
        return self._blocks[index]

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Noise for frames ``[start, stop)`` as a float32 CPU tensor [1, channels, stop - start]."""
        if stop <= start:
            return torch.zeros(1, self.channels, 0)
        first, last = start // self.block, (stop - 1) // self.block
        joined = torch.cat([self._get_block(i) for i in range(first, last + 1)], dim=1)
        offset = start - first * self.block
        return joined[:, offset : offset + stop - start].unsqueeze(0)


class InterpolateRegulator(nn.Module):
    """Linear interpolation of token features to mel frames, then 4 x (Conv k3, GroupNorm(1), Mish) + Conv k1."""

    def __init__(self, channels: int, sampling_ratios: list[int] | tuple[int, ...], out_channels: int | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        out_channels = out_channels or channels
        layers: list[nn.Module] = []
        for _ in sampling_ratios:
            layers += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(groups, channels), nn.Mish()]
        layers.append(nn.Conv1d(channels, out_channels, 1, 1))
        self.model = nn.Sequential(*layers)

    @staticmethod
    def resize(features: torch.Tensor, frames: int) -> torch.Tensor:
        """Linearly resize ``features`` [B, T, C] to [B, C, frames] (``F.interpolate``, align_corners False)."""
        if frames <= 0:
            return features.new_zeros(features.shape[0], features.shape[2], 0)
        return F.interpolate(features.transpose(1, 2), size=frames, mode="linear")

    @staticmethod
    def resample_at(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Linearly sample ``features`` [B, T, C] at fractional token ``positions`` [F] -> [B, C, F] (edge-clamped)."""
        positions = positions.clamp(0, features.shape[1] - 1)
        left = positions.floor().long()
        right = (left + 1).clamp(max=features.shape[1] - 1)
        weight = (positions - left).to(features.dtype)[None, :, None]
        sampled = features[:, left] * (1 - weight) + features[:, right] * weight
        return sampled.transpose(1, 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions to interpolated frames [B, C, F] -> ``mu`` [B, C_out, F]."""
        return self.model(frames)


@dataclass
class CFMParams:
    """Flow-matching hyper-parameters (``cfm_params`` in the recipe); only the inference ones are used."""

    sigma_min: float = 1e-6
    solver: str = "euler"
    t_scheduler: str = "cosine"
    training_cfg_rate: float = 0.2
    inference_cfg_rate: float = 0.7
    reg_loss_type: str = "l1"


class ConditionalCFM(nn.Module):
    """Euler solver of the conditional flow ODE with classifier-free guidance (state-dict prefix ``decoder``)."""

    def __init__(self, in_channels: int, cfm_params: CFMParams, n_spks: int, spk_emb_dim: int,
                 estimator: ConditionalDecoder) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_spks = n_spks
        self.spk_emb_dim = spk_emb_dim
        self.params = cfm_params
        self.estimator = estimator

    def time_span(self, n_timesteps: int, device: torch.device) -> torch.Tensor:
        """The ``n_timesteps + 1`` integration times (cosine schedule ``1 - cos(pi/2 * s)``)."""
        span = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=torch.float32)
        if self.params.t_scheduler == "cosine":
            span = 1 - torch.cos(span * 0.5 * math.pi)
        return span

    @torch.inference_mode()
    def forward(self, noise: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
                n_timesteps: int = 10, mask: torch.Tensor | None = None,
                velocity: VelocityFn | None = None) -> torch.Tensor:
        """Integrate from ``noise`` [1, 80, T] at t=0 to the mel at t=1, conditioned on ``mu``, ``spks``, ``cond``.

        ``velocity`` (an engine's guided-velocity function, no ``mask``) replaces the eager estimator calls.
        """
        cfg_rate = float(self.params.inference_cfg_rate)
        x = noise.to(mu.dtype)
        span = self.time_span(n_timesteps, mu.device)
        if velocity is not None:
            if mask is not None:
                raise ValueError("ConditionalCFM: an engine velocity function does not take a mask")
            for step in range(n_timesteps):
                t, dt = span[step], span[step + 1] - span[step]
                x = x + dt.to(x.dtype) * velocity(x, mu, spks, cond, t.reshape(1))
            return x
        if mask is None:
            mask = torch.ones_like(mu[:, :1])
        # conditional and unconditional (zero mu/spks/cond) evaluations share one batch of 2
        mu_pair = torch.cat([mu, torch.zeros_like(mu)])
        spks_pair = torch.cat([spks, torch.zeros_like(spks)])
        cond_pair = torch.cat([cond, torch.zeros_like(cond)])
        mask_pair = torch.cat([mask, mask])
        for step in range(n_timesteps):
            t, dt = span[step], span[step + 1] - span[step]
            if cfg_rate > 0:
                pair = self.estimator(torch.cat([x, x]), mask_pair, mu_pair, t.expand(2), spks_pair, cond_pair)
                guided = (1.0 + cfg_rate) * pair[:1] - cfg_rate * pair[1:]
            else:
                guided = self.estimator(x, mask, mu, t.expand(1), spks, cond)
            x = x + dt.to(x.dtype) * guided
        return x


class FlowModel(nn.Module):
    """``MaskedDiffWithXvec``: speech tokens -> mel frames, conditioned on a prompt and an x-vector.

    Args:
        input_size: token embedding width.
        output_size: mel bins.
        spk_embed_dim: x-vector width (192 for CAM++).
        vocab_size: rows of the token embedding.
        input_frame_rate: tokens per second (about 41.67 for Step-Audio's interleaved tokens).
        encoder, length_regulator, decoder: the sub-modules.
    """

    def __init__(self, input_size: int, output_size: int, spk_embed_dim: int, vocab_size: int,
                 input_frame_rate: float, encoder: ConformerEncoder, length_regulator: InterpolateRegulator,
                 decoder: ConditionalCFM) -> None:
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.vocab_size = vocab_size
        self.input_frame_rate = float(input_frame_rate)
        self.input_embedding = nn.Embedding(vocab_size, input_size)
        self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, output_size)
        self.encoder = encoder
        self.encoder_proj = nn.Linear(encoder.output_size, output_size)
        self.length_regulator = length_regulator
        self.decoder = decoder

    @property
    def frames_per_token(self) -> float:
        """Mel frames per token at the nominal rate (22050 / 256 / input_frame_rate)."""
        return MEL_SAMPLE_RATE / MEL_HOP / self.input_frame_rate

    def speaker_condition(self, embedding: torch.Tensor) -> torch.Tensor:
        """L2-normalised x-vector [1, 192] -> speaker condition [1, 80]."""
        embedding = F.normalize(embedding.to(self.spk_embed_affine_layer.weight.dtype), dim=1)
        return self.spk_embed_affine_layer(embedding)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [1, T] (negative ids clamped to 0) -> encoder features projected to mel width [1, T, 80]."""
        embedded = self.input_embedding(tokens.clamp(min=0).long())
        return self.encoder_proj(self.encoder(embedded))

    def decode_frames(self, mu: torch.Tensor, prompt_feat: torch.Tensor, speaker: torch.Tensor,
                      noise: torch.Tensor, n_timesteps: int, velocity: VelocityFn | None = None) -> torch.Tensor:
        """Run the CFM over ``mu`` [1, 80, F] whose first frames carry ``prompt_feat`` [1, Fp, 80] as condition."""
        cond = torch.zeros_like(mu)
        prompt_frames = prompt_feat.shape[1]
        if prompt_frames:
            cond[:, :, :prompt_frames] = prompt_feat.transpose(1, 2).to(mu.dtype)
        return self.decoder(noise.to(mu.device), mu, speaker, cond, n_timesteps, velocity=velocity)

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, noise: FrameNoise, n_timesteps: int = 10,
                  velocity: VelocityFn | None = None) -> torch.Tensor:
        """Offline decode of all of ``token`` [1, T] -> mel [1, 80, int(T / rate * 22050 / 256)] (prompt removed).

        ``velocity``: an engine's guided-velocity function (default: the eager estimator).
        """
        dtype = self.input_embedding.weight.dtype
        prompt_frames = prompt_feat.shape[1]
        num_prompt_tokens = prompt_token.shape[1]
        features = self.encode_tokens(torch.cat([prompt_token.to(token.device), token], dim=1))
        new_frames = mel_frames_for_tokens(token.shape[1], self.input_frame_rate)
        parts = [InterpolateRegulator.resize(features[:, num_prompt_tokens:], new_frames)]
        if num_prompt_tokens:
            parts.insert(0, InterpolateRegulator.resize(features[:, :num_prompt_tokens], prompt_frames))
        mu = self.length_regulator(torch.cat(parts, dim=2))
        mel = self.decode_frames(mu, prompt_feat.to(dtype), self.speaker_condition(embedding),
                                 noise.frames(0, mu.shape[2]), n_timesteps, velocity)
        return mel[:, :, mu.shape[2] - new_frames:]

    @torch.inference_mode()
    def inference_window(self, window_tokens: torch.Tensor, window_start: int, frame_start: int, frame_stop: int,
                         prompt_token: torch.Tensor, prompt_feat: torch.Tensor, speaker: torch.Tensor,
                         noise: FrameNoise, n_timesteps: int = 10,
                         velocity: VelocityFn | None = None) -> torch.Tensor:
        """Decode mel frames ``[frame_start, frame_stop)`` (counted after the prompt) from a token window.

        ``window_tokens`` [1, W] are the tokens ``[window_start, window_start + W)`` of the utterance;
        frame ``f`` is placed at token position ``(f + 0.5) / frames_per_token - 0.5`` (the nominal
        rate), so windows of one utterance agree on where every frame lies.

        Returns:
            mel [1, 80, frame_stop - frame_start].
        """
        dtype = self.input_embedding.weight.dtype
        num_prompt_tokens = prompt_token.shape[1]
        prompt_frames = prompt_feat.shape[1]
        features = self.encode_tokens(torch.cat([prompt_token.to(window_tokens.device), window_tokens], dim=1))
        frame_index = torch.arange(frame_start, frame_stop, device=features.device, dtype=torch.float32)
        positions = (frame_index + 0.5) / self.frames_per_token - 0.5 - window_start
        parts = [InterpolateRegulator.resample_at(features[:, num_prompt_tokens:], positions)]
        if num_prompt_tokens:
            parts.insert(0, InterpolateRegulator.resize(features[:, :num_prompt_tokens], prompt_frames))
        mu = self.length_regulator(torch.cat(parts, dim=2))
        frame_noise = torch.cat([noise.frames(0, prompt_frames),
                                 noise.frames(prompt_frames + frame_start, prompt_frames + frame_stop)], dim=2)
        mel = self.decode_frames(mu, prompt_feat.to(dtype), speaker, frame_noise, n_timesteps, velocity)
        return mel[:, :, prompt_frames:]
