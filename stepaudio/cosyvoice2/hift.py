"""HiFT vocoder of the Step-Audio-EditX decoder (24 kHz, 480 samples per 50 Hz mel frame).

Same network as the 22.05 kHz HiFT (:class:`stepaudio.cosyvoice.hift.HiFTNetwork`: layers, conv body, inverse
STFT and source merge), with two differences that make it a class of its own:

* the harmonic source is CosyVoice2's ``SineGen2``: per-frame phase increments ``(f0 * k / sr) mod 1``
  are summed per frame, scaled by 480 and linearly interpolated to samples (frame centres; constant
  before the first and after the last centre).  The original's random initial phases are lost in its
  own frame-centre resampling, so every harmonic starts at phase 0;
* weight-normed convolutions are stored with the current PyTorch names
  (``<conv>.parametrizations.weight.original0`` / ``original1``), not ``weight_g`` / ``weight_v``.

Randomness (the source noise) comes from :class:`~stepaudio.cosyvoice.hift.SampleNoise`, indexed by
absolute output sample, and the phase is carried explicitly in float64, so a window vocoded with enough
mel context on both sides (:meth:`HiFT24k.vocode_window`) reproduces the offline waveform.
"""

from __future__ import annotations

import math

import torch

from ..cosyvoice.hift import HiFTNetwork, SampleNoise

__all__ = ["HiFT24k", "SourceCarry"]


class SourceCarry:
    """What later vocoder windows need of the frames already committed: their F0 and harmonic phase.

    ``f0[f]`` is frame ``f``'s F0 as predicted with full context; ``cycles[f]`` is ``480 * sum(rate of frames
    0..f)`` mod 1 (float64 [harmonics], sample-domain cycles at frame ``f``'s centre).  A window re-uses
    both for its context frames, whose own F0 prediction lacks left context at the window edge.
    """

    def __init__(self, harmonics: int) -> None:
        self.harmonics = harmonics
        self.f0: list[float] = []
        self.cycles: list[torch.Tensor] = []

    def before(self, frame: int) -> torch.Tensor:
        """Cycles at the centre of frame ``frame - 1`` (zeros before frame 0)."""
        return torch.zeros(self.harmonics, dtype=torch.float64) if frame == 0 else self.cycles[frame - 1]


class HiFT24k(HiFTNetwork):
    """The 24 kHz HiFT generator; constructor arguments are the recipe's ``HiFTGenerator`` parameters.

    Layers, conv body and :meth:`~stepaudio.cosyvoice.hift.HiFTNetwork.decode` are the shared network's; the
    state dict keeps the current weight-norm names.
    """

    # ----------------------------------------------------------------------------------- source
    def frame_rates(self, f0: torch.Tensor) -> torch.Tensor:
        """Per-frame phase increments in sample-domain cycles, float64 [harmonics, T] (``480 * (f0 k / sr mod 1)``)."""
        orders = torch.arange(1, self.harmonics + 1, dtype=torch.float64).unsqueeze(1)
        per_sample = torch.remainder(f0.detach().to("cpu", torch.float64).unsqueeze(0) * orders / self.sampling_rate, 1)
        return per_sample * self.samples_per_frame

    def source(
        self, f0: torch.Tensor, first_frame: int, start_cycles: torch.Tensor, noise: SampleNoise, last_is_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Excitation [1, 1, T * 480] for frames ``first_frame .. first_frame + T`` of the utterance.

        Args:
            f0: F0 (Hz) of those frames [T].
            start_cycles: :meth:`SourceCarry.before` ``(first_frame)``.
            noise: the utterance's sample noise.
            last_is_end: the last frame is the utterance's last (phase held after its centre, as offline).

        Returns:
            (source in the model dtype, cycles at each frame centre float64 [harmonics, T] for the carry).
        """
        per_frame = self.samples_per_frame
        frames = f0.shape[0]
        cumulative = torch.remainder(start_cycles.unsqueeze(1) + torch.cumsum(self.frame_rates(f0), dim=1), 1.0)
        # sample n of frame i sits at fractional frame (n + 0.5) / 480 - 0.5 from the frame's centre
        offsets = (torch.arange(per_frame, dtype=torch.float64) + 0.5) / per_frame - 0.5  # [-0.5, 0.5)
        position = torch.arange(frames, dtype=torch.float64).unsqueeze(1) + offsets.unsqueeze(0)  # [T, 480]
        left = position.floor().long()  # -1 for the first half of frame 0
        weight = (position - left).reshape(-1)
        left = left.reshape(-1)
        rates = self.frame_rates(f0)
        cycles_left = torch.where(
            (left >= 0).unsqueeze(0),
            cumulative[:, left.clamp(min=0)],
            start_cycles.unsqueeze(1).expand(-1, left.numel()),
        )
        step = rates[:, (left + 1).clamp(max=frames - 1)]
        if first_frame == 0:  # before the first centre the original holds the first centre's phase
            weight = torch.where(left < 0, torch.ones_like(weight), weight)
        if last_is_end:  # after the last centre it holds the last centre's phase
            weight = torch.where(left >= frames - 1, torch.zeros_like(weight), weight)
        theta = 2 * math.pi * torch.remainder(cycles_left + weight.unsqueeze(0) * step, 1.0)
        f0_samples = f0.detach().to("cpu", torch.float64).repeat_interleave(per_frame)
        return self.merge_sines(theta, f0_samples, noise, first_frame * per_frame), cumulative

    @torch.inference_mode()
    def forward(self, mel: torch.Tensor, noise: SampleNoise) -> torch.Tensor:
        """Vocode a whole utterance's mel [1, 80, T] -> waveform [1, T * 480] float32."""
        mel = mel.to(self.conv_pre.bias.dtype)
        f0 = self.f0_predictor(mel)[0]
        source, _ = self.source(f0, 0, torch.zeros(self.harmonics, dtype=torch.float64), noise, last_is_end=True)
        return self.decode(mel, source).float()

    @torch.inference_mode()
    def vocode_window(
        self,
        mel: torch.Tensor,
        first_frame: int,
        carry: SourceCarry,
        noise: SampleNoise,
        commit: tuple[int, int],
        last_is_end: bool,
    ) -> torch.Tensor:
        """Vocode frames ``first_frame ..`` of ``mel`` [1, 80, T] and record the phase of the committed frames.

        ``commit`` = (start, stop) frame indices (absolute) whose cycles are appended to ``carry``; frames
        before ``start`` must already be in it.  Returns the window's waveform [1, T * 480] float32.
        """
        mel = mel.to(self.conv_pre.bias.dtype)
        f0 = self.f0_predictor(mel)[0].float()
        known = commit[0] - first_frame  # context frames: committed earlier, F0 known with full context
        if known:
            f0 = torch.cat(
                [torch.tensor(carry.f0[first_frame : commit[0]], dtype=f0.dtype, device=f0.device), f0[known:]]
            )
        source, cycles = self.source(f0, first_frame, carry.before(first_frame), noise, last_is_end)
        carry.f0.extend(f0[known : commit[1] - first_frame].tolist())
        carry.cycles.extend(cycles[:, frame - first_frame].clone() for frame in range(commit[0], commit[1]))
        return self.decode(mel, source).float()
