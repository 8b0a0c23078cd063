"""The CosyVoice-300M-25Hz speech decoder: audio tokens -> 22.05 kHz waveform, offline and streaming."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device, resolve_dtype
from ..errors import OFFICIAL_DOWNLOAD_HINT, AudioTokenError, CheckpointFileNotFoundError, PromptError
from ..streaming import Stream
from ..validation import check_int
from .builder import build_from_recipe
from .checkpoint import load_strict
from .config import load_recipe
from .flow import MEL_SAMPLE_RATE, FlowModel, FrameNoise, mel_frames_for_tokens
from .frontend import XVECTOR_SAMPLE_RATE, CampPlusSpeakerEncoder, MelSpectrogramConfig, prompt_mel, resample_audio
from .hift import HiFTGenerator, SampleNoise, SourceState

__all__ = [
    "CosyVoiceDecoder",
    "PromptFeatures",
    "StreamingConfig",
    "TokenToWavStream",
    "TokenToWavState",
    "DECODER_FILES",
    "SAMPLE_RATE",
]

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
        tokens = _as_token_tensor(speech_token, "speech_token")
        self._check_token_range(tokens, "speech_token")
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
        ids = _as_token_tensor(raw.reshape(-1), "token piece")
        self.decoder._check_token_range(ids, "token piece")
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
        waveform, new_source = hift.vocode_window(window, context_source, state.source_state, self.sample_noise, commit)
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
