"""HiFT vocoder of CosyVoice (22.05 kHz, 256 samples per mel frame): mel -> waveform.

Structure (state-dict names): ``f0_predictor`` (ConvRNNF0Predictor: 5 weight-normed convs with ELU,
``condnet.{0,2,4,6,8}``, then ``classifier``), ``m_source`` (harmonic-plus-noise source: sine
harmonics of the predicted F0 merged by ``l_linear`` + tanh), ``conv_pre``, transposed-conv
upsamplers ``ups``, the source's STFT fused in through ``source_downs`` + ``source_resblocks``,
multi-receptive-field ``resblocks`` with Snake activations, ``conv_post`` predicting log-magnitude
and phase of an ``n_fft``-point STFT, and an inverse STFT.

All randomness (initial harmonic phases and source noise) comes from :class:`SampleNoise`, which is
indexed by absolute sample position, and the sine phase accumulates through an explicit carry.  So
vocoding a mel spectrogram in pieces (:meth:`HiFTGenerator.vocode_window`) reproduces vocoding it at
once (:meth:`HiFTGenerator.forward`) wherever the pieces have enough context.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weight_norm import LegacyWeightNormNames, weight_normed

__all__ = ["ConvRNNF0Predictor", "HiFTGenerator", "HiFTNetwork", "HiFTRunner", "SampleNoise", "SourceState"]


class HiFTRunner(Protocol):
    """An engine's replacement of the two network parts of :class:`HiFTGenerator` (same inputs and outputs).

    ``f0(mel [1, 80, T]) -> f0 [1, T]`` (the F0 predictor) and ``body(mel [1, 80, T], source_spec
    [1, n_fft + 2, T * 64 + 1]) -> [1, n_fft + 2, T * 64 + 1]`` (:meth:`HiFTGenerator.conv_body`).
    """

    def f0(self, mel: torch.Tensor) -> torch.Tensor: ...

    def body(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor: ...


class SampleNoise:
    """Deterministic random numbers for the source module, indexed by absolute sample position.

    ``phases`` are the initial phases of the harmonics (uniform in [-pi, pi), fundamental 0);
    ``noise(start, stop)`` is standard-normal noise [harmonics, stop - start], made in blocks.
    """

    def __init__(self, seed: int, harmonics: int, block: int = 1 << 15) -> None:
        self.seed = int(seed)
        self.harmonics = harmonics
        self.block = block
        generator = torch.Generator().manual_seed(self.seed)
        phases = (torch.rand(harmonics, 1, generator=generator) * 2 - 1) * math.pi
        phases[0] = 0.0
        self.phases = phases
        self._blocks: dict[int, torch.Tensor] = {}

    def _get_block(self, index: int) -> torch.Tensor:
        if index not in self._blocks:
            generator = torch.Generator().manual_seed(self.seed * 7_919 + 1 + index)
            self._blocks[index] = torch.randn(self.harmonics, self.block, generator=generator)
        return self._blocks[index]

    def noise(self, start: int, stop: int) -> torch.Tensor:
        """Noise for samples ``[start, stop)``: float32 CPU [harmonics, stop - start]."""
        if stop <= start:
            return torch.zeros(self.harmonics, 0)
        first, last = start // self.block, (stop - 1) // self.block
        joined = torch.cat([self._get_block(i) for i in range(first, last + 1)], dim=1)
        offset = start - first * self.block
        return joined[:, offset : offset + stop - start]


class SourceState:
    """Phase carry of the harmonic source: cycles (mod 1) of every harmonic at sample ``position``."""

    def __init__(self, harmonics: int) -> None:
        self.position = 0
        self.cycles = torch.zeros(harmonics, 1, dtype=torch.float64)


class ConvRNNF0Predictor(nn.Module):
    """F0 (Hz) per mel frame: 5 x (weight-normed Conv1d k3 + ELU), linear classifier, absolute value."""

    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(5):
            layers += [weight_normed(nn.Conv1d(width, cond_channels, 3, padding=1)), nn.ELU()]
            width = cond_channels
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> f0 [B, T]."""
        hidden = self.condnet(mel).transpose(1, 2)
        return self.classifier(hidden).squeeze(-1).abs()


class _Snake(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / alpha`` with a per-channel ``alpha``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(alpha * x).pow(2)


class _ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations (``convs1`` dilated, ``convs2`` not)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int] | tuple[int, ...]) -> None:
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            padding = (kernel_size * dilation - dilation) // 2
            return weight_normed(nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding))

        self.convs1 = nn.ModuleList([conv(d) for d in dilations])
        self.convs2 = nn.ModuleList([conv(1) for _ in dilations])
        self.activations1 = nn.ModuleList([_Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([_Snake(channels) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = zip(self.convs1, self.convs2, self.activations1, self.activations2, strict=True)
        for conv1, conv2, act1, act2 in layers:
            x = x + conv2(act2(conv1(act1(x))))
        return x


class _SourceModule(nn.Module):
    """``m_source``: merges the sine harmonics into one excitation channel with ``l_linear`` + tanh."""

    def __init__(self, harmonics: int) -> None:
        super().__init__()
        self.l_linear = nn.Linear(harmonics, 1)

    def forward(self, sines: torch.Tensor) -> torch.Tensor:
        """sines [B, N, harmonics] -> source [B, 1, N]."""
        return torch.tanh(self.l_linear(sines)).transpose(1, 2)


class HiFTNetwork(nn.Module):
    """The HiFT network both vocoders share (22.05 kHz :class:`HiFTGenerator`, 24 kHz ``HiFT24k``).

    Constructor arguments are the recipe's ``HiFTGenerator`` parameters; it holds the layers, the STFT of the
    source and the conv body with its inverse STFT (:meth:`decode`).  Subclasses add the harmonic source.
    """

    def __init__(
        self,
        in_channels: int = 80,
        base_channels: int = 512,
        nb_harmonics: int = 8,
        sampling_rate: int = 22050,
        nsf_alpha: float = 0.1,
        nsf_sigma: float = 0.003,
        nsf_voiced_threshold: float = 10,
        upsample_rates: list[int] | tuple[int, ...] = (8, 8),
        upsample_kernel_sizes: list[int] | tuple[int, ...] = (16, 16),
        istft_params: dict[str, int] | None = None,
        resblock_kernel_sizes: list[int] | tuple[int, ...] = (3, 7, 11),
        resblock_dilation_sizes: list[list[int]] | None = None,
        source_resblock_kernel_sizes: list[int] | tuple[int, ...] = (7, 11),
        source_resblock_dilation_sizes: list[list[int]] | None = None,
        lrelu_slope: float = 0.1,
        audio_limit: float = 0.99,
        f0_predictor: ConvRNNF0Predictor | None = None,
    ) -> None:
        super().__init__()
        istft_params = istft_params or {"n_fft": 16, "hop_len": 4}
        resblock_dilation_sizes = resblock_dilation_sizes or [[1, 3, 5]] * len(resblock_kernel_sizes)
        source_resblock_dilation_sizes = source_resblock_dilation_sizes or [[1, 3, 5]] * len(
            source_resblock_kernel_sizes
        )
        self.sampling_rate = int(sampling_rate)
        self.harmonics = nb_harmonics + 1
        self.nsf_alpha = float(nsf_alpha)
        self.nsf_sigma = float(nsf_sigma)
        self.voiced_threshold = float(nsf_voiced_threshold)
        self.n_fft = int(istft_params["n_fft"])
        self.istft_hop = int(istft_params["hop_len"])
        self.lrelu_slope = float(lrelu_slope)
        self.audio_limit = float(audio_limit)
        self.num_kernels = len(resblock_kernel_sizes)
        self.upsample_rates = list(upsample_rates)
        self.samples_per_frame = int(np.prod(upsample_rates)) * self.istft_hop

        self.m_source = _SourceModule(self.harmonics)
        self.conv_pre = weight_normed(nn.Conv1d(in_channels, base_channels, 7, padding=3))
        self.ups = nn.ModuleList()
        for index, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            self.ups.append(
                weight_normed(
                    nn.ConvTranspose1d(base_channels // 2**index, base_channels // 2 ** (index + 1), kernel, rate,
                                       padding=(kernel - rate) // 2)
                )
            )
        down_rates = [1] + list(upsample_rates)[::-1][:-1]
        cumulative = np.cumprod(down_rates)[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for index, (rate, kernel, dilations) in enumerate(
            zip(cumulative, source_resblock_kernel_sizes, source_resblock_dilation_sizes, strict=True)
        ):
            width = base_channels // 2 ** (index + 1)
            rate = int(rate)
            if rate == 1:
                self.source_downs.append(nn.Conv1d(self.n_fft + 2, width, 1, 1))
            else:
                self.source_downs.append(nn.Conv1d(self.n_fft + 2, width, rate * 2, rate, padding=rate // 2))
            self.source_resblocks.append(_ResBlock(width, kernel, dilations))
        self.resblocks = nn.ModuleList()
        for index in range(len(self.ups)):
            width = base_channels // 2 ** (index + 1)
            for kernel, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(_ResBlock(width, kernel, dilations))
        self.conv_post = weight_normed(nn.Conv1d(width, self.n_fft + 2, 7, padding=3))
        self.f0_predictor = f0_predictor if f0_predictor is not None else ConvRNNF0Predictor(1, in_channels)

    # ----------------------------------------------------------------------------------- source
    def merge_sines(
        self, theta: torch.Tensor, f0_samples: torch.Tensor, noise: SampleNoise, start: int
    ) -> torch.Tensor:
        """Excitation [1, 1, N] in the model dtype from harmonic phases ``theta`` (radians, float64 [harmonics, N]).

        Voiced samples (``f0_samples`` [N] above the threshold) get ``nsf_alpha`` sines plus ``nsf_sigma`` noise,
        unvoiced ones noise of ``nsf_alpha / 3``; the noise is ``noise``'s from absolute sample ``start``.  The
        harmonics are merged by ``m_source``.
        """
        voiced = (f0_samples > self.voiced_threshold).to(torch.float64).unsqueeze(0)
        sample_noise = noise.noise(start, start + f0_samples.shape[0]).to(torch.float64)
        noise_amp = voiced * self.nsf_sigma + (1 - voiced) * self.nsf_alpha / 3
        sines = self.nsf_alpha * torch.sin(theta) * voiced + noise_amp * sample_noise
        weight = self.m_source.l_linear.weight
        return self.m_source(sines.T.unsqueeze(0).to(weight.device, weight.dtype))

    # ----------------------------------------------------------------------------------- decoder
    def _window(self, device: torch.device) -> torch.Tensor:
        # made on the fly (not a buffer) so the module has no state outside the checkpoint
        return torch.hann_window(self.n_fft, periodic=True, device=device)

    def _stft(self, signal: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(signal.float(), self.n_fft, self.istft_hop, self.n_fft, window=self._window(signal.device),
                          return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        magnitude = magnitude.float().clamp(max=1e2)
        spec = torch.complex(magnitude * torch.cos(phase.float()), magnitude * torch.sin(phase.float()))
        return torch.istft(spec, self.n_fft, self.istft_hop, self.n_fft, window=self._window(spec.device))

    def conv_body(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor:
        """Conv part: mel [1, 80, T] + source STFT [1, n_fft + 2, L] -> log-magnitude and phase [1, n_fft + 2, L]."""
        x = self.conv_pre(mel)
        for index, upsample in enumerate(self.ups):
            x = upsample(F.leaky_relu(x, self.lrelu_slope))
            if index == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[index](self.source_downs[index](source_spec))
            blocks = self.resblocks[index * self.num_kernels : (index + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return self.conv_post(F.leaky_relu(x))

    def decode(self, mel: torch.Tensor, source: torch.Tensor, runner: HiFTRunner | None = None) -> torch.Tensor:
        """mel [1, 80, T] + source [1, 1, T * P] -> waveform [1, T * P] (float32, clamped; P = samples_per_frame).

        ``runner``: an engine's conv body (default: this module's :meth:`conv_body`).
        """
        source_spec = self._stft(source.squeeze(1)).to(mel.dtype)
        x = self.conv_body(mel, source_spec) if runner is None else runner.body(mel, source_spec)
        half = self.n_fft // 2 + 1
        waveform = self._istft(torch.exp(x[:, :half]), torch.sin(x[:, half:]))
        return waveform.clamp(-self.audio_limit, self.audio_limit)


class HiFTGenerator(HiFTNetwork, LegacyWeightNormNames):
    """The 22.05 kHz HiFT vocoder; constructor arguments follow the recipe's ``hift`` section.

    Its state dict uses the legacy ``weight_g`` / ``weight_v`` names of the official ``hift.pt``.
    """

    # ----------------------------------------------------------------------------------- source
    def harmonic_source(self, f0_frames: torch.Tensor, state: SourceState, noise: SampleNoise,
                        advance_frames: int | None = None) -> torch.Tensor:
        """Excitation for the frames of ``f0_frames`` [T] starting at sample ``state.position``.

        The phase carry advances over the first ``advance_frames`` frames only (default: all), so a
        caller can compute provisional look-ahead samples without committing them.

        Returns:
            source [1, 1, T * samples_per_frame] in the model dtype.
        """
        per_frame = self.samples_per_frame
        f0 = f0_frames.detach().to("cpu", torch.float64).repeat_interleave(per_frame)  # [N]
        orders = torch.arange(1, self.harmonics + 1, dtype=torch.float64).unsqueeze(1)
        steps = f0.unsqueeze(0) * orders / self.sampling_rate  # [H, N] cycles per sample
        cycles = state.cycles + torch.cumsum(steps, dim=1)
        theta = 2 * math.pi * torch.remainder(cycles, 1.0) + noise.phases.to(torch.float64)
        start = state.position
        source = self.merge_sines(theta, f0, noise, start)
        advance = f0_frames.shape[0] if advance_frames is None else advance_frames
        if advance > 0:
            state.cycles = torch.remainder(cycles[:, advance * per_frame - 1 : advance * per_frame], 1.0)
        state.position = start + advance * per_frame
        return source

    @torch.inference_mode()
    def forward(self, mel: torch.Tensor, noise: SampleNoise, runner: HiFTRunner | None = None) -> torch.Tensor:
        """Vocode a whole mel spectrogram [1, 80, T] -> waveform [1, T * 256] float32 (``runner``: an engine's)."""
        mel = mel.to(self.conv_pre.bias.dtype)
        f0 = (self.f0_predictor(mel) if runner is None else runner.f0(mel))[0]
        source = self.harmonic_source(f0, SourceState(self.harmonics), noise)
        return self.decode(mel, source, runner)

    @torch.inference_mode()
    def vocode_window(self, mel: torch.Tensor, context_source: torch.Tensor, state: SourceState,
                      noise: SampleNoise, commit_frames: int,
                      runner: HiFTRunner | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocode a window whose first frames already have a (cached) source.

        Args:
            mel: [1, 80, C + K + R] mel frames: C context frames (source known), K frames to commit,
                R look-ahead frames.
            context_source: [1, 1, C * 256] source of the context frames (from earlier windows).
            state: phase carry positioned at the first non-context frame; advanced by ``commit_frames``.
            noise: the utterance's sample noise.
            commit_frames: K.
            runner: an engine's F0 predictor and conv body (default: this module's).

        Returns:
            (waveform [1, (C + K + R) * 256], source of the committed frames [1, 1, K * 256]).
        """
        mel = mel.to(self.conv_pre.bias.dtype)
        context_frames = context_source.shape[-1] // self.samples_per_frame
        f0 = (self.f0_predictor(mel) if runner is None else runner.f0(mel))[0]
        new_source = self.harmonic_source(f0[context_frames:], state, noise, advance_frames=commit_frames)
        source = torch.cat([context_source.to(new_source.dtype), new_source], dim=-1)
        waveform = self.decode(mel, source, runner)
        return waveform, new_source[..., : commit_frames * self.samples_per_frame]
