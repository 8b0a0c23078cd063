"""``StepAudioEditX``: zero-shot cloning and iterative editing (emotion, style, speed, paralinguistic sounds,
denoising, silence removal) with Step-Audio-EditX.

Per request: the input clip is read, mixed to mono and limited to a 0.6 peak (as the original does
before anything else); its audio tokens come from the Step-Audio-Tokenizer (silence trimmed, energy
normalised); the prompt (:mod:`.prompts`) goes to the Step-1 3B LM, which answers with audio codes;
the 24 kHz decoder (:mod:`.decoder`) turns them into speech in the voice of the clip.  An edit with
``iterations > 1`` edits its own output again, as the original ``--n-edit-iter`` does.  Audio longer
than ``max_segment_seconds`` and long clone text are processed piece by piece (:mod:`.segment`).

Speed: the LM generates through a :class:`~stepaudio.llm.backends.GenerationBackend` (``backend=``:
transformers, static KV cache / CUDA graphs, torch.compile, vLLM in process or a ``vllm serve`` URL;
``quantization=`` int8 / int4), and :meth:`StepAudioEditX.clone_stream` / :meth:`StepAudioEditX.edit_stream`
decode while the LM generates, so the first audio comes after 30 codes instead of after the whole clip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import as_waveform, check_finite, load_audio, to_mono
from ..device import resolve_device, resolve_dtype
from ..errors import (
    OFFICIAL_DOWNLOAD_HINT,
    AudioInputError,
    CheckpointFileNotFoundError,
    InvalidArgumentError,
    PromptError,
)
from ..llm.backends import check_backend_spec, check_quantization_for, make_backend
from ..llm.backends.base import TTS_REPETITION_MAX_RATIO, TTS_REPETITION_WINDOW, GenerationBackend, SamplingSettings
from ..llm.backends.transformers import TransformersBackend
from ..llm.chat import resolve_model_folder
from ..llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, load_text_tokenizer
from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND
from ..validation import check_float, check_input_dir, check_int, check_text, describe_value
from .decoder import (
    DECODER_FOLDER,
    SAMPLE_RATE,
    EditXSpeechDecoder,
    StreamingEditXSpeechDecoder,
    load_editx_decoder,
)
from .edit_config import EditRequest, check_edit_request, check_language, check_n_edit_iter
from .prompts import build_clone_prompt_ids, build_edit_prompt_ids, clone_speaker_id, with_language
from .segment import (
    DEFAULT_MAX_CLONE_CHARS,
    DEFAULT_MAX_SEGMENT_SECONDS,
    StreamedJoin,
    join_audio,
    segment_audio,
    share_text,
    split_clone_text,
    split_tagged_like,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EDITX_MAX_LENGTH",
    "EDITX_SAMPLING",
    "EditStep",
    "PreparedAudio",
    "StepAudioEditX",
    "iteration_requests",
]

#: The original's generation limit: prompt + generated tokens (capped further by the LM's ``max_seq_len``).
EDITX_MAX_LENGTH = 8192
#: Peak the original scales louder input down to before tokenizing and extracting decoder features.
PROMPT_PEAK = 0.6
#: The original's sampling: temperature 0.7, transformers' defaults top-k 50 / top-p 1.0, stop at
#: ``<|EOT|>``, and the anti-loop rule over the last 10 ids.  Only audio ids and ``<|EOT|>`` may be
#: sampled (the original samples from the whole vocabulary; a trained model puts no mass elsewhere).
EDITX_SAMPLING = SamplingSettings(
    max_new_tokens=EDITX_MAX_LENGTH,
    do_sample=True,
    temperature=0.7,
    top_k=50,
    top_p=1.0,
    stop_token_ids=(EOT_ID,),
    audio_tokens_only=True,
    repetition_window=TTS_REPETITION_WINDOW,
    repetition_max_ratio=TTS_REPETITION_MAX_RATIO,
)
_ATTENTION_BACKENDS = ("sdpa", "flex", "flex_attention", "eager")
#: Longest accepted ``max_segment_seconds``: an edit reads and writes that much audio inside the 8192-token context.
MAX_SEGMENT_SECONDS = 60.0
#: The original's ``--quantization`` value for its pre-quantized AWQ checkpoint (llmcompressor W4A16, compressed).
ORIGINAL_AWQ = "awq-4bit"
#: Folder of that checkpoint beside ``Step-Audio-EditX`` (where the original's app.py looks for it).
AWQ_FOLDER = "Step-Audio-EditX-AWQ-4bit"
#: The :func:`~stepaudio.llm.backends.make_backend` settings ``backend_options`` may carry.
BACKEND_OPTIONS = ("tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization", "api_key", "device_map")


#: Codes per group of the interleaved layout (2 vq02 + 3 vq06), the unit the decoder's stream decodes.
CODES_PER_GROUP = 5


def _audio_code(token: int) -> int:
    """An LM id as an audio code ``0..5119`` (``id - 65536``); any other id is refused."""
    code = token - AUDIO_TOKEN_OFFSET
    if not 0 <= code < 5120:
        raise PromptError(f"the EditX LM produced a non-audio id ({token}); its backend must apply the TTS rules")
    return code


def _engine_length(spec: str | GenerationBackend, lm_folder: Path) -> int | None:
    """The KV-cache length a local or vLLM backend is built for: 8192, or the LM's ``max_seq_len`` if smaller."""
    if not isinstance(spec, str) or spec not in ("transformers", "static", "compiled", "vllm"):
        return None
    from ..llm.configuration import Step1Config

    return min(EDITX_MAX_LENGTH, int(Step1Config.from_pretrained(str(lm_folder)).max_seq_len))


def _check_backend_options(options: object) -> dict[str, Any]:
    """``backend_options`` as a dict whose keys are among :data:`BACKEND_OPTIONS` (values checked by the backend)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        detail = f"must be a mapping of backend settings or None, got {describe_value(options)}"
        raise InvalidArgumentError.about("backend_options", detail, options)
    unknown = [key for key in options if key not in BACKEND_OPTIONS]
    if unknown:
        detail = f"may only hold {', '.join(BACKEND_OPTIONS)}, got {unknown[0]!r}"
        raise InvalidArgumentError.about("backend_options", detail, unknown[0])
    return dict(options)


def resolve_lm_source(
    spec: str | GenerationBackend,
    quantization: object,
    model_dir: str | Path,
    model_path: Path,
    lm_path: str | Path | None,
) -> tuple[Path, str | None]:
    """The LM folder the backend loads and the ``quantization`` it gets, checked before anything is loaded.

    ``"int8"`` / ``"int4"`` (the original's online bitsandbytes methods) are ours unchanged;
    ``"awq-4bit"`` (the original's AWQ checkpoint) needs ``backend="vllm"``: vLLM loads the
    ``Step-Audio-EditX-AWQ-4bit`` folder (``lm_path``, or that folder beside ``Step-Audio-EditX``) and reads
    its method from its ``config.json``, so it is given no method name.

    Raises:
        InvalidArgumentError: a quantization the backend cannot apply, or a missing AWQ folder.
    """
    if lm_path is not None:
        lm_path = check_input_dir(lm_path, "lm_path", "a folder of Step-1 weights (config.json + safetensors)")
    if quantization != ORIGINAL_AWQ:
        check_quantization_for(spec, quantization)
        return (Path(lm_path) if lm_path is not None else model_path), quantization
    if spec != "vllm":
        where = spec if isinstance(spec, str) else type(spec).__name__
        detail = (
            f"'awq-4bit' (the original's pre-quantized {AWQ_FOLDER} checkpoint) loads with backend='vllm' only, "
            f"not {where!r}; use 'int4' or 'int8' (bitsandbytes, quantized while loading) with this backend"
        )
        raise InvalidArgumentError.about("quantization", detail, quantization)
    if lm_path is not None:
        return Path(lm_path), None
    candidates = [Path(model_dir).expanduser() / AWQ_FOLDER, model_path.parent / AWQ_FOLDER]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate, None
    detail = (
        f"'awq-4bit' needs the {AWQ_FOLDER} checkpoint, but {candidates[-1]} holds no config.json; download "
        f"stepfun-ai/{AWQ_FOLDER} there or pass lm_path=<its folder>"
    )
    raise InvalidArgumentError.about("quantization", detail, quantization)


@dataclass
class PreparedAudio:
    """A clip as the model sees it.

    Attributes:
        waveform: mono float32 ``[T]`` at ``sample_rate``, limited to a 0.6 peak (not trimmed).
        sample_rate: its rate in Hz.
        audio_ids: its interleaved audio ids (``65536 + N``), from the trimmed, energy-normalised clip.
        decoder_prompt: the decoder's features of the clip (computed on first use).
    """

    waveform: np.ndarray
    sample_rate: int
    audio_ids: list[int]
    decoder_prompt: Any = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


@dataclass(frozen=True)
class EditStep:
    """One edit iteration's result: ``waveform [1, N]`` at ``sample_rate``, and the transcript it now speaks."""

    iteration: int
    waveform: torch.Tensor
    sample_rate: int
    text: str


def iteration_requests(request: EditRequest, iterations: int) -> list[EditRequest]:
    """The request of each iteration: the first as given; each later one edits the previous output, whose
    transcript is the new text for a paralinguistic edit and the unchanged transcript otherwise (the original's rule).
    """
    check_n_edit_iter(iterations)
    requests = [request]
    for _ in range(iterations - 1):
        spoken = requests[-1].text if requests[-1].edit_type == "paralinguistic" else requests[-1].audio_text
        requests.append(replace(requests[-1], audio_text=spoken or ""))
    return requests


def _read_audio(audio: object, sample_rate: int | None, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(samples as read [C, T], mono [T], rate)`` of a path or array (array audio needs ``sample_rate``)."""
    if isinstance(audio, (str, Path)):
        if sample_rate is not None:
            raise InvalidArgumentError.about(
                "sample_rate", f"must be omitted when {name} is a file (the file carries its rate)", sample_rate
            )
        samples, rate = load_audio(audio)
        what = f"{name} {audio}"
    else:
        if sample_rate is None:
            raise InvalidArgumentError.about(
                "sample_rate", f"is required when {name} is an array: pass its rate in Hz", None
            )
        rate = check_int(sample_rate, "sample_rate", minimum=1)
        samples = as_waveform(audio)
        what = f"{name} (array of shape {tuple(np.shape(audio))})"
    if samples.shape[-1] == 0:
        raise AudioInputError(f"{what} is empty; pass a clip of speech")
    check_finite(samples, what)
    return samples, to_mono(samples).astype(np.float32, copy=False), int(rate)


class StepAudioEditX:
    """Step-Audio-EditX: zero-shot TTS (:meth:`clone`) and iterative audio editing (:meth:`edit`), offline or
    streamed (:meth:`clone_stream`, :meth:`edit_stream`).

    Args:
        model_dir: the ``Step-Audio-EditX`` folder (or a folder that contains it under that name).
        tokenizer: a :class:`~stepaudio.tokenizer.StepAudioTokenizer` (EditX uses the same one as
            Step-Audio: its ``wav2token`` returns the same interleaved ids, vq02 and vq06 codes).
        device: where the LM (with a local backend) and the decoder run (default CUDA if available, else CPU).
        dtype: LM dtype (default bf16 on GPU, fp32 on CPU).
        attn_implementation: ``sdpa`` (default), ``flex`` or ``eager``.
        backend: what samples the audio codes (see :mod:`stepaudio.llm.backends`; the TTS rules apply:
            audio ids only, the anti-loop rule): ``None`` / ``"transformers"`` (the LM in this process, the
            reference), ``"static"`` / ``"compiled"`` (static KV cache, CUDA graphs on a GPU, ``torch.compile``),
            ``"vllm"`` (an in-process vLLM engine), the ``http(s)://`` URL of a ``vllm serve`` server of the
            EditX LM (the weights are then not loaded here), or a ready
            :class:`~stepaudio.llm.backends.GenerationBackend`.
        quantization: ``"int8"`` / ``"int4"``: the LM weight-only quantized with bitsandbytes (local backends;
            the original's ``--quantization int8 / int4``); with ``backend="vllm"`` vLLM's own method name, or
            ``"awq-4bit"`` (the original's name) for the ``Step-Audio-EditX-AWQ-4bit`` checkpoint, whose method
            vLLM reads from its ``config.json``.
        decoder: a speech decoder (:class:`~stepaudio.editx.decoder.EditXSpeechDecoder`); default:
            ``model_dir/CosyVoice-300M-25Hz``, loaded on first use.
        max_segment_seconds: longer audio is edited in pieces of at most this length (cut at pauses).
        max_clone_chars: longer clone text is spoken in pieces of at most this many characters.
        temperature: sampling temperature (the original's 0.7).
        seed: seed of each request's sampling (``None``: torch's global random state).
        max_speech_seconds: optional limit on the audio generated per piece (besides the context and
            the length ceilings: clone 10 s + 1 s per character, edit twice the input + 5 s).
        lm_path: folder of the LM weights the backend loads, when not ``model_dir`` (e.g. a quantized copy);
            the text tokenizer and the decoder still come from ``model_dir``.
        backend_options: more settings of the backend, as :func:`~stepaudio.llm.backends.make_backend` takes
            them: ``tensor_parallel_size``, ``pipeline_parallel_size``, ``gpu_memory_utilization`` (vLLM),
            ``api_key`` (a server URL), ``device_map`` (``transformers``).

    Every argument is checked before anything is loaded.
    """

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer: Any,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        backend: str | GenerationBackend | None = None,
        quantization: str | None = None,
        decoder: EditXSpeechDecoder | None = None,
        max_segment_seconds: float = DEFAULT_MAX_SEGMENT_SECONDS,
        max_clone_chars: int = DEFAULT_MAX_CLONE_CHARS,
        temperature: float = 0.7,
        seed: int | None = None,
        max_speech_seconds: float | None = None,
        lm_path: str | Path | None = None,
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(getattr(tokenizer, "wav2token", None)):
            detail = (
                f"must be a StepAudioTokenizer (it turns audio into audio tokens), got {describe_value(tokenizer)}; "
                "pass StepAudioTokenizer(<Step-Audio-Tokenizer folder>)"
            )
            raise InvalidArgumentError.about("tokenizer", detail, tokenizer)
        backend_spec = check_backend_spec(backend, "backend")
        options = _check_backend_options(backend_options)
        if decoder is not None and not isinstance(decoder, EditXSpeechDecoder):
            detail = f"must have sample_rate, prompt_features() and decode(), got {describe_value(decoder)}"
            raise InvalidArgumentError.about("decoder", detail, decoder)
        self.max_segment_seconds = check_float(
            max_segment_seconds, "max_segment_seconds", minimum=1.0, maximum=MAX_SEGMENT_SECONDS, hint="30 is advised"
        )
        self.max_clone_chars = check_int(max_clone_chars, "max_clone_chars", minimum=1)
        self.temperature = check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True, maximum=10.0)
        self.seed = None if seed is None else check_int(seed, "seed", minimum=0)
        self.max_speech_seconds = (
            None
            if max_speech_seconds is None
            else check_float(max_speech_seconds, "max_speech_seconds", minimum=0.0, exclusive_minimum=True)
        )
        if attn_implementation not in _ATTENTION_BACKENDS:
            raise InvalidArgumentError.about(
                "attn_implementation",
                f"must be one of {', '.join(_ATTENTION_BACKENDS)}, got {describe_value(attn_implementation)}",
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.audio_tokenizer = tokenizer
        self.model_path = resolve_model_folder(model_dir, "Step-Audio-EditX")
        lm_folder, quantization = resolve_lm_source(backend_spec, quantization, model_dir, self.model_path, lm_path)
        self.text_tokenizer = load_text_tokenizer(self.model_path)
        #: Where the audio codes are generated.
        self.backend: GenerationBackend = make_backend(
            backend_spec,
            lm_folder,
            role="tts",
            name="backend",
            device=self.device,
            dtype=self.dtype,
            attn_implementation=attn_implementation,
            pad_token_id=self.text_tokenizer.pad_token_id,
            quantization=quantization,
            max_model_len=_engine_length(backend_spec, lm_folder),
            **options,
        )
        if isinstance(self.backend, TransformersBackend) and backend_spec == "transformers":
            self.backend.thread_name = "stepaudio-editx-generate"
        #: The Step-1 LM of a local backend (``None`` with vLLM, a server or a ready backend without ``model``).
        self.model = getattr(self.backend, "model", None)
        #: Longest prompt + generated audio, in tokens: the original's 8192, or the LM's ``max_seq_len`` if smaller.
        self.max_length = min(EDITX_MAX_LENGTH, int(self.backend.max_seq_len))
        self._decoder = decoder
        self._decoder_lock = threading.Lock()
        logger.info(
            "Step-Audio-EditX loaded from %s (LM %s, %s backend%s)",
            self.model_path,
            lm_folder,
            self.backend.name,
            f", {quantization}" if quantization else "",
        )

    # ------------------------------------------------------------------------------------------ parts
    @property
    def decoder(self) -> EditXSpeechDecoder:
        """The 24 kHz speech decoder (loaded on first use)."""
        with self._decoder_lock:
            if self._decoder is None:
                folder = self.model_path / DECODER_FOLDER
                if not folder.is_dir():
                    raise CheckpointFileNotFoundError(
                        f"missing decoder folder {folder}: Step-Audio-EditX holds the Step-1 LM plus "
                        f"{DECODER_FOLDER}/. {OFFICIAL_DOWNLOAD_HINT}",
                        folder=self.model_path,
                        file=folder,
                    )
                self._decoder = load_editx_decoder(folder, self.device, self.seed)
            return self._decoder

    def prepare_audio(self, audio: object, sample_rate: int | None = None, name: str = "audio") -> PreparedAudio:
        """Read a clip (path, or array with ``sample_rate``) and tokenize it as the original does."""
        _, mono, rate = _read_audio(audio, sample_rate, name)
        return self._prepare_mono(mono, rate)

    def _prepare_mono(self, mono: np.ndarray, rate: int) -> PreparedAudio:
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak > PROMPT_PEAK:
            mono = (mono / peak * PROMPT_PEAK).astype(np.float32)
        audio_ids, _, _ = self.audio_tokenizer.wav2token(mono, rate)
        return PreparedAudio(mono, rate, list(audio_ids))

    def _decoder_prompt(self, audio: PreparedAudio) -> Any:
        if audio.decoder_prompt is None:
            audio.decoder_prompt = self.decoder.prompt_features(audio.waveform, audio.sample_rate)
        return audio.decoder_prompt

    @staticmethod
    def _prompt_codes(audio: PreparedAudio) -> list[int]:
        return [token - AUDIO_TOKEN_OFFSET for token in audio.audio_ids]

    def _decode(self, codes: Sequence[int], audio: PreparedAudio) -> torch.Tensor:
        """Codes -> speech in the voice of ``audio`` (the one offline call of the decoder)."""
        return self.decoder.decode(list(codes), self._prompt_codes(audio), self._decoder_prompt(audio))

    def _streaming_decoder(self) -> StreamingEditXSpeechDecoder:
        """The decoder, checked to have ``stream()`` (the official one has)."""
        decoder = self.decoder
        if not isinstance(decoder, StreamingEditXSpeechDecoder):
            detail = (
                f"{type(decoder).__name__} has no stream(prompt_codes, prompt), which clone_stream/edit_stream need; "
                "use clone()/edit(), or pass a decoder with stream()"
            )
            raise InvalidArgumentError.about("decoder", detail, decoder)
        return decoder

    @property
    def sample_rate(self) -> int:
        """Rate of the audio :meth:`clone` and :meth:`edit` return."""
        return int(self._decoder.sample_rate) if self._decoder is not None else SAMPLE_RATE

    # ------------------------------------------------------------------------------------------ generation
    def sampling_settings(self, max_new_tokens: int) -> SamplingSettings:
        """The original's sampling (:data:`EDITX_SAMPLING`) with this instance's temperature, seed and length."""
        return replace(EDITX_SAMPLING, max_new_tokens=max_new_tokens, temperature=self.temperature, seed=self.seed)

    def _room(self, prompt_ids: Sequence[int], ceiling: int, what: str) -> int:
        room = self.max_length - len(prompt_ids)
        if room < 1:
            raise PromptError(
                f"the {what} prompt is {len(prompt_ids)} tokens; it leaves no room for audio in the "
                f"{self.max_length}-token context: use shorter audio (max_segment_seconds) or a shorter transcript"
            )
        if self.max_speech_seconds is not None:
            ceiling = min(ceiling, int(self.max_speech_seconds * AUDIO_TOKENS_PER_SECOND))
        return max(1, min(room, ceiling))

    def generate_codes(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Sample audio codes (``0..5119``) for ``prompt_ids`` until ``<|EOT|>`` or ``max_new_tokens``."""
        generated = self.backend.generate_ids(list(prompt_ids), self.sampling_settings(max_new_tokens))
        if EOT_ID in generated:
            generated = generated[: generated.index(EOT_ID)]
        return [_audio_code(token) for token in generated]

    def stream_codes(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Iterator[int]:
        """The codes of :meth:`generate_codes` one by one, while the LM generates them (the same codes for the
        same seed).  Closing the iterator stops the LM within a token."""
        ids = self.backend.stream_ids(list(prompt_ids), self.sampling_settings(max_new_tokens))
        try:
            for token in ids:
                if token == EOT_ID:
                    return
                yield _audio_code(token)
        finally:
            close = getattr(ids, "close", None)
            if close is not None:
                close()

    def _stream_speech(
        self, prompt_ids: Sequence[int], max_new_tokens: int, audio: PreparedAudio
    ) -> Iterator[torch.Tensor]:
        """Generate codes and decode them as they come, in the voice of ``audio``: waveform chunks ``[1, n]``.

        Codes go to the decoder's stream group by group (5 codes = 3 decoder steps, the unit it decodes);
        the first audio comes once the decoder's first chunk (and its look-ahead) is complete.  The chunks
        together equal the decoder's offline ``attention="chunked"`` decode of the same codes.
        """
        decoder = self._streaming_decoder()
        codes = self.stream_codes(prompt_ids, max_new_tokens)
        try:
            with decoder.stream(self._prompt_codes(audio), self._decoder_prompt(audio)) as session:
                group: list[int] = []
                for code in codes:
                    group.append(code)
                    if len(group) < CODES_PER_GROUP:
                        continue
                    chunk = session.feed(group)
                    group = []
                    if chunk.shape[-1]:
                        yield chunk
                if group:
                    chunk = session.feed(group)
                    if chunk.shape[-1]:
                        yield chunk
                tail = session.close()
                if tail.shape[-1]:
                    yield tail
        finally:
            codes.close()

    # ------------------------------------------------------------------------------------------ clone
    def _clone_plan(
        self, text: object, prompt_wav: object, prompt_text: object, language: object, sample_rate: int | None
    ) -> tuple[list[str], PreparedAudio, str]:
        text = check_text(text, "text")
        prompt_text = check_text(prompt_text, "prompt_text")
        language = check_language(language)
        samples, mono, rate = _read_audio(prompt_wav, sample_rate, "prompt_wav")
        speaker = clone_speaker_id(prompt_text, samples)
        prompt = self._prepare_mono(mono, rate)
        if not prompt.audio_ids:
            raise AudioInputError("prompt_wav holds no speech after silence trimming; pass 3-10 s of the voice")
        pieces = split_clone_text(with_language(text.strip(), language), self.max_clone_chars)
        return pieces, prompt, speaker

    def _clone_request(
        self, piece: str, prompt: PreparedAudio, prompt_text: str, speaker: str
    ) -> tuple[list[int], int]:
        """Prompt ids and most new tokens of one clone text piece."""
        ids = build_clone_prompt_ids(self.text_tokenizer, speaker, prompt_text, prompt.audio_ids, piece)
        ceiling = int(AUDIO_TOKENS_PER_SECOND * (10.0 + len(piece)))  # 10 s + 1 s per character
        return ids, self._room(ids, ceiling, "clone")

    def _clone_piece_codes(self, piece: str, prompt: PreparedAudio, prompt_text: str, speaker: str) -> list[int]:
        return self.generate_codes(*self._clone_request(piece, prompt, prompt_text, speaker))

    def clone_codes(
        self,
        text: str,
        prompt_wav: object,
        prompt_text: str,
        language: str | None = None,
        sample_rate: int | None = None,
    ) -> list[list[int]]:
        """The audio codes :meth:`clone` decodes: one list per text piece (see ``max_clone_chars``)."""
        pieces, prompt, speaker = self._clone_plan(text, prompt_wav, prompt_text, language, sample_rate)
        return [self._clone_piece_codes(piece, prompt, prompt_text, speaker) for piece in pieces]

    def clone(
        self,
        text: str,
        prompt_wav: object,
        prompt_text: str,
        language: str | None = None,
        sample_rate: int | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Speak ``text`` in the voice of ``prompt_wav`` (zero-shot).

        Args:
            text: what to say; may start with a language prefix such as ``[Sichuanese]``, and may hold
                pinyin for polyphones.
            prompt_wav: the voice's clip: a path, or an array with ``sample_rate``.
            prompt_text: what is said in the clip.
            language: ``Sichuanese``, ``Cantonese``, ``Japanese`` or ``Korean``: adds that prefix.
            sample_rate: rate of an array ``prompt_wav``.

        Returns:
            ``(waveform [1, N] float32, 24000)``.
        """
        pieces, prompt, speaker = self._clone_plan(text, prompt_wav, prompt_text, language, sample_rate)
        outputs = [
            self._decode(self._clone_piece_codes(piece, prompt, prompt_text, speaker), prompt) for piece in pieces
        ]
        return join_audio(outputs, self.sample_rate), self.sample_rate

    def clone_stream(
        self,
        text: str,
        prompt_wav: object,
        prompt_text: str,
        language: str | None = None,
        sample_rate: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """:meth:`clone`, streamed: yield 24 kHz waveform chunks ``[1, n]`` float32 while the LM generates.

        Everything is checked and the prompt clip tokenized when this is called; the LM starts at the first
        ``next()``.  Each text piece (see ``max_clone_chars``) is generated and decoded in turn, joined to the
        previous one with the same 10 ms cross-fade as :meth:`clone`.  The decoder runs as a stream (chunks
        of 15, 24, 48, 48... decoder steps, the original's), so the first audio comes after the first 30
        codes (1.2 s of speech) instead of after the whole clip; the chunks together equal the offline
        decode with ``attention="chunked"`` of the same codes (:meth:`clone` decodes with full attention,
        as the original's offline path does).  Closing the iterator early stops the LM within a token.
        """
        pieces, prompt, speaker = self._clone_plan(text, prompt_wav, prompt_text, language, sample_rate)
        self._streaming_decoder()
        requests = [(*self._clone_request(piece, prompt, prompt_text, speaker), prompt) for piece in pieces]
        return self._stream_pieces(iter(requests))

    def _stream_pieces(self, requests: Iterator[tuple[list[int], int, PreparedAudio]]) -> Iterator[torch.Tensor]:
        """Stream each ``(prompt ids, most new tokens, voice)`` request in turn, joined as :func:`join_audio` joins."""
        joiner = StreamedJoin(self.sample_rate)
        for prompt_ids, room, audio in requests:
            joiner.start_piece()
            for chunk in self._stream_speech(prompt_ids, room, audio):
                out = joiner.feed(chunk)
                if out.shape[-1]:
                    yield out
            out = joiner.end_piece()
            if out.shape[-1]:
                yield out
        out = joiner.close()
        if out.shape[-1]:
            yield out

    # ------------------------------------------------------------------------------------------ edit
    def _edit_plan(
        self, audio: object, audio_text: object, edit_type: object, edit_info: object, text: object, sample_rate
    ) -> tuple[list[PreparedAudio], list[EditRequest]]:
        """Check the request, read the audio and cut it (with its transcripts) into segments; returns both lists."""
        request = check_edit_request(edit_type, edit_info, audio_text, text)
        _, mono, rate = _read_audio(audio, sample_rate, "audio")
        spans = segment_audio(mono, rate, self.max_segment_seconds)
        if len(spans) == 1:
            return [self._prepare_mono(mono, rate)], [request]
        durations = [(end - start) / rate for start, end in spans]
        texts = share_text(request.audio_text, durations) if request.audio_text.strip() else [""] * len(spans)
        new_texts = split_tagged_like(request.text, texts) if request.text is not None else [None] * len(spans)
        logger.info(
            "audio of %.1f s is edited in %d segments of at most %.0f s",
            sum(durations),
            len(spans),
            self.max_segment_seconds,
        )
        requests = [
            check_edit_request(request.edit_type, request.edit_info, piece, new)
            for piece, new in zip(texts, new_texts, strict=True)
        ]
        segments = [self._prepare_mono(mono[start:end], rate) for start, end in spans]
        return segments, requests

    def _edit_codes_once(self, segment: PreparedAudio, request: EditRequest) -> list[int]:
        return self.generate_codes(*self._edit_request(segment, request))

    def _edit_request(self, segment: PreparedAudio, request: EditRequest) -> tuple[list[int], int]:
        """Prompt ids and most new tokens of one edit of one segment."""
        if not segment.audio_ids:
            raise AudioInputError(
                f"a {segment.seconds:.1f} s stretch of the audio holds no sound after silence trimming; "
                "nothing to edit there"
            )
        ids = build_edit_prompt_ids(self.text_tokenizer, request, segment.audio_ids)
        # An edit rewrites the clip: allow up to twice its length (slower speech) plus 5 s.
        ceiling = 2 * len(segment.audio_ids) + int(5 * AUDIO_TOKENS_PER_SECOND)
        return ids, self._room(ids, ceiling, "edit")

    def edit_codes(
        self,
        audio: object,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        text: str | None = None,
        sample_rate: int | None = None,
    ) -> list[list[int]]:
        """The audio codes of one edit pass (the first iteration): one list per audio segment."""
        segments, requests = self._edit_plan(audio, audio_text, edit_type, edit_info, text, sample_rate)
        return [self._edit_codes_once(segment, request) for segment, request in zip(segments, requests, strict=True)]

    def edit_steps(
        self,
        audio: object,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        iterations: int = 1,
        text: str | None = None,
        sample_rate: int | None = None,
    ) -> Iterator[EditStep]:
        """Yield each iteration's edited audio (see :meth:`edit`); everything is checked before the first step."""
        segments, plans, iterations = self._iteration_plan(
            audio, audio_text, edit_type, edit_info, iterations, text, sample_rate
        )
        return self._run_edit(segments, plans, iterations)

    def _iteration_plan(
        self,
        audio: object,
        audio_text: object,
        edit_type: object,
        edit_info: object,
        iterations: object,
        text: object,
        sample_rate: int | None,
    ) -> tuple[list[PreparedAudio], list[list[EditRequest]], int]:
        """Check an edit of ``iterations`` passes and cut its audio: ``(segments, each segment's request per
        iteration, iterations)``."""
        iterations = check_n_edit_iter(iterations)
        segments, requests = self._edit_plan(audio, audio_text, edit_type, edit_info, text, sample_rate)
        return segments, [iteration_requests(request, iterations) for request in requests], iterations

    def _edit_pass(
        self, segments: list[PreparedAudio], plans: list[list[EditRequest]], iteration: int
    ) -> list[torch.Tensor]:
        """One offline edit pass: each segment edited with its request of ``iteration`` and decoded."""
        return [
            self._decode(self._edit_codes_once(segment, plans[index][iteration]), segment)
            for index, segment in enumerate(segments)
        ]

    def _run_edit(
        self, segments: list[PreparedAudio], plans: list[list[EditRequest]], iterations: int
    ) -> Iterator[EditStep]:
        current = segments
        for iteration in range(iterations):
            outputs = self._edit_pass(current, plans, iteration)
            waveform = join_audio(outputs, self.sample_rate)
            last = [plan[iteration] for plan in plans]
            spoken = " ".join(
                (request.text if request.edit_type == "paralinguistic" else request.audio_text) or ""
                for request in last
            ).strip()
            yield EditStep(iteration + 1, waveform, self.sample_rate, spoken)
            if iteration + 1 < iterations:
                current = self._next_inputs(outputs)

    def _next_inputs(self, outputs: list[torch.Tensor]) -> list[PreparedAudio]:
        """Each later iteration edits the previous output (24 kHz), segment by segment."""
        return [self._prepare_mono(out[0].detach().cpu().numpy(), self.sample_rate) for out in outputs]

    def edit_stream(
        self,
        audio: object,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        iterations: int = 1,
        text: str | None = None,
        sample_rate: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """:meth:`edit`, with the last iteration streamed: yield 24 kHz waveform chunks ``[1, n]`` float32.

        Everything is checked and the audio tokenized when this is called.  The iterations before the
        last run offline (each needs the whole previous output); the last one generates and decodes each
        segment as a stream (see :meth:`clone_stream`: first audio after 30 codes of its first segment;
        the chunks equal the ``attention="chunked"`` decode of the same codes), segments joined with the
        10 ms cross-fade of :meth:`edit`.
        """
        segments, plans, iterations = self._iteration_plan(
            audio, audio_text, edit_type, edit_info, iterations, text, sample_rate
        )
        self._streaming_decoder()
        return self._stream_edit(segments, plans, iterations)

    def _stream_edit(
        self, segments: list[PreparedAudio], plans: list[list[EditRequest]], iterations: int
    ) -> Iterator[torch.Tensor]:
        current = segments
        for iteration in range(iterations - 1):
            current = self._next_inputs(self._edit_pass(current, plans, iteration))
        last = current

        def requests() -> Iterator[tuple[list[int], int, PreparedAudio]]:
            for index, segment in enumerate(last):
                ids, room = self._edit_request(segment, plans[index][-1])
                yield ids, room, segment

        yield from self._stream_pieces(requests())

    def edit(
        self,
        audio: object,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        iterations: int = 1,
        text: str | None = None,
        sample_rate: int | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Edit ``audio`` and return the last iteration's result.

        Args:
            audio: the clip to edit: a path, or an array with ``sample_rate``.
            audio_text: its transcript (may be empty for ``denoise`` and ``vad``).
            edit_type: ``emotion``, ``style``, ``speed``, ``paralinguistic``, ``denoise`` or ``vad``.
            edit_info: the emotion / style / speed (see :mod:`stepaudio.editx.edit_config`); none for the others.
            iterations: how many times to apply the edit, each to the previous output (the original's
                ``--n-edit-iter``; 2 helps styles such as whisper).
            text: for ``paralinguistic``: the transcript with ``[Tag]`` sounds inserted.
            sample_rate: rate of an array ``audio``.

        Returns:
            ``(waveform [1, N] float32, 24000)``.
        """
        steps = list(self.edit_steps(audio, audio_text, edit_type, edit_info, iterations, text, sample_rate))
        return steps[-1].waveform, steps[-1].sample_rate
