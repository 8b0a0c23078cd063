"""``CosyVoiceDecoder``: the CosyVoice-300M-25Hz speech decoder, audio tokens -> 22.05 kHz waveform.

Offline (:meth:`CosyVoiceDecoder.token_to_wav_offline`) or streamed (:meth:`CosyVoiceDecoder.stream`, a
:class:`~stepaudio.cosyvoice.token_to_wav_stream.TokenToWavStream`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import resolve_device, resolve_dtype
from ..errors import OFFICIAL_DOWNLOAD_HINT, AudioTokenError, CheckpointFileNotFoundError, PromptError
from ..validation import check_int
from .builder import build_from_recipe
from .checkpoint import load_strict
from .config import load_recipe
from .engines import EngineRuntime, build_runtime, resolve_engine
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


# ----------------------------------------------------------------------------------------------- shared helpers
# used by both CosyVoiceDecoder and the 24 kHz stepaudio.cosyvoice2.decoder.CosyVoice2Decoder


def missing_file_error(path: Path, folder: Path, advice: str) -> CheckpointFileNotFoundError:
    """The error for a required decoder file ``path`` that is missing: ``"<path> not found; <advice> <hint>"``."""
    message = f"{path} not found; {advice} " + OFFICIAL_DOWNLOAD_HINT
    return CheckpointFileNotFoundError(message, folder=folder, file=path)


def check_load_settings(
    seed: int,
    n_timesteps: int,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    n_timesteps_hint: str,
) -> tuple[torch.device, torch.dtype]:
    """Check a decoder's ``from_pretrained`` seed and step count; return the resolved (device, flow dtype)."""
    check_int(seed, "seed", minimum=0, maximum=2**63 - 1)
    check_int(n_timesteps, "n_timesteps", minimum=1, maximum=1000, hint=n_timesteps_hint)
    resolved_device = resolve_device(device)
    return resolved_device, resolve_dtype(dtype, resolved_device)


def require_decoder_files(folder: Path, names: Sequence[str], decoder: str, layout: str) -> None:
    """Raise :class:`CheckpointFileNotFoundError` for the first of ``names`` missing from ``folder``.

    ``decoder`` names the decoder in the message ("decoder", "24 kHz decoder"), ``layout`` the expected folder.
    """
    for name in names:
        path = folder / name
        if not path.is_file():
            raise missing_file_error(
                path,
                folder,
                f"the {decoder} expects the official layout {layout}. "
                "Pass the CosyVoice-300M-25Hz folder itself (not its parent).",
            )


def load_flow_and_hift(flow: torch.nn.Module, hift: torch.nn.Module, folder: Path, recipe_path: Path) -> None:
    """Load ``folder``'s ``flow.pt`` and ``hift.pt`` strictly into the modules built from ``recipe_path``."""
    load_strict(flow, folder / "flow.pt", folder, built_from=str(recipe_path))
    load_strict(hift, folder / "hift.pt", folder, built_from=str(recipe_path))


def prompt_mel_and_xvector(
    speaker_encoder: CampPlusSpeakerEncoder | None,
    mel_config: MelSpectrogramConfig,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt mel [1, T, 80] (at ``mel_config``'s rate) and CAM++ x-vector [1, 192] (16 kHz) of a mono clip.

    Raises:
        PromptError: there is no speaker encoder (the folder had no ``campplus.onnx``).
    """
    if speaker_encoder is None:
        raise PromptError("this decoder was built without campplus.onnx, so it cannot embed a speaker prompt")
    mel = prompt_mel(resample_audio(waveform, sample_rate, mel_config.sampling_rate), mel_config)
    embedding = speaker_encoder(resample_audio(waveform, sample_rate, XVECTOR_SAMPLE_RATE))
    return mel, embedding


def check_prompt_mel(speech_feat: torch.Tensor, mel_bins: int) -> torch.Tensor:
    """``speech_feat`` as a tensor, refused with :class:`PromptError` unless it is a prompt mel [1, T, mel_bins]."""
    speech_feat = torch.as_tensor(speech_feat)
    if speech_feat.dim() != 3 or speech_feat.shape[0] != 1 or speech_feat.shape[2] != mel_bins:
        raise PromptError(f"speech_feat must be a prompt mel [1, T, {mel_bins}], got {tuple(speech_feat.shape)}")
    return speech_feat


def check_xvector(embedding: torch.Tensor, size: int) -> torch.Tensor:
    """``embedding`` reshaped to [1, -1], refused with :class:`PromptError` unless it is a [1, size] x-vector."""
    embedding = torch.as_tensor(embedding).reshape(1, -1)
    if embedding.shape[1] != size:
        raise PromptError(f"embedding must be a [1, {size}] x-vector, got {tuple(embedding.shape)}")
    return embedding


def stream_chunks(session: Any, pieces: Iterable[Any]) -> Iterator[torch.Tensor]:
    """Feed ``pieces`` to a decoder stream ``session`` (closed at the end) and yield its non-empty chunks [1, n]."""
    with session:
        for piece in pieces:
            chunk = session.feed(piece)
            if chunk.shape[1]:
                yield chunk
        final = session.close()
        if final.shape[1]:
            yield final


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
        engine: how the flow estimator and the vocoder run, one of :data:`~stepaudio.cosyvoice.engines.ENGINES`:
            ``"auto"`` (default: ``"onnxruntime"`` on CPU with a float32 flow, ``"cuda-graphs"`` on CUDA,
            else ``"eager"``), ``"eager"`` (the reference torch modules), ``"onnxruntime"``,
            ``"cuda-graphs"``; see :mod:`stepaudio.cosyvoice.engines`.  ``self.engine`` is the resolved name;
            the engine is prepared on the first decode (or on first access of :attr:`runtime`).
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
        engine: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.flow_dtype = flow_dtype
        self.engine = resolve_engine(engine, self.device, flow_dtype)
        self.flow = flow.to(self.device, flow_dtype).eval()
        self.hift = hift.to(self.device, torch.float32).eval()
        self.mel_config = mel_config
        self.speaker_encoder = speaker_encoder
        self.seed = int(seed)
        self.n_timesteps = int(n_timesteps)
        self.sample_rate = SAMPLE_RATE
        self._runtime: EngineRuntime | None = None
        logger.info(
            "CosyVoice decoder on %s: flow %s, hift float32, %d Euler steps, engine %s",
            self.device, flow_dtype, self.n_timesteps, self.engine,
        )

    @property
    def runtime(self) -> EngineRuntime:
        """The engine's prepared parts, made on first use (the ONNX export / graph set-up happens then)."""
        if self._runtime is None:
            self._runtime = build_runtime(self.engine, self.flow, self.hift, self.flow_dtype)
        return self._runtime

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        seed: int = 0,
        n_timesteps: int = 10,
        engine: str = "auto",
    ) -> "CosyVoiceDecoder":
        """Load a ``CosyVoice-300M-25Hz`` (or ``-Music``) folder exactly as published.

        Args:
            folder: the folder holding ``cosyvoice.yaml``, ``flow.pt``, ``hift.pt``, ``campplus.onnx``.
            device: default CUDA if available, else CPU.
            dtype: flow dtype (a torch.dtype or a name like ``"bf16"``); default bfloat16 on CUDA,
                float32 on CPU.  The vocoder is always float32.
            seed: noise seed (see class doc).
            n_timesteps: Euler steps.
            engine: ``"auto"``, ``"eager"``, ``"onnxruntime"`` or ``"cuda-graphs"`` (see the class doc).

        Raises:
            InvalidArgumentError: a bad ``seed``, ``n_timesteps`` or ``engine`` (also one that cannot run on the
                device / dtype), before any file is read.
            CheckpointFileNotFoundError: a required file is missing (message names the full path).
            CheckpointConfigError: the recipe cannot be read or names unknown classes.
            CheckpointKeyError / CheckpointShapeError: a weight file does not match the recipe.
        """
        resolved_device, flow_dtype = check_load_settings(
            seed, n_timesteps, device, dtype, "10 is the recipe's default"
        )
        resolve_engine(engine, resolved_device, flow_dtype)
        folder = Path(folder)
        require_decoder_files(folder, DECODER_FILES, "decoder", _FOLDER_LAYOUT)
        recipe_path = folder / "cosyvoice.yaml"
        recipe = load_recipe(recipe_path)
        with torch.device("meta"):
            built = build_from_recipe(recipe, source=str(recipe_path))
        load_flow_and_hift(built.flow, built.hift, folder, recipe_path)
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
            engine=engine,
        )

    # ------------------------------------------------------------------------------------------- frontend
    def prompt_features(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> PromptFeatures:
        """Prompt mel (22.05 kHz) and CAM++ x-vector (16 kHz) of a mono prompt clip at ``sample_rate``."""
        mel, embedding = prompt_mel_and_xvector(self.speaker_encoder, self.mel_config, waveform, sample_rate)
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
        speech_feat = check_prompt_mel(speech_feat, self.flow.output_size)
        num_frames = int(torch.as_tensor(speech_feat_len).reshape(-1)[0])
        if not 0 <= num_frames <= speech_feat.shape[1]:
            raise PromptError(f"speech_feat_len={num_frames} but speech_feat has {speech_feat.shape[1]} frames")
        speech_feat = speech_feat[:, :num_frames]
        if (num_frames == 0) != (num_prompt_tokens == 0):
            raise PromptError(
                f"prompt tokens ({num_prompt_tokens}) and prompt mel frames ({num_frames}) must be both present or "
                "both empty"
            )
        embedding = check_xvector(embedding, self.flow.spk_embed_affine_layer.in_features)
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
        seed = self.seed if seed is None else int(seed)
        mel = self.token_to_mel_offline(
            speech_token, speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding, seed
        )
        return self.mel_to_wav(mel, seed)

    @torch.inference_mode()
    def token_to_mel_offline(
        self,
        speech_token: torch.Tensor,
        speech_feat: torch.Tensor,
        speech_feat_len: torch.Tensor | int,
        prompt_token: torch.Tensor,
        prompt_token_len: torch.Tensor | int,
        embedding: torch.Tensor,
        seed: int | None = None,
    ) -> torch.Tensor:
        """The flow part of :meth:`token_to_wav_offline`: mel [1, 80, int(T / rate * 22050 / 256)] (float32, CPU)."""
        tokens = self.check_token_ids(speech_token, "speech_token")
        feat, prompt_tokens, embedding = self._prepare(
            speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding
        )
        if mel_frames_for_tokens(tokens.shape[1], self.flow.input_frame_rate) == 0:
            return torch.zeros(1, self.flow.output_size, 0)
        seed = self.seed if seed is None else int(seed)
        mel = self.flow.inference(
            tokens.to(self.device),
            prompt_tokens,
            feat,
            embedding,
            FrameNoise(seed, self.flow.output_size),
            self.n_timesteps,
            self.runtime.velocity,
        )
        return mel.float().cpu()

    @torch.inference_mode()
    def mel_to_wav(self, mel: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """The vocoder part of :meth:`token_to_wav_offline`: mel [1, 80, F] -> float32 waveform [1, F * 256] (CPU)."""
        if mel.shape[-1] == 0:
            return torch.zeros(1, 0)
        seed = self.seed if seed is None else int(seed)
        waveform = self.hift(mel.to(self.device, torch.float32), SampleNoise(seed, self.hift.harmonics),
                             self.runtime.hift)
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
        yield from stream_chunks(
            self.stream(speech_feat, speech_feat_len, prompt_token, prompt_token_len, embedding, config, seed),
            tokens_iterable,
        )
