"""``StepAudioTTS``: text (with optional instruction tag) and a voice to 22.05 kHz speech, offline or streamed.

Pipeline per text segment: choose system prompt / decoder / prompt speaker from the text's tag
(:func:`~stepaudio.tts.prompts.plan_tts_request`), build the TTS-3B prompt with the voice prompt's
transcript and audio tokens, sample audio tokens with the Step-1 TTS LM, and decode them with the
CosyVoice-300M-25Hz flow + HiFT vocoder (``-Music`` for RAP and humming).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from ..audio import load_audio, to_mono
from ..cosyvoice import CosyVoiceDecoder
from ..device import resolve_device, resolve_dtype
from ..errors import OFFICIAL_DOWNLOAD_HINT, CheckpointFileNotFoundError, PromptError
from ..llm.chat import resolve_model_folder
from ..llm.generation import BackgroundGeneration
from ..llm.modeling import Step1ForCausalLM
from ..llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES, load_text_tokenizer
from .postprocess import change_speed, change_volume
from .prompts import MUSIC_DECODER, SPEECH_DECODER, TTSRequestPlan, build_tts_prompt_ids, plan_tts_request
from .sampling import RepetitionAwareLogitsProcessor
from .speakers import SpeakerRegistry, VoicePrompt, VoicePromptCache, file_fingerprint
from .text import DEFAULT_MAX_SEGMENT_CHARS, split_tts_text

logger = logging.getLogger(__name__)

__all__ = ["AudioTokensOnlyLogitsProcessor", "StepAudioTTS", "TTS_MAX_LENGTH", "max_audio_tokens_for"]

#: Upstream's generation limit for TTS-3B: prompt + generated tokens.
TTS_MAX_LENGTH = 8192
SAMPLE_RATE = 22050
#: Audio tokens per second of speech (2 linguistic + 3 semantic codes per 120 ms).
AUDIO_TOKENS_PER_SECOND = 125 / 3


def max_audio_tokens_for(text: str) -> int:
    """A generous ceiling on the speech length of ``text``: 10 s plus 1 s per character.

    Real speech runs at 3-6 Chinese or 12-18 Latin characters per second, so this never cuts a
    normal utterance; it stops a model that fails to end its turn from producing minutes of audio.
    """
    return int(AUDIO_TOKENS_PER_SECOND * (10.0 + len(text)))


class AudioTokensOnlyLogitsProcessor(LogitsProcessor):
    """Let the TTS LM emit only audio ids (``65536 .. 70655``) and the end-of-turn id.

    Upstream samples from the whole vocabulary and passes whatever comes out to the flow (which
    clamps negative values and fails on values >= its vocabulary).  A trained model puts almost no
    mass elsewhere, so restricting the support changes nothing in practice and makes the output
    always decodable.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._masks: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def additive_mask(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``0`` for allowed ids, ``-inf`` elsewhere; built once per device and dtype."""
        key = (device, dtype)
        if key not in self._masks:
            mask = torch.full((self.vocab_size,), float("-inf"), dtype=dtype, device=device)
            mask[AUDIO_TOKEN_OFFSET : AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES] = 0.0
            mask[EOT_ID] = 0.0
            self._masks[key] = mask
        return self._masks[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores + self.additive_mask(scores.device, scores.dtype)[: scores.shape[-1]]


class _ProgressStreamer(BaseStreamer):
    """A tqdm bar over generated audio tokens (the prompt, sent first, is skipped)."""

    def __init__(self, total: int, description: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="tok", desc=description, leave=False)
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.bar.update(value.numel())
        self._prompt_seen = True

    def end(self) -> None:
        self.bar.close()


class _QueueStreamer(BaseStreamer):
    """Hands generated ids to another thread (the prompt, sent first, is skipped)."""

    def __init__(self) -> None:
        self.ids: queue.Queue[list[int] | None] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ids.put(None)


@dataclass
class _Segment:
    text: str
    plan: TTSRequestPlan
    voice: VoicePrompt
    prompt_ids: list[int]


class StepAudioTTS:
    """Step-Audio-TTS-3B speech synthesis.

    Args:
        model_path: the official ``Step-Audio-TTS-3B`` folder (or a folder containing it).
        tokenizer: a :class:`~stepaudio.tokenizer.StepAudioTokenizer` (turns voice prompts into tokens).
        speakers_dir: a speakers folder (``speakers_info.json`` + ``{id}_prompt.wav``) for named speakers.
        device: default CUDA if available, else CPU.
        dtype: LM dtype (default bf16 on GPU, fp32 on CPU).
        cache_dir: where voice-prompt features are cached (default ``~/.cache/stepaudio``).
        attn_implementation: ``sdpa`` (default), ``flex`` or ``eager``.
        max_segment_chars: long text is split at sentence ends into segments of at most this size.
        max_speech_seconds: optional hard limit on the speech generated per segment (besides the
            text-length ceiling of :func:`max_audio_tokens_for` and the 8192-token context).
        seed: seed of the decoders' noise (the LM's sampling follows ``torch``'s global RNG).

    Call it like upstream: ``wav, sample_rate = tts(text, speaker, clone_dict)``.
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer: Any,
        speakers_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        attn_implementation: str = "sdpa",
        max_segment_chars: int = DEFAULT_MAX_SEGMENT_CHARS,
        max_speech_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        self.model_path = resolve_model_folder(model_path, "Step-Audio-TTS-3B")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.audio_tokenizer = tokenizer
        self.max_segment_chars = max_segment_chars
        self.max_speech_seconds = max_speech_seconds
        self.seed = seed
        for decoder in (SPEECH_DECODER,):
            if not (self.model_path / decoder).is_dir():
                raise CheckpointFileNotFoundError(
                    f"missing decoder folder {self.model_path / decoder}: Step-Audio-TTS-3B holds the Step-1 LM plus "
                    f"{SPEECH_DECODER}/ and {MUSIC_DECODER}/. {OFFICIAL_DOWNLOAD_HINT}",
                    folder=self.model_path,
                    file=self.model_path / decoder,
                )
        self.text_tokenizer = load_text_tokenizer(self.model_path)
        self.model = Step1ForCausalLM.from_pretrained(
            self.model_path, dtype=self.dtype, attn_implementation=attn_implementation
        )
        self.model.to(self.device).eval()
        self._decoders: dict[str, CosyVoiceDecoder] = {}
        self.decoder(SPEECH_DECODER)  # load the speech decoder now; the music one on first use
        self.voice_prompts = VoicePromptCache(self._extract_voice_prompt, self._model_fingerprint(), cache_dir)
        self.speakers = SpeakerRegistry(speakers_dir, self.voice_prompts) if speakers_dir is not None else None
        logger.info("Step-Audio-TTS-3B loaded from %s on %s (%s)", self.model_path, self.device, self.dtype)

    # ------------------------------------------------------------------------------------------ parts
    def decoder(self, name: str) -> CosyVoiceDecoder:
        """The CosyVoice decoder sub-folder ``name`` (loaded on first use)."""
        if name not in self._decoders:
            folder = self.model_path / name
            if not folder.is_dir():
                raise CheckpointFileNotFoundError(
                    f"missing decoder folder {folder}: RAP and humming need {MUSIC_DECODER}/ inside Step-Audio-TTS-3B. "
                    f"{OFFICIAL_DOWNLOAD_HINT}",
                    folder=self.model_path,
                    file=folder,
                )
            self._decoders[name] = CosyVoiceDecoder.from_pretrained(folder, device=self.device, seed=self.seed)
        return self._decoders[name]

    def _model_fingerprint(self) -> str:
        """Identifies the files voice-prompt features depend on (audio tokenizer + CAM++ + recipe)."""
        files = [self.model_path / SPEECH_DECODER / name for name in ("campplus.onnx", "cosyvoice.yaml")]
        tokenizer_files = getattr(self.audio_tokenizer, "files", None)  # a StepAudioTokenizer's resolved paths
        if tokenizer_files is not None:
            files += [
                tokenizer_files.linguistic_centroids,
                tokenizer_files.semantic_onnx,
                tokenizer_files.paraformer_folder / "model.pt",
            ]
        return "|".join(f"{path.name}:{file_fingerprint(path)}" for path in files if Path(path).is_file())

    def _extract_voice_prompt(self, wav_path: Path, prompt_text: str, decoder_name: str) -> VoicePrompt:
        waveform, sample_rate = load_audio(wav_path)
        mono = to_mono(waveform)
        # Upstream: tokens from trimmed, energy-normalised audio; mel and x-vector from the untrimmed clip.
        audio_ids, _, _ = self.audio_tokenizer.wav2token(mono, sample_rate, enable_trim=True, energy_norm=True)
        features = self.decoder(decoder_name).prompt_features(mono, sample_rate)
        return VoicePrompt(
            prompt_text=prompt_text,
            prompt_audio_ids=[int(i) for i in audio_ids],
            speech_feat=features.speech_feat,
            speech_feat_len=features.speech_feat_len,
            embedding=features.embedding,
        )

    def voice_for(self, plan: TTSRequestPlan, clone_dict: Mapping[str, str] | None) -> VoicePrompt:
        """The voice prompt a request uses: the clone's clip, or the registered (style) speaker's."""
        if clone_dict is not None:
            missing = [key for key in ("prompt_text", "wav_path") if not clone_dict.get(key)]
            if missing:
                raise PromptError(
                    f"clone_dict needs {missing}: pass {{'speaker': name, 'prompt_text': transcript, "
                    "'wav_path': path to the prompt clip}"
                )
            return self.voice_prompts.voice_prompt(
                Path(clone_dict["wav_path"]), clone_dict["prompt_text"], plan.decoder
            )
        if self.speakers is None:
            raise PromptError(
                f"speaker {plan.prompt_speaker!r} was requested but no speakers folder is configured: create "
                "StepAudioTTS(..., speakers_dir=<folder with speakers_info.json>) or pass clone_dict"
            )
        return self.speakers.get(plan.prompt_speaker, plan.decoder)

    def _segments(self, text: str, speaker: str | None, clone_dict: Mapping[str, str] | None) -> list[_Segment]:
        if clone_dict is None and not speaker:
            raise PromptError("StepAudioTTS needs a speaker id or a clone_dict")
        segments = []
        voices: dict[tuple[str | None, str], VoicePrompt] = {}  # segments share their voice prompt
        for piece in split_tts_text(text, self.max_segment_chars) if isinstance(text, str) else [text]:
            plan = plan_tts_request(piece, None if clone_dict is not None else speaker)
            voice_key = (plan.prompt_speaker, plan.decoder)
            if voice_key not in voices:
                voices[voice_key] = self.voice_for(plan, clone_dict)
            voice = voices[voice_key]
            prompt_ids = build_tts_prompt_ids(
                self.text_tokenizer, plan.system_prompt, voice.prompt_text, voice.prompt_audio_ids, piece
            )
            if len(prompt_ids) >= TTS_MAX_LENGTH:
                raise PromptError(
                    f"the TTS prompt for {piece[:30]!r}... is {len(prompt_ids)} tokens; TTS-3B takes at most "
                    f"{TTS_MAX_LENGTH} (prompt + speech). Use a shorter voice prompt or a smaller max_segment_chars"
                )
            segments.append(_Segment(piece, plan, voice, prompt_ids))
        if not segments:
            plan_tts_request(text, speaker)  # raises the empty-text error
        return segments

    def max_new_tokens(self, prompt_length: int, text: str) -> int:
        """Audio-token budget of one segment: context room, text-length ceiling and ``max_speech_seconds``."""
        limit = min(TTS_MAX_LENGTH - prompt_length, max_audio_tokens_for(text))
        if self.max_speech_seconds is not None:
            limit = min(limit, int(self.max_speech_seconds * AUDIO_TOKENS_PER_SECOND))
        return max(1, limit)

    def _generate_kwargs(self, prompt_length: int, text: str, temperature: float) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens(prompt_length, text),
            "do_sample": True,
            "temperature": temperature,
            "top_k": 50,
            "top_p": 1.0,
            "eos_token_id": EOT_ID,
            "pad_token_id": self.text_tokenizer.pad_token_id,
            "logits_processor": LogitsProcessorList(
                [AudioTokensOnlyLogitsProcessor(self.model.config.vocab_size), RepetitionAwareLogitsProcessor()]
            ),
        }

    def generate_audio_codes(
        self, prompt_ids: list[int], text: str, temperature: float = 0.7, progress: bool = False
    ) -> list[int]:
        """Sample audio codes (0..5119) for the TTS prompt of ``text`` until ``<|EOT|>`` (or the length cap)."""
        input_ids = torch.tensor([prompt_ids], device=self.device)
        kwargs = self._generate_kwargs(len(prompt_ids), text, temperature)
        streamer = _ProgressStreamer(kwargs["max_new_tokens"], "speech tokens") if progress else None
        with torch.inference_mode():
            output = self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs
            )
        generated = output[0, len(prompt_ids) :].tolist()
        if EOT_ID in generated:
            generated = generated[: generated.index(EOT_ID)]
        return [token - AUDIO_TOKEN_OFFSET for token in generated]

    def _decoder_inputs(self, segment: _Segment) -> dict[str, Any]:
        prompt_tokens = torch.tensor([[i - AUDIO_TOKEN_OFFSET for i in segment.voice.prompt_audio_ids]])
        return {
            "speech_feat": segment.voice.speech_feat,
            "speech_feat_len": segment.voice.speech_feat_len,
            "prompt_token": prompt_tokens,
            "prompt_token_len": torch.tensor([prompt_tokens.shape[1]]),
            "embedding": segment.voice.embedding,
        }

    # ------------------------------------------------------------------------------------------ API
    def __call__(
        self,
        text: str,
        speaker: str | None = None,
        clone_dict: Mapping[str, str] | None = None,
        speed_ratio: float = 1.0,
        volume_ratio: float = 1.0,
        temperature: float = 0.7,
        progress: bool = False,
    ) -> tuple[torch.Tensor, int]:
        """Synthesise ``text`` with a registered ``speaker`` or a ``clone_dict`` voice.

        ``progress`` shows a progress bar over the generated speech tokens of each segment.

        Returns:
            ``(waveform [1, N] float32, 22050)``.
        """
        pieces = []
        for segment in self._segments(text, speaker, clone_dict):
            codes = self.generate_audio_codes(segment.prompt_ids, segment.text, temperature, progress)
            decoder = self.decoder(segment.plan.decoder)
            pieces.append(
                decoder.token_to_wav_offline(torch.tensor([codes], dtype=torch.long), **self._decoder_inputs(segment))
            )
        waveform = torch.cat(pieces, dim=1) if pieces else torch.zeros(1, 0)
        return self._postprocess(waveform, speed_ratio, volume_ratio), SAMPLE_RATE

    def stream(
        self,
        text: str,
        speaker: str | None = None,
        clone_dict: Mapping[str, str] | None = None,
        speed_ratio: float = 1.0,
        volume_ratio: float = 1.0,
        temperature: float = 0.7,
    ) -> Iterator[torch.Tensor]:
        """Yield waveform chunks ``[1, n]`` (22050 Hz) while audio tokens are being generated.

        The LM runs in a worker thread; its tokens go into the decoder's streaming form as they appear.
        ``speed_ratio`` is applied per chunk (the chunks are long enough for the time stretch, but the
        result differs slightly from the offline call at chunk borders).
        """
        for segment in self._segments(text, speaker, clone_dict):
            yield from self._stream_segment(segment, speed_ratio, volume_ratio, temperature)

    def _stream_segment(
        self, segment: _Segment, speed_ratio: float, volume_ratio: float, temperature: float
    ) -> Iterator[torch.Tensor]:
        decoder = self.decoder(segment.plan.decoder)
        streamer = _QueueStreamer()
        input_ids = torch.tensor([segment.prompt_ids], device=self.device)
        generation = BackgroundGeneration(
            self.model,
            input_ids,
            streamer,
            thread_name="stepaudio-tts-generate",
            **self._generate_kwargs(input_ids.shape[1], segment.text, temperature),
        )
        with generation, decoder.stream(**self._decoder_inputs(segment)) as audio_stream:
            while (ids := streamer.ids.get()) is not None:
                codes = []
                for token in ids:
                    if token == EOT_ID:
                        break
                    codes.append(token - AUDIO_TOKEN_OFFSET)
                if codes:
                    chunk = audio_stream.feed(codes)
                    if chunk.numel():
                        yield self._postprocess(chunk, speed_ratio, volume_ratio)
            tail = audio_stream.close()
            if tail.numel():
                yield self._postprocess(tail, speed_ratio, volume_ratio)

    @staticmethod
    def _postprocess(waveform: torch.Tensor, speed_ratio: float, volume_ratio: float) -> torch.Tensor:
        waveform = change_speed(waveform, SAMPLE_RATE, speed_ratio)
        return change_volume(waveform, volume_ratio)
