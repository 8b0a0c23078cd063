"""``CosyVoice2Decoder``: the Step-Audio-EditX speech decoder, mixed audio codes -> 24 kHz waveform.

Offline (:meth:`CosyVoice2Decoder.token_to_wav_offline`) or streamed (:meth:`CosyVoice2Decoder.stream`, a
:class:`~stepaudio.cosyvoice2.stream.CosyVoice2Stream`).  Inputs follow the original's
``token2wav_nonstream(token, prompt_token, prompt_feat, embedding)``: the codes to speak and the prompt's
codes in the mixed 2:3 layout as audio code values (LLM id - 65536), the prompt's 24 kHz mel and its
CAM++ x-vector (:meth:`CosyVoice2Decoder.prompt_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cosyvoice.config import load_recipe
from ..cosyvoice.decoder import (
    check_load_settings,
    check_prompt_mel,
    check_xvector,
    load_flow_and_hift,
    prompt_mel_and_xvector,
    require_decoder_files,
    stream_chunks,
)
from ..cosyvoice.flow import FrameNoise
from ..cosyvoice.frontend import CampPlusSpeakerEncoder, MelSpectrogramConfig
from ..cosyvoice.hift import SampleNoise
from ..errors import AudioInputError, PromptError
from ..validation import check_choice
from .builder import build_24k_recipe
from .flow import CausalFlow
from .hift import HiFT24k
from .stream import CosyVoice2Stream, StreamConfig
from .tokens import check_mixed_tokens, mixed_to_dual

__all__ = ["DECODER_24K_FILES", "SAMPLE_RATE_24K", "CosyVoice2Decoder", "PromptFeatures24k", "limit_prompt_peak"]

logger = logging.getLogger(__name__)

SAMPLE_RATE_24K = 24000
#: files the 24 kHz decoder reads from the EditX ``CosyVoice-300M-25Hz`` folder
DECODER_24K_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")
_FOLDER_LAYOUT = "Step-Audio-EditX/CosyVoice-300M-25Hz/ with cosyvoice.yaml, flow.pt, hift.pt and campplus.onnx"
#: the original scales a prompt clip whose peak is above this down to it before extracting anything
PROMPT_PEAK = 0.6


def limit_prompt_peak(waveform: np.ndarray | torch.Tensor, peak: float = PROMPT_PEAK) -> torch.Tensor:
    """A mono prompt clip scaled to ``peak`` when its absolute peak is above it (EditX ``preprocess_prompt_wav``).

    Apply it once and give the result both to the audio tokenizer (prompt codes) and to
    :meth:`CosyVoice2Decoder.prompt_features`, as the original does.
    """
    tensor = torch.as_tensor(waveform, dtype=torch.float32)
    if tensor.dim() == 2:
        tensor = tensor.mean(dim=0) if tensor.shape[0] < tensor.shape[1] else tensor.mean(dim=1)
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise AudioInputError(
            f"prompt waveform: expected mono samples [N] (or [channels, N]), got {tuple(tensor.shape)}"
        )
    top = float(tensor.abs().max())
    return tensor / top * peak if top > peak else tensor.clone()


@dataclass
class PromptFeatures24k:
    """What the decoder needs from a prompt clip besides its codes.

    Attributes:
        speech_feat: prompt mel at 24 kHz [1, T, 80] (50 frames/s).
        speech_feat_len: int64 [1] = T.
        embedding: CAM++ x-vector [1, 192].
    """

    speech_feat: torch.Tensor
    speech_feat_len: torch.Tensor
    embedding: torch.Tensor


class CosyVoice2Decoder:
    """Flow (dual-codebook embedding, upsampling conformer, DiT CFM) + 24 kHz HiFT + CAM++ of one EditX folder.

    Args:
        flow: the loaded flow.
        hift: the loaded vocoder (kept in float32).
        mel_config: the recipe's ``mel_conf`` (prompt mel).
        speaker_encoder: CAM++ x-vector extractor (None: :meth:`prompt_features` is unavailable).
        device: where flow and vocoder run.
        flow_dtype: dtype of the flow (bf16 on GPU, fp32 on CPU by default).
        seed: seed of the flow noise and the vocoder's source noise (per call overridable).
        n_timesteps: Euler steps (10 in the original).
    """

    sample_rate = SAMPLE_RATE_24K

    def __init__(
        self,
        flow: CausalFlow,
        hift: HiFT24k,
        mel_config: MelSpectrogramConfig,
        speaker_encoder: CampPlusSpeakerEncoder | None,
        device: torch.device,
        flow_dtype: torch.dtype,
        seed: int = 0,
        n_timesteps: int = 10,
    ) -> None:
        self.device = torch.device(device)
        self.flow_dtype = flow_dtype
        self.flow = flow.to(self.device, flow_dtype).eval()
        self.hift = hift.to(self.device, torch.float32).eval()
        self.mel_config = mel_config
        self.speaker_encoder = speaker_encoder
        self.seed = int(seed)
        self.n_timesteps = int(n_timesteps)
        logger.info(
            "EditX 24 kHz decoder on %s: flow %s, hift float32, %d Euler steps",
            self.device,
            flow_dtype,
            self.n_timesteps,
        )

    @property
    def samples_per_step(self) -> int:
        """Output samples per dual-codebook step (2 mel frames x 480 = 960; 2880 per group of 5 codes)."""
        return self.flow.frames_per_step * self.hift.samples_per_frame

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        seed: int = 0,
        n_timesteps: int = 10,
    ) -> "CosyVoice2Decoder":
        """Load the EditX ``CosyVoice-300M-25Hz`` folder exactly as published.

        Args:
            folder: the folder holding ``cosyvoice.yaml``, ``flow.pt``, ``hift.pt``, ``campplus.onnx``.
            device: default CUDA if available, else CPU.
            dtype: flow dtype (torch.dtype or a name like ``"bf16"``); default bf16 on CUDA, fp32 on CPU.
            seed: noise seed.
            n_timesteps: Euler steps.

        Raises:
            CheckpointFileNotFoundError: a required file is missing (the message names the full path).
            CheckpointConfigError: the recipe cannot be read, names unknown classes or unsupported values.
            CheckpointKeyError / CheckpointShapeError: ``flow.pt`` / ``hift.pt`` do not match the recipe.
        """
        resolved_device, flow_dtype = check_load_settings(
            seed, n_timesteps, device, dtype, "10 is the original's default"
        )
        folder = Path(folder)
        require_decoder_files(folder, DECODER_24K_FILES, "24 kHz decoder", _FOLDER_LAYOUT)
        recipe_path = folder / "cosyvoice.yaml"
        with torch.device("meta"):
            built = build_24k_recipe(load_recipe(recipe_path), source=str(recipe_path))
        load_flow_and_hift(built.flow, built.hift, folder, recipe_path)
        return cls(
            built.flow,
            built.hift,
            built.mel_config,
            CampPlusSpeakerEncoder(folder / "campplus.onnx"),
            resolved_device,
            flow_dtype,
            seed=seed,
            n_timesteps=n_timesteps,
        )

    # ------------------------------------------------------------------------------------------- frontend
    def prompt_features(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> PromptFeatures24k:
        """Prompt mel (at the recipe's rate, 24 kHz) and CAM++ x-vector (16 kHz) of a mono clip at ``sample_rate``.

        Scale the clip with :func:`limit_prompt_peak` first (as the original does), and tokenize that same
        clip for the prompt codes.
        """
        mel, embedding = prompt_mel_and_xvector(self.speaker_encoder, self.mel_config, waveform, sample_rate)
        return PromptFeatures24k(mel, torch.tensor([mel.shape[1]], dtype=torch.long), embedding)

    # ------------------------------------------------------------------------------------------- inputs
    def prepare_prompt(
        self, prompt_token: object, speech_feat: torch.Tensor, embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked prompt inputs on the device: (prompt steps [1, P, 2], aligned mel [1, 2P, 80], x-vector [1, 192]).

        The prompt mel is resized (nearest) to exactly two frames per prompt step, as the original does.

        Raises:
            AudioTokenError: the prompt codes are malformed (see :func:`.tokens.check_mixed_tokens`).
            PromptError: the mel or the x-vector has the wrong shape, or only one of codes and mel is empty.
        """
        codes = check_mixed_tokens(prompt_token, "prompt_token")
        speech_feat = check_prompt_mel(speech_feat, self.flow.output_size)
        if (speech_feat.shape[1] == 0) != (len(codes) == 0):
            raise PromptError(
                f"prompt_token ({len(codes)} codes) and speech_feat ({speech_feat.shape[1]} frames) must be both "
                "present or both empty"
            )
        embedding = check_xvector(embedding, self.flow.spk_embed_affine_layer.in_features)
        steps = mixed_to_dual(codes).unsqueeze(0) if codes else torch.zeros(1, 0, 2, dtype=torch.long)
        frames = steps.shape[1] * self.flow.frames_per_step
        aligned = speech_feat.float()
        if frames:
            aligned = F.interpolate(aligned.transpose(1, 2), size=frames, mode="nearest").transpose(1, 2)
        return (
            steps.to(self.device),
            aligned.to(self.device, self.flow_dtype),
            embedding.to(self.device, self.flow_dtype),
        )

    # ------------------------------------------------------------------------------------------- offline
    @torch.inference_mode()
    def token_to_wav_offline(
        self,
        speech_token: Sequence[int] | np.ndarray | torch.Tensor,
        prompt_token: Sequence[int] | np.ndarray | torch.Tensor,
        speech_feat: torch.Tensor,
        embedding: torch.Tensor,
        seed: int | None = None,
        attention: str = "full",
        config: StreamConfig | None = None,
    ) -> torch.Tensor:
        """Decode all ``speech_token`` at once (the original's ``token2wav_nonstream`` argument order).

        Args:
            speech_token: mixed 2:3 audio codes to speak (values 0..5119 = LLM id - 65536), [T] or [1, T].
            prompt_token: the prompt clip's mixed codes (same layout), [P] or [1, P].
            speech_feat: the prompt clip's mel [1, Tm, 80] (:meth:`prompt_features`).
            embedding: the prompt clip's x-vector [1, 192].
            seed: noise seed (default: the decoder's); same seed -> same waveform.
            attention: ``"full"`` attends over the whole utterance (the original's offline decode);
                ``"chunked"`` attends as a stream with ``config``'s chunk plan does, which gives the
                streamed waveform (up to float rounding).
            config: the stream configuration replayed by ``attention="chunked"`` (default: the original's).

        Returns:
            float32 waveform [1, 2880 * ceil(T / 5)] at 24 kHz on the CPU (a partial last group is completed).
        """
        check_choice(attention, "attention", ("full", "chunked"))
        codes = check_mixed_tokens(speech_token, "speech_token")
        steps_prompt, feat, embedding = self.prepare_prompt(prompt_token, speech_feat, embedding)
        if not codes:
            return torch.zeros(1, 0)
        seed = self.seed if seed is None else int(seed)
        plan = (config or StreamConfig()).plan(self.flow.lookahead_steps) if attention == "chunked" else None
        mel = self.flow.inference(
            mixed_to_dual(codes).unsqueeze(0).to(self.device),
            steps_prompt,
            feat,
            embedding,
            FrameNoise(seed, self.flow.output_size),
            self.n_timesteps,
            plan,
        )
        return self.hift(mel.float(), SampleNoise(seed, self.hift.harmonics)).cpu()

    # ------------------------------------------------------------------------------------------- streaming
    def stream(
        self,
        prompt_token: Sequence[int] | np.ndarray | torch.Tensor,
        speech_feat: torch.Tensor,
        embedding: torch.Tensor,
        config: StreamConfig | None = None,
        seed: int | None = None,
    ) -> CosyVoice2Stream:
        """A :class:`CosyVoice2Stream`: ``feed`` pieces of mixed codes, get 24 kHz audio; ``close`` flushes the rest."""
        steps_prompt, feat, embedding = self.prepare_prompt(prompt_token, speech_feat, embedding)
        return CosyVoice2Stream(
            self, steps_prompt, feat, embedding, config or StreamConfig(), self.seed if seed is None else int(seed)
        )

    def token_to_wav_stream(
        self,
        tokens_iterable: Iterable[int | Sequence[int] | torch.Tensor],
        prompt_token: Sequence[int] | np.ndarray | torch.Tensor,
        speech_feat: torch.Tensor,
        embedding: torch.Tensor,
        config: StreamConfig | None = None,
        seed: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield waveform chunks [1, n] (float32, 24 kHz) while codes arrive; empty chunks are skipped."""
        yield from stream_chunks(self.stream(prompt_token, speech_feat, embedding, config, seed), tokens_iterable)
