"""``StepAudioTTS``: text (with optional instruction tag) and a voice to 22.05 kHz speech, offline or streamed.

Pipeline per text segment: choose system prompt / decoder / prompt speaker from the text's tag
(:func:`~stepaudio.tts.prompts.plan_tts_request`), build the TTS-3B prompt with the voice prompt's
transcript and audio tokens, sample audio tokens with the Step-1 TTS LM, and decode them with the
CosyVoice-300M-25Hz flow + HiFT vocoder (``-Music`` for RAP and humming).
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor

from ..audio import audio_duration, load_audio, to_mono
from ..cosyvoice import CosyVoiceDecoder
from ..device import resolve_device, resolve_dtype
from ..errors import (
    OFFICIAL_DOWNLOAD_HINT,
    AudioInputError,
    CheckpointFileNotFoundError,
    InvalidArgumentError,
    PromptError,
)
from ..llm.backends import (
    GenerationBackend,
    SamplingSettings,
    check_backend_spec,
    check_quantization_for,
    make_backend,
)
from ..llm.backends.base import TTS_REPETITION_MAX_RATIO, TTS_REPETITION_WINDOW
from ..llm.chat import resolve_model_folder
from ..llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES, load_text_tokenizer
from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND, audio_seconds_for, max_audio_tokens
from ..validation import (
    check_bool,
    check_choice,
    check_float,
    check_input_dir,
    check_input_file,
    check_int,
    check_output_dir,
    check_text,
    describe_value,
)
from .postprocess import change_speed, change_volume, check_speed_ratio, check_volume_ratio
from .prompts import MUSIC_DECODER, SPEECH_DECODER, TTSRequestPlan, build_tts_prompt_ids, plan_tts_request
from .speakers import (
    CLONE_HINT,
    SPEAKERS_INFO_FILE,
    SpeakerRegistry,
    VoicePrompt,
    VoicePromptCache,
    file_fingerprint,
    unknown_speaker_message,
)
from .text import DEFAULT_MAX_SEGMENT_CHARS, check_tts_text, split_tts_text

logger = logging.getLogger(__name__)

__all__ = ["AudioTokensOnlyLogitsProcessor", "StepAudioTTS", "TTS_MAX_LENGTH", "max_audio_tokens_for"]

#: Upstream's generation limit for TTS-3B: prompt + generated tokens (capped further by the folder's
#: ``max_seq_len``, see :attr:`StepAudioTTS.max_length`).
TTS_MAX_LENGTH = 8192
SAMPLE_RATE = 22050
#: ``attn_implementation`` values the Step-1 LM accepts.
ATTENTION_BACKENDS = ("sdpa", "flex", "flex_attention", "eager")
#: Keys of a ``clone_dict``: a name for the voice (optional), the clip's transcript, the clip.
CLONE_DICT_KEYS = ("speaker", "prompt_text", "wav_path")
_CLONE_DICT_SHAPE = "{'speaker': name, 'prompt_text': transcript of the clip, 'wav_path': path of the clip}"
_CLIP_WHAT = "an audio clip (wav, flac, mp3, ogg)"
#: Longest accepted sampling temperature (above it the sampled speech is noise).
MAX_TEMPERATURE = 10.0


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


@dataclass(frozen=True)
class _VoiceSource:
    """Where a segment's voice prompt comes from: a clip and its transcript (a clone's or a registered speaker's)."""

    wav_path: Path
    prompt_text: str
    speaker: str | None  # the registered speaker id, None for a clone
    description: str  # names the clip in messages


@dataclass
class _PlannedSegment:
    text: str
    plan: TTSRequestPlan
    source: _VoiceSource


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
        attn_implementation: ``sdpa`` (default), ``flex`` (``flex_attention``) or ``eager``.
        max_segment_chars: long text is split at sentence ends into segments of at most this size.
        max_speech_seconds: optional hard limit on the speech generated per segment (besides the
            text-length ceiling of :func:`max_audio_tokens_for` and the context, :attr:`max_length`).
        seed: seed of the decoders' noise (the LM's sampling follows ``torch``'s global RNG).
        allow_unknown_tags: pass a leading ``(tag)`` that is not one of
            :data:`~stepaudio.tts.prompts.KNOWN_INSTRUCTIONS` to the model unchecked, as upstream does
            (a warning is logged once per tag), instead of refusing the text.
        cache_cloned_voices: keep the voice-prompt features of cloned clips (``clone_dict``) in the disk
            cache, so cloning the same clip again is quick; a server that clones per request passes
            ``False`` so that the cache does not grow with every clip.  Registered speakers are always cached.
        backend: what samples the audio tokens (see :mod:`stepaudio.llm.backends`): ``None`` /
            ``"transformers"`` (the LM in this process, the default), ``"vllm"`` (an in-process vLLM
            engine), the ``http(s)://`` URL of a ``vllm serve`` server (the LM weights are then not loaded
            here; the folder still provides the text tokenizer, config.json and the decoders), or a ready
            :class:`~stepaudio.llm.backends.GenerationBackend`.
        quantization: ``"int8"`` / ``"int4"``: load the LM weight-only quantized (bitsandbytes, shard by
            shard; see :mod:`stepaudio.llm.quantization`); with ``backend="vllm"`` vLLM's own method name.

    Every argument is checked before anything is loaded, and every call checks its text, voice and
    settings before any voice prompt is computed or the LM runs (see :meth:`check_request`).

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
        allow_unknown_tags: bool = False,
        cache_cloned_voices: bool = True,
        backend: str | GenerationBackend | None = None,
        quantization: str | None = None,
    ) -> None:
        # Arguments first: a wrong one costs nothing (no model is loaded yet).
        if not callable(getattr(tokenizer, "wav2token", None)):
            detail = (
                "must be a StepAudioTokenizer (it turns voice prompts into audio tokens), got "
                f"{describe_value(tokenizer)}; pass StepAudioTokenizer(<Step-Audio-Tokenizer folder>)"
            )
            raise InvalidArgumentError.about("tokenizer", detail, tokenizer)
        self.max_segment_chars = check_int(
            max_segment_chars, "max_segment_chars", minimum=1, hint="long text is split into segments this long"
        )
        self.max_speech_seconds = (
            None
            if max_speech_seconds is None
            else check_float(
                max_speech_seconds,
                "max_speech_seconds",
                minimum=0.0,
                exclusive_minimum=True,
                hint="None means no limit",
            )
        )
        self.seed = check_int(seed, "seed", minimum=0)
        check_choice(attn_implementation, "attn_implementation", ATTENTION_BACKENDS)
        backend_spec = check_backend_spec(backend, "backend")
        check_quantization_for(backend_spec, quantization)
        check_bool(allow_unknown_tags, "allow_unknown_tags")
        self.allow_unknown_tags = allow_unknown_tags
        #: keep cloned clips' voice-prompt features in the disk cache (registered speakers are always cached)
        self.cache_cloned_voices = check_bool(cache_cloned_voices, "cache_cloned_voices")
        if speakers_dir is not None:
            speakers_dir = check_input_dir(
                speakers_dir, "speakers_dir", f"a speakers folder ({SPEAKERS_INFO_FILE} + one {{id}}_prompt.wav each)"
            )
        if cache_dir is not None:
            cache_dir = check_output_dir(cache_dir, "cache_dir")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.audio_tokenizer = tokenizer
        self._warned_tags: set[str] = set()
        # Then the folder layout and the speakers registry (cheap reads), then the models.
        self.model_path = resolve_model_folder(model_path, "Step-Audio-TTS-3B")
        for decoder in (SPEECH_DECODER,):
            if not (self.model_path / decoder).is_dir():
                raise CheckpointFileNotFoundError(
                    f"missing decoder folder {self.model_path / decoder}: Step-Audio-TTS-3B holds the Step-1 LM plus "
                    f"{SPEECH_DECODER}/ and {MUSIC_DECODER}/. {OFFICIAL_DOWNLOAD_HINT}",
                    folder=self.model_path,
                    file=self.model_path / decoder,
                )
        self.voice_prompts = VoicePromptCache(self._extract_voice_prompt, self._model_fingerprint(), cache_dir)
        self.speakers = SpeakerRegistry(speakers_dir, self.voice_prompts) if speakers_dir is not None else None
        self.text_tokenizer = load_text_tokenizer(self.model_path)
        #: samples the audio tokens (:mod:`stepaudio.llm.backends`)
        self.backend: GenerationBackend = make_backend(
            backend_spec,
            self.model_path,
            role="tts",
            name="backend",
            device=self.device,
            dtype=self.dtype,
            attn_implementation=attn_implementation,
            pad_token_id=self.text_tokenizer.pad_token_id,
            quantization=quantization,
            max_model_len=TTS_MAX_LENGTH,
        )
        #: the local Step-1 LM of the ``transformers`` backend (``None`` with any other backend)
        self.model = getattr(self.backend, "model", None)
        #: Longest prompt + generated speech, in tokens: upstream's 8192, or the folder's ``max_seq_len``
        #: (a server's ``max_model_len``) if smaller.
        self.max_length = min(TTS_MAX_LENGTH, int(self.backend.max_seq_len))
        self._decoders: dict[str, CosyVoiceDecoder] = {}
        self.decoder(SPEECH_DECODER)  # load the speech decoder now; the music one on first use
        logger.info(
            "Step-Audio-TTS-3B loaded from %s on %s (%s), generating with the %s backend %s",
            self.model_path,
            self.device,
            self.dtype,
            self.backend.name,
            getattr(self.backend, "base_url", ""),
        )

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

    # ------------------------------------------------------------------------------------------ checks
    def _context_words(self) -> str:
        if self.max_length < TTS_MAX_LENGTH:
            return f"Step-Audio-TTS-3B's {self.max_length}-token context (max_seq_len of config.json)"
        return f"Step-Audio-TTS-3B's {self.max_length}-token limit (prompt + speech, as upstream generates)"

    @staticmethod
    def _check_clone_dict(clone_dict: object) -> dict[str, Any]:
        """A clone_dict's keys and values: ``{'speaker': str | None, 'prompt_text': str, 'wav_path': Path}``."""
        if not isinstance(clone_dict, Mapping):
            detail = f"must be a dict {_CLONE_DICT_SHAPE}, got {describe_value(clone_dict)}"
            raise InvalidArgumentError.about("clone_dict", detail, clone_dict)
        unknown = [key for key in clone_dict if key not in CLONE_DICT_KEYS]
        if unknown:
            guesses = {
                key: difflib.get_close_matches(key, CLONE_DICT_KEYS, n=1, cutoff=0.5) if isinstance(key, str) else []
                for key in unknown
            }
            named = ", ".join(
                repr(key) + (f" (did you mean {guesses[key][0]!r}?)" if guesses[key] else "") for key in unknown
            )
            detail = (
                f"has the unknown key {named}; its keys are 'speaker' (optional name of the voice), "
                "'prompt_text' (transcript of the clip) and 'wav_path' (the clip)"
            )
            raise InvalidArgumentError.about("clone_dict", detail, clone_dict)
        missing = [key for key in ("prompt_text", "wav_path") if clone_dict.get(key) is None]
        if missing:
            detail = f"needs {' and '.join(map(repr, missing))}: pass {_CLONE_DICT_SHAPE}"
            raise InvalidArgumentError.about("clone_dict", detail, clone_dict)
        speaker = clone_dict.get("speaker")
        if speaker is not None:
            check_text(speaker, "clone_dict['speaker']")
        return {
            "speaker": speaker,
            "prompt_text": check_text(clone_dict["prompt_text"], "clone_dict['prompt_text']"),
            "wav_path": check_input_file(clone_dict["wav_path"], "clone_dict['wav_path']", _CLIP_WHAT),
        }

    def check_speaker(self, speaker: str) -> None:
        """Refuse, before any work, a speaker id that is not registered in the speakers folder.

        Raises:
            InvalidArgumentError: ``speaker`` is not a non-empty string.
            PromptError: no speakers folder is configured, or it does not list ``speaker``.
        """
        self._check_voice(speaker, None)

    def _check_voice(self, speaker: object, clone_dict: object) -> tuple[str | None, dict[str, Any] | None]:
        """``(registered speaker id, None)`` or ``(None, checked clone_dict)``."""
        if speaker is not None:
            check_text(speaker, "speaker")
        if clone_dict is not None:
            return None, self._check_clone_dict(clone_dict)
        if speaker is None:
            detail = (
                "is needed: pass a registered speaker id (speaker='Tingting') or a voice to clone "
                f"(clone_dict={_CLONE_DICT_SHAPE})"
            )
            raise InvalidArgumentError.about("speaker", detail, None)
        assert isinstance(speaker, str)
        if self.speakers is None:
            raise PromptError(
                f"speaker {speaker!r} was requested but no speakers folder is configured: pass a folder with "
                f"{SPEAKERS_INFO_FILE} and {speaker}_prompt.wav (speakers_dir in Python, --speakers-dir on the "
                f"command line), or {CLONE_HINT}"
            )
        if speaker not in self.speakers:
            raise PromptError(unknown_speaker_message(speaker, self.speakers.folder, self.speakers.speaker_ids))
        return speaker, None

    def _voice_source(self, plan: TTSRequestPlan, speaker: str | None, clone: dict[str, Any] | None) -> _VoiceSource:
        if clone is not None:
            return _VoiceSource(clone["wav_path"], clone["prompt_text"], None, f"voice prompt clip {clone['wav_path']}")
        assert self.speakers is not None and plan.prompt_speaker is not None
        voice = plan.prompt_speaker
        if voice not in self.speakers:  # a style voice (TingtingRAP, Tingting哼唱) that is not registered
            raise PromptError(
                f"speaker {speaker!r} has no {plan.instruction} voice for text tagged ({plan.instruction}): "
                f"{self.speakers.folder / SPEAKERS_INFO_FILE} lists {', '.join(self.speakers.speaker_ids)}; register "
                f"{voice} there with {voice}_prompt.wav, or {CLONE_HINT}"
            )
        wav = self.speakers.prompt_wav(voice)
        return _VoiceSource(wav, self.speakers.transcripts[voice], voice, f"the prompt clip {wav} of speaker {voice!r}")

    def _check_fits(self, segment: _PlannedSegment, durations: dict[Path, float]) -> None:
        """Refuse a voice prompt clip that cannot fit the context, from its duration (nothing is tokenized)."""
        source = segment.source
        if source.wav_path not in durations:
            durations[source.wav_path] = audio_duration(source.wav_path)
        seconds = durations[source.wav_path]
        audio_tokens = max_audio_tokens(seconds)
        if audio_tokens == 0:
            raise AudioInputError(
                f"{source.description} lasts {seconds:.2f} s, too short to hold a voice: use a clip of 3-10 s of speech"
            )
        text_tokens = len(
            build_tts_prompt_ids(self.text_tokenizer, segment.plan.system_prompt, source.prompt_text, [], segment.text)
        )
        if text_tokens + audio_tokens < self.max_length:
            return
        room = self.max_length - 1 - text_tokens  # leave at least one token of speech
        longest = math.floor(audio_seconds_for(room) * 10) / 10
        if longest < 1.0:
            raise PromptError(
                f"the TTS prompt for {segment.text[:30]!r} is {text_tokens} tokens before the voice prompt's audio "
                f"(system prompt, transcript of {source.description}, text); it leaves no room for the audio in "
                f"{self._context_words()}: use a shorter transcript or a smaller max_segment_chars"
            )
        raise PromptError(
            f"{source.description} lasts {seconds:.1f} s (~{audio_tokens} audio tokens); with the prompt text "
            f"({text_tokens} tokens) it does not fit {self._context_words()}: use a clip of at most {longest:.1f} s "
            "(3-10 s is typical)"
        )

    def _plan(self, text: object, speaker: object, clone_dict: object) -> list[_PlannedSegment]:
        """Check the text and the voice, split the text and check that every segment fits; nothing is computed."""
        check_tts_text(text, allow_unknown_tags=self.allow_unknown_tags, warned_tags=self._warned_tags)
        assert isinstance(text, str)
        registered, clone = self._check_voice(speaker, clone_dict)
        planned = []
        durations: dict[Path, float] = {}
        for piece in split_tts_text(text, self.max_segment_chars):
            plan = plan_tts_request(piece, registered)
            segment = _PlannedSegment(piece, plan, self._voice_source(plan, registered, clone))
            self._check_fits(segment, durations)
            planned.append(segment)
        return planned

    def check_request(
        self,
        text: str | None,
        speaker: str | None = None,
        clone_dict: Mapping[str, str] | None = None,
        speed_ratio: float = 1.0,
        volume_ratio: float = 1.0,
        temperature: float = 0.7,
    ) -> None:
        """Check a call's arguments as :meth:`__call__` and :meth:`stream` do first, without doing any work.

        ``text=None`` checks everything but the text (e.g. before a chat model writes it).  The checks:
        the settings' ranges; the text (valid Unicode, something to speak, a known leading tag unless
        ``allow_unknown_tags``); the voice (a registered speaker, or a ``clone_dict`` with a readable clip
        and its transcript); and that each segment's prompt, with the clip's audio estimated from its
        duration, fits :attr:`max_length`.

        Raises:
            InvalidArgumentError: an argument out of range or of the wrong type.
            InputFileError: the clone clip is missing, a folder or unreadable.
            PromptError: nothing to speak, an unknown tag or speaker, or a clip too long for the context.
        """
        self._check_settings(speed_ratio, volume_ratio, temperature)
        if text is None:
            self._check_voice(speaker, clone_dict)
        else:
            self._plan(text, speaker, clone_dict)

    @staticmethod
    def _check_settings(speed_ratio: object, volume_ratio: object, temperature: object) -> None:
        check_speed_ratio(speed_ratio)
        check_volume_ratio(volume_ratio)
        check_float(
            temperature,
            "temperature",
            minimum=0.0,
            exclusive_minimum=True,
            maximum=MAX_TEMPERATURE,
            hint="0.7 is the default",
        )

    # ------------------------------------------------------------------------------------------ voices
    def voice_for(self, plan: TTSRequestPlan, clone_dict: Mapping[str, str] | None) -> VoicePrompt:
        """The voice prompt a request uses: the clone's clip, or the registered (style) speaker's."""
        if clone_dict is not None:
            clone = self._check_clone_dict(clone_dict)
            return self._cloned_voice_prompt(clone["wav_path"], clone["prompt_text"], plan.decoder)
        if self.speakers is None:
            raise PromptError(
                f"speaker {plan.prompt_speaker!r} was requested but no speakers folder is configured: pass a folder "
                f"with {SPEAKERS_INFO_FILE} (speakers_dir in Python, --speakers-dir on the command line), or "
                f"{CLONE_HINT}"
            )
        return self.speakers.get(plan.prompt_speaker, plan.decoder)

    def _voice(self, segment: _PlannedSegment) -> VoicePrompt:
        source = segment.source
        if source.speaker is not None and self.speakers is not None:
            return self.speakers.get(source.speaker, segment.plan.decoder)
        return self._cloned_voice_prompt(source.wav_path, source.prompt_text, segment.plan.decoder)

    def _cloned_voice_prompt(self, wav_path: Path, prompt_text: str, decoder: str) -> VoicePrompt:
        """A clone's voice prompt, kept in the disk cache only with ``cache_cloned_voices``."""
        use_disk_cache = None if self.cache_cloned_voices else False
        return self.voice_prompts.voice_prompt(wav_path, prompt_text, decoder, use_disk_cache=use_disk_cache)

    def _build_segments(self, planned: list[_PlannedSegment]) -> list[_Segment]:
        """Compute the voice prompts (shared by the segments that use the same one) and the prompt ids."""
        segments = []
        voices: dict[tuple[Path, str], VoicePrompt] = {}
        for item in planned:
            voice_key = (item.source.wav_path, item.plan.decoder)
            if voice_key not in voices:
                voices[voice_key] = self._voice(item)
            voice = voices[voice_key]
            prompt_ids = build_tts_prompt_ids(
                self.text_tokenizer, item.plan.system_prompt, voice.prompt_text, voice.prompt_audio_ids, item.text
            )
            if len(prompt_ids) >= self.max_length:  # not expected: _check_fits bounds the audio from above
                raise PromptError(
                    f"the TTS prompt for {item.text[:30]!r}... is {len(prompt_ids)} tokens; it does not fit "
                    f"{self._context_words()}. Use a shorter voice prompt or a smaller max_segment_chars"
                )
            segments.append(_Segment(item.text, item.plan, voice, prompt_ids))
        return segments

    def _segments(self, text: str, speaker: str | None, clone_dict: Mapping[str, str] | None) -> list[_Segment]:
        return self._build_segments(self._plan(text, speaker, clone_dict))

    def max_new_tokens(self, prompt_length: int, text: str) -> int:
        """Audio-token budget of one segment: context room, text-length ceiling and ``max_speech_seconds``."""
        limit = min(self.max_length - prompt_length, max_audio_tokens_for(text))
        if self.max_speech_seconds is not None:
            limit = min(limit, int(self.max_speech_seconds * AUDIO_TOKENS_PER_SECOND))
        return max(1, limit)

    def sampling_settings(
        self, prompt_length: int, text: str, temperature: float, seed: int | None = None
    ) -> SamplingSettings:
        """How the audio tokens of ``text`` are sampled (upstream: T, top-k 50, anti-loop rule, audio ids only)."""
        return SamplingSettings(
            max_new_tokens=self.max_new_tokens(prompt_length, text),
            do_sample=True,
            temperature=temperature,
            top_k=50,
            top_p=1.0,
            stop_token_ids=(EOT_ID,),
            audio_tokens_only=True,
            repetition_window=TTS_REPETITION_WINDOW,
            repetition_max_ratio=TTS_REPETITION_MAX_RATIO,
            seed=seed,
        )

    def generate_audio_codes(
        self,
        prompt_ids: list[int],
        text: str,
        temperature: float = 0.7,
        progress: bool = False,
        seed: int | None = None,
    ) -> list[int]:
        """Sample audio codes (0..5119) for the TTS prompt of ``text`` until ``<|EOT|>`` (or the length cap).

        ``seed`` seeds this request's sampler (the backend's; ``None``: torch's global random state for
        the local backend, the server's for a remote one).
        """
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        settings = self.sampling_settings(len(prompt_ids), text, temperature, seed)
        if progress:
            from tqdm.auto import tqdm

            generated = []
            ids = self.backend.stream_ids(prompt_ids, settings)
            with tqdm(total=settings.max_new_tokens, unit="tok", desc="speech tokens", leave=False) as bar:
                try:
                    for token in ids:
                        generated.append(token)
                        bar.update(1)
                finally:
                    ids.close()
        else:
            generated = self.backend.generate_ids(prompt_ids, settings)
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

        Everything is checked first (:meth:`check_request`), before any voice prompt is computed.
        ``progress`` shows a progress bar over the generated speech tokens of each segment, and one
        over the segments when the text is split.

        Returns:
            ``(waveform [1, N] float32, 22050)``.
        """
        self._check_settings(speed_ratio, volume_ratio, temperature)
        check_bool(progress, "progress")
        segments = self._build_segments(self._plan(text, speaker, clone_dict))
        if progress and len(segments) > 1:
            from tqdm.auto import tqdm

            segments = tqdm(segments, desc="segments", unit="seg", file=sys.stderr, leave=False)
        pieces = []
        for segment in segments:
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

        The arguments are checked when ``stream`` is called (:meth:`check_request`), not at the first
        chunk.  The LM runs in a worker thread; its tokens go into the decoder's streaming form as they
        appear.  ``speed_ratio`` is applied per chunk (the chunks are long enough for the time stretch,
        but the result differs slightly from the offline call at chunk borders).
        """
        self._check_settings(speed_ratio, volume_ratio, temperature)
        planned = self._plan(text, speaker, clone_dict)
        return self._stream_planned(planned, speed_ratio, volume_ratio, temperature)

    def _stream_planned(
        self, planned: list[_PlannedSegment], speed_ratio: float, volume_ratio: float, temperature: float
    ) -> Iterator[torch.Tensor]:
        for segment in self._build_segments(planned):
            yield from self._stream_segment(segment, speed_ratio, volume_ratio, temperature)

    def _stream_segment(
        self, segment: _Segment, speed_ratio: float, volume_ratio: float, temperature: float
    ) -> Iterator[torch.Tensor]:
        decoder = self.decoder(segment.plan.decoder)
        settings = self.sampling_settings(len(segment.prompt_ids), segment.text, temperature)
        ids = self.backend.stream_ids(segment.prompt_ids, settings)
        try:
            with decoder.stream(**self._decoder_inputs(segment)) as audio_stream:
                for token in ids:
                    if token == EOT_ID:
                        break
                    chunk = audio_stream.feed([token - AUDIO_TOKEN_OFFSET])
                    if chunk.numel():
                        yield self._postprocess(chunk, speed_ratio, volume_ratio)
                tail = audio_stream.close()
                if tail.numel():
                    yield self._postprocess(tail, speed_ratio, volume_ratio)
        finally:
            ids.close()  # stops the LM within a token when the consumer left early

    @staticmethod
    def _postprocess(waveform: torch.Tensor, speed_ratio: float, volume_ratio: float) -> torch.Tensor:
        waveform = change_speed(waveform, SAMPLE_RATE, speed_ratio)
        return change_volume(waveform, volume_ratio)
