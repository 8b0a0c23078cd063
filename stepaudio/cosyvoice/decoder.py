"""``CosyVoiceDecoder``: the CosyVoice-300M-25Hz speech decoder, audio tokens -> 22.05 kHz waveform.

Offline (:meth:`CosyVoiceDecoder.token_to_wav_offline`) or streamed (:meth:`CosyVoiceDecoder.stream`, a
:class:`~stepaudio.cosyvoice.token_to_wav_stream.TokenToWavStream`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device, resolve_dtype
from ..errors import OFFICIAL_DOWNLOAD_HINT, AudioTokenError, CheckpointFileNotFoundError, PromptError
from ..validation import check_int
from .builder import build_from_recipe
from .checkpoint import load_strict
from .config import load_recipe
from .flow import MEL_SAMPLE_RATE, FlowModel, FrameNoise, mel_frames_for_tokens
from .frontend import XVECTOR_SAMPLE_RATE, CampPlusSpeakerEncoder, MelSpectrogramConfig, prompt_mel, resample_audio
from .hift import HiFTGenerator, SampleNoise
from .token_to_wav_stream import StreamingConfig, TokenToWavStream

__all__ = ["CosyVoiceDecoder", "DECODER_FILES", "PromptFeatures", "SAMPLE_RATE"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = MEL_SAMPLE_RATE
#: files the decoder reads from a CosyVoice-300M-25Hz(-Music) folder
DECODER_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")
_FOLDER_LAYOUT = (
    "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/ (or CosyVoice-300M-25Hz-Music/) with cosyvoice.yaml, flow.pt, "
    "hift.pt, campplus.onnx, speech_tokenizer_v1.onnx and the empty VERSION_Vq0206Vocoder_1202 marker"
)


@dataclass
class PromptFeatures:
    """What the decoder needs from a prompt clip (upstream names and shapes).

    Attributes:
        speech_feat: prompt mel [1, T, 80].
        speech_feat_len: int32 [1] = T.
        embedding: CAM++ x-vector [1, 192].
    """

    speech_feat: torch.Tensor
    speech_feat_len: torch.Tensor
    embedding: torch.Tensor


def _as_token_tensor(tokens: torch.Tensor | Sequence[int] | np.ndarray, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(tokens)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 2 or tensor.shape[0] != 1:
        raise AudioTokenError(f"{what}: expected token ids of shape [T] or [1, T], got {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex():
        raise AudioTokenError(f"{what}: expected integer token ids, got dtype {tensor.dtype}")
    return tensor.long()


class CosyVoiceDecoder:
    """Flow-matching decoder + HiFT vocoder + CAM++ frontend of one CosyVoice-300M-25Hz folder.

    Args:
        flow: the loaded flow model.
        hift: the loaded vocoder (kept in float32).
        mel_config: the recipe's ``feat_extractor`` settings (prompt mel).
        speaker_encoder: CAM++ x-vector extractor, or None when the folder has no ``campplus.onnx``
            (then :meth:`prompt_features` is unavailable).
        device: where flow and vocoder run.
        flow_dtype: dtype of the flow (bf16 on GPU, fp32 on CPU by default).
        seed: seed of the flow's initial noise and the vocoder's source noise (per call overridable).
        n_timesteps: Euler steps of the flow ODE (10 upstream).
    """

    def __init__(
        self,
        flow: FlowModel,
        hift: HiFTGenerator,
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
        self.sample_rate = SAMPLE_RATE
        logger.info(
            "CosyVoice decoder on %s: flow %s, hift float32, %d Euler steps", self.device, flow_dtype, self.n_timesteps
        )

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        seed: int = 0,
        n_timesteps: int = 10,
    ) -> "CosyVoiceDecoder":
        """Load a ``CosyVoice-300M-25Hz`` (or ``-Music``) folder exactly as published.

        Args:
            folder: the folder holding ``cosyvoice.yaml``, ``flow.pt``, ``hift.pt``, ``campplus.onnx``.
            device: default CUDA if available, else CPU.
            dtype: flow dtype (a torch.dtype or a name like ``"bf16"``); default bfloat16 on CUDA,
                float32 on CPU.  The vocoder is always float32.
            seed: noise seed (see class doc).
            n_timesteps: Euler steps.

        Raises:
            CheckpointFileNotFoundError: a required file is missing (message names the full path).
            CheckpointConfigError: the recipe cannot be read or names unknown classes.
            CheckpointKeyError / CheckpointShapeError: a weight file does not match the recipe.
        """
        check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
        check_int(n_timesteps, "n_timesteps", minimum=1, maximum=1000, hint="10 is the recipe's default")
        resolved_device = resolve_device(device)
        flow_dtype = resolve_dtype(dtype, resolved_device)
        folder = Path(folder)
        for name in DECODER_FILES:
            path = folder / name
            if not path.is_file():
                raise CheckpointFileNotFoundError(
                    f"{path} not found; the decoder expects the official layout {_FOLDER_LAYOUT}. "
                    "Pass the CosyVoice-300M-25Hz folder itself (not its parent). " + OFFICIAL_DOWNLOAD_HINT,
                    folder=folder,
                    file=path,
                )
        recipe_path = folder / "cosyvoice.yaml"
        recipe = load_recipe(recipe_path)
        with torch.device("meta"):
            built = build_from_recipe(recipe, source=str(recipe_path))
        load_strict(built.flow, folder / "flow.pt", folder, built_from=str(recipe_path))
        load_strict(built.hift, folder / "hift.pt", folder, built_from=str(recipe_path))
        speaker_encoder = CampPlusSpeakerEncoder(folder / "campplus.onnx")
        return cls(
            built.flow,
            built.hift,
            built.feat_extractor,
            speaker_encoder,
            resolved_device,
            flow_dtype,
            seed=seed,
            n_timesteps=n_timesteps,
        )

    # ------------------------------------------------------------------------------------------- frontend
    def prompt_features(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> PromptFeatures:
        """Prompt mel (22.05 kHz) and CAM++ x-vector (16 kHz) of a mono prompt clip at ``sample_rate``."""
        if self.speaker_encoder is None:
            raise PromptError("this decoder was built without campplus.onnx, so it cannot embed a speaker prompt")
        mel = prompt_mel(resample_audio(waveform, sample_rate, self.mel_config.sampling_rate), self.mel_config)
        embedding = self.speaker_encoder(resample_audio(waveform, sample_rate, XVECTOR_SAMPLE_RATE))
        return PromptFeatures(mel, torch.tensor([mel.shape[1]], dtype=torch.int32), embedding)

    # ------------------------------------------------------------------------------------------- inputs
    def _prepare(
        self,
        speech_feat: torch.Tensor,
        speech_feat_len: torch.Tensor | int,
        prompt_token: torch.Tensor,
        prompt_token_len: torch.Tensor | int,
        embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prompt_token = _as_token_tensor(prompt_token, "prompt_token")
        num_prompt_tokens = int(torch.as_tensor(prompt_token_len).reshape(-1)[0])
        if not 0 <= num_prompt_tokens <= prompt_token.shape[1]:
            raise PromptError(f"prompt_token_len={num_prompt_tokens} but prompt_token has {prompt_token.shape[1]} ids")
        prompt_token = prompt_token[:, :num_prompt_tokens]
        speech_feat = torch.as_tensor(speech_feat)
        if speech_feat.dim() != 3 or speech_feat.shape[0] != 1 or speech_feat.shape[2] != self.flow.output_size:
            raise PromptError(
                f"speech_feat must be a prompt mel [1, T, {self.flow.output_size}], got {tuple(speech_feat.shape)}"
            )
        num_frames = int(torch.as_tensor(speech_feat_len).reshape(-1)[0])
        if not 0 <= num_frames <= speech_feat.shape[1]:
            raise PromptError(f"speech_feat_len={num_frames} but speech_feat has {speech_feat.shape[1]} frames")
        speech_feat = speech_feat[:, :num_frames]
        if (num_frames == 0) != (num_prompt_tokens == 0):
            raise PromptError(
                f"prompt tokens ({num_prompt_tokens}) and prompt mel frames ({num_frames}) must be both present or "
                "both empty"
            )
        embedding = torch.as_tensor(embedding).reshape(1, -1)
        if embedding.shape[1] != self.flow.spk_embed_affine_layer.in_features:
            raise PromptError(
                f"embedding must be a [1, {self.flow.spk_embed_affine_layer.in_features}] x-vector, got "
                f"{tuple(embedding.shape)}"
            )
        self._check_token_range(prompt_token, "prompt_token")
        return (
            speech_feat.to(self.device, self.flow_dtype),
            prompt_token.to(self.device),
            embedding.to(self.device, self.flow_dtype),
        )

    def check_token_ids(self, tokens: torch.Tensor | Sequence[int] | np.ndarray, what: str) -> torch.Tensor:
        """``tokens`` ([T] or [1, T] integer ids, values 0..5119) as a [1, T] int64 tensor; refused otherwise.

        Raises:
            AudioTokenError: naming ``what``: a wrong shape or dtype, or an id outside the flow's vocabulary.
        """
        ids = _as_token_tensor(tokens, what)
        self._check_token_range(ids, what)
        return ids

    def _check_token_range(self, tokens: torch.Tensor, what: str) -> None:
        if tokens.numel() and int(tokens.max()) >= self.flow.vocab_size:
            raise AudioTokenError(
                f"{what} contains id {int(tokens.max())} but the flow's vocabulary has {self.flow.vocab_size} entries "
                "(expected audio token values 0..5119, i.e. LLM id - 65536)"
            )

    # ------------------------------------------------------------------------------------------- offline
    @torch.inference_mode()
    def token_to_wav_offline(
        self,
        speech_token: torch.Tensor,
        speech_feat: torch.Tensor,
        speech_feat_len: torch.Tensor | int,
        prompt_token: torch.Tensor,
        prompt_token_len: torch.Tensor | int,
        embedding: torch.Tensor,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Decode all ``speech_token`` [1, T] (values 0..5119) at once (upstream argument list).

        Args:
            speech_token: tokens to speak.
            speech_feat, speech_feat_len: prompt mel [1, Tm, 80] and its length.
            prompt_token, prompt_token_len: the prompt's tokens [1, Tp] and their count.
            embedding: CAM++ x-vector [1, 192].
            seed: noise seed (default: the decoder's); same seed -> same waveform.

        Returns:
            float32 waveform [1, int(T / rate * 22050 / 256) * 256] at 22050 Hz (on the CPU).
        """
        tokens = self.check_token_ids(speech_token, "speech_token")
        feat, prompt_tokens, embedding = self._prepare(
            speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding
        )
        if mel_frames_for_tokens(tokens.shape[1], self.flow.input_frame_rate) == 0:
            return torch.zeros(1, 0)
        seed = self.seed if seed is None else int(seed)
        mel = self.flow.inference(
            tokens.to(self.device),
            prompt_tokens,
            feat,
            embedding,
            FrameNoise(seed, self.flow.output_size),
            self.n_timesteps,
        )
        waveform = self.hift(mel.float(), SampleNoise(seed, self.hift.harmonics))
        return waveform.float().cpu()

    # ------------------------------------------------------------------------------------------- streaming
    def stream(
        self,
        speech_feat: torch.Tensor,
        speech_feat_len: torch.Tensor | int,
        prompt_token: torch.Tensor,
        prompt_token_len: torch.Tensor | int,
        embedding: torch.Tensor,
        config: StreamingConfig | None = None,
        seed: int | None = None,
    ) -> "TokenToWavStream":
        """A :class:`TokenToWavStream`: ``feed`` token pieces, get audio chunks; ``close`` flushes the rest."""
        feat, prompt_tokens, embedding = self._prepare(
            speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding
        )
        return TokenToWavStream(
            self, feat, prompt_tokens, embedding, config or StreamingConfig(), self.seed if seed is None else int(seed)
        )

    def token_to_wav_stream(
        self,
        tokens_iterable: Iterable[int | Sequence[int] | torch.Tensor],
        speech_feat: torch.Tensor,
        speech_feat_len: torch.Tensor | int,
        prompt_token: torch.Tensor,
        prompt_token_len: torch.Tensor | int,
        embedding: torch.Tensor,
        config: StreamingConfig | None = None,
        seed: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield waveform chunks [1, n] (float32, 22050 Hz) while tokens arrive; empty chunks are skipped.

        ``tokens_iterable`` yields single ids or pieces of ids.  Concatenating the chunks gives
        exactly as many samples as :meth:`token_to_wav_offline`, and (with the same seed) nearly
        the same waveform; see the tests for the bound.
        """
        with self.stream(
            speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding, config, seed
        ) as session:
            for piece in tokens_iterable:
                chunk = session.feed(piece)
                if chunk.shape[1]:
                    yield chunk
            final = session.close()
            if final.shape[1]:
                yield final
