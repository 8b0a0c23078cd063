"""``StepAudioChat``: the Step-Audio-Chat model as a callable, text or audio turns in, reply text out."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import TextIteratorStreamer

from ..device import resolve_device, resolve_dtype
from ..errors import (
    OFFICIAL_DOWNLOAD_HINT,
    AudioInputError,
    CheckpointFileNotFoundError,
    InvalidArgumentError,
    PromptError,
)
from ..validation import check_bool, check_choice, check_float, check_input_dir, check_int, describe_value
from .backends import (
    GenerationBackend,
    SamplingSettings,
    check_backend_spec,
    check_quantization_for,
    make_backend,
)
from .generation import BackgroundFeed
from .prompts import check_messages, iter_audio_parts, render_chat_prompt
from .text_tokenizer import EOT_ID, load_text_tokenizer

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_IMPLEMENTATIONS", "StepAudioChat", "check_generation_args", "resolve_model_folder"]

Message = Mapping[str, Any]

#: Accepted ``attn_implementation`` values (``flex`` is short for ``flex_attention``).
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flex", "flex_attention", "eager")


class AudioTokenizerLike(Protocol):
    """Anything that turns audio into an ``<audio_N>`` string, like :class:`stepaudio.StepAudioTokenizer`."""

    def __call__(self, audio: Any, sample_rate: int | None = None) -> str: ...


def resolve_model_folder(path: str | Path, folder_name: str, marker: str = "config.json") -> Path:
    """Accept either the official folder itself or a parent that contains it under its official name.

    ``resolve_model_folder("models", "Step-Audio-Chat")`` returns ``models/Step-Audio-Chat`` when
    ``models`` itself holds no ``config.json``.
    """
    path = Path(path).expanduser()
    if (path / marker).is_file():
        return path
    if (path / folder_name / marker).is_file():
        return path / folder_name
    if not path.exists():
        raise CheckpointFileNotFoundError(
            f"model path {path} does not exist. {OFFICIAL_DOWNLOAD_HINT}", folder=path, file=path / marker
        )
    if not path.is_dir():
        raise CheckpointFileNotFoundError(
            f"model path {path} is a file, not a folder: pass the {folder_name} folder, or the folder that contains "
            f"it. {OFFICIAL_DOWNLOAD_HINT}",
            folder=path,
            file=path / marker,
        )
    raise CheckpointFileNotFoundError(
        f"{path} is not a {folder_name} folder: neither {path / marker} nor {path / folder_name / marker} exists. "
        f"Pass the {folder_name} folder, or the folder that contains it. {OFFICIAL_DOWNLOAD_HINT}",
        folder=path,
        file=path / marker,
    )


def check_generation_args(
    max_new_tokens: object,
    temperature: object,
    top_p: object,
    top_k: object,
    do_sample: object,
    timeout: object = None,
) -> None:
    """Refuse generation settings that transformers would reject late (or silently misuse).

    ``max_new_tokens`` a whole number >= 1; ``temperature`` a finite number, > 0 when sampling
    (greedy decoding ignores it); ``top_p`` in (0, 1]; ``top_k`` a whole number >= 0 (0: no top-k
    filter); ``do_sample`` a bool; ``timeout`` ``None`` or seconds > 0.

    Raises:
        InvalidArgumentError: naming the argument, what is accepted and the value given.
    """
    check_int(
        max_new_tokens, "max_new_tokens", minimum=1, hint="it is the longest reply to generate, in tokens (e.g. 512)"
    )
    sampling = check_bool(do_sample, "do_sample")
    if sampling:
        check_float(
            temperature,
            "temperature",
            minimum=0,
            exclusive_minimum=True,
            hint="use do_sample=False for greedy decoding",
        )
    else:
        check_float(temperature, "temperature", hint="it is ignored with do_sample=False")
    check_float(top_p, "top_p", minimum=0, maximum=1, exclusive_minimum=True, hint="1.0 turns the nucleus filter off")
    check_int(top_k, "top_k", minimum=0, hint="0 turns the top-k filter off")
    if timeout is not None:
        check_float(timeout, "timeout", minimum=0, exclusive_minimum=True, hint="None waits without limit")


def _without_audio(content: Any) -> Any:
    """Message content with every audio part replaced by an empty text part (to count the text tokens)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return {"type": "text", "text": ""} if content.get("type") == "audio" else content
    return [_without_audio(part) for part in content]


class _ReplyStreamer(TextIteratorStreamer):
    """A text-iterator streamer that hides the end-of-turn token (it is not a 'special' token to the tokenizer)."""

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            value = value[0]
        value = value[value != EOT_ID]
        if value.numel() or self.next_tokens_are_prompt:
            super().put(value)


class StepAudioChat:
    """The Step-Audio-Chat LLM: ``chat(messages) -> reply text``.

    Args:
        model_path: the official ``Step-Audio-Chat`` folder (or a folder containing it).
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA if available). Ignored with ``device_map``.
        dtype: weights dtype (default bfloat16 on GPU, float32 on CPU).
        attn_implementation: ``sdpa`` (default), ``flex`` or ``eager``.
        device_map: e.g. ``"auto"`` to spread the 130B model over all visible GPUs (needs accelerate).
        tokenizer_path: a ``Step-Audio-Tokenizer`` folder, enabling audio message content.
        audio_tokenizer: an already built audio tokenizer (instead of ``tokenizer_path``).
        backend: what generates the reply ids (see :mod:`stepaudio.llm.backends`): ``None`` /
            ``"transformers"`` (the model in this process, the default), ``"vllm"`` (an in-process vLLM
            engine), the ``http(s)://`` URL of a ``vllm serve`` server (the weights are then not loaded
            here; the folder still provides the text tokenizer and config.json), or a ready
            :class:`~stepaudio.llm.backends.GenerationBackend`.  ``device``, ``dtype``,
            ``attn_implementation`` and ``device_map`` are how ``"transformers"`` loads the model.
        quantization: ``"int8"`` / ``"int4"``: load the model weight-only quantized (bitsandbytes, shard by
            shard; int4 puts the 130B model in ~66 GiB; see :mod:`stepaudio.llm.quantization`); with
            ``backend="vllm"`` vLLM's own method name (``fp8``...).

    Messages are ``{"role": "system"|"user"|"assistant", "content": ...}`` where content is a
    string, ``{"type": "text", "text": ...}``, ``{"type": "audio", "audio": path_or_array,
    "sample_rate": sr}`` (``sample_rate`` required for arrays), ``{"type": "audio", "audio_ids":
    [...]}`` or a list of such parts.

    Bad input is refused before any work, with one-line messages: the constructor checks its
    arguments (and the tokenizer folder's layout) before loading anything
    (:class:`~stepaudio.errors.InvalidArgumentError` / :class:`~stepaudio.errors.InputFileError`);
    ``__call__`` and :meth:`stream` check the generation settings (:func:`check_generation_args`), every
    message and part, and whether the prompt can fit ``max_seq_len`` judged from the audio's
    durations (:meth:`check_prompt`), before the first clip is tokenized.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        device_map: str | dict | None = None,
        tokenizer_path: str | Path | None = None,
        audio_tokenizer: AudioTokenizerLike | None = None,
        backend: str | GenerationBackend | None = None,
        quantization: str | None = None,
    ) -> None:
        check_choice(attn_implementation, "attn_implementation", ATTENTION_IMPLEMENTATIONS)
        backend_spec = check_backend_spec(backend, "backend")
        check_quantization_for(backend_spec, quantization)
        device_obj = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, device_obj)
        if device_map is not None:
            if not isinstance(device_map, (str, dict)) or isinstance(device_map, str) and not device_map.strip():
                detail = (
                    "must be None, a strategy such as 'auto' or a dict of module name -> device, "
                    f"got {describe_value(device_map)}"
                )
                raise InvalidArgumentError.about("device_map", detail, device_map)
            if importlib.util.find_spec("accelerate") is None:
                detail = f"needs the accelerate package, got {describe_value(device_map)}; pip install accelerate"
                raise InvalidArgumentError.about("device_map", detail, device_map)
            if backend_spec != "transformers":
                shown = backend_spec if isinstance(backend_spec, str) else type(backend_spec).__name__
                detail = f"only applies to the 'transformers' backend, got {describe_value(device_map)} with {shown!r}"
                raise InvalidArgumentError.about("device_map", detail, device_map)
        tokenizer_folder = None
        if tokenizer_path is not None:
            if audio_tokenizer is not None:
                detail = "must be None when audio_tokenizer is given (pass one of them, not both)"
                raise InvalidArgumentError.about("tokenizer_path", detail, tokenizer_path)
            from ..tokenizer.layout import locate_tokenizer_files

            check_input_dir(tokenizer_path, "tokenizer_path", "a Step-Audio-Tokenizer folder")
            tokenizer_folder = locate_tokenizer_files(tokenizer_path).folder  # checks the layout before any load
        if audio_tokenizer is not None and not callable(audio_tokenizer):
            detail = (
                "must be callable as audio_tokenizer(audio, sample_rate) -> '<audio_N>...' (e.g. a "
                f"StepAudioTokenizer), got {type(audio_tokenizer).__name__}"
            )
            raise InvalidArgumentError.about("audio_tokenizer", detail, audio_tokenizer)
        self.model_path = resolve_model_folder(model_path, "Step-Audio-Chat")
        self.device = device_obj
        self.dtype = resolved_dtype
        self.tokenizer = load_text_tokenizer(self.model_path)
        #: generates the reply ids (:mod:`stepaudio.llm.backends`)
        self.backend: GenerationBackend = make_backend(
            backend_spec,
            self.model_path,
            role="chat",
            name="backend",
            device=self.device,
            dtype=self.dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            pad_token_id=self.tokenizer.pad_token_id,
            quantization=quantization,
        )
        #: the local Step-1 model of the ``transformers`` backend (``None`` with any other backend)
        self.model = getattr(self.backend, "model", None)
        if self.model is not None:
            logger.info(
                "Step-Audio-Chat loaded from %s on %s (%s, %s attention)",
                self.model_path,
                device_map if device_map is not None else self.device,
                self.dtype,
                self.model.config._attn_implementation,
            )
        else:
            logger.info(
                "Step-Audio-Chat generates with the %s backend %s (%d-token context); tokenizer from %s",
                self.backend.name,
                getattr(self.backend, "base_url", ""),
                self.backend.max_seq_len,
                self.model_path,
            )
        if tokenizer_folder is not None:
            from ..tokenizer import StepAudioTokenizer

            audio_tokenizer = StepAudioTokenizer(tokenizer_folder, device=self.device)
        self.audio_tokenizer = audio_tokenizer

    @property
    def max_seq_len(self) -> int:
        """Longest prompt + reply the model supports (``max_seq_len`` of config.json; a server's ``max_model_len``)."""
        return self.backend.max_seq_len

    def _audio_part_to_text(self, part: Mapping[str, Any]) -> str:
        assert self.audio_tokenizer is not None  # checked by check_messages
        return self.audio_tokenizer(part["audio"], part.get("sample_rate"))

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """Prompt token ids for ``messages`` in the Step chat format (BOS first, ends with the assistant header)."""
        audio_to_text = self._audio_part_to_text if self.audio_tokenizer is not None else None
        prompt = render_chat_prompt(messages, audio_to_text=audio_to_text)
        return self.tokenizer.encode(prompt)

    def _audio_estimate(self, where: str, part: Mapping[str, Any]) -> tuple[float, int]:
        """``(seconds, most audio tokens)`` of one audio part, from its length alone (nothing decoded)."""
        from ..audio import audio_duration
        from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND, max_audio_tokens

        if "audio_ids" in part:
            count = len(part["audio_ids"])
            return count / AUDIO_TOKENS_PER_SECOND, count
        try:
            audio = part["audio"]
            seconds = audio_duration(
                Path(os.fspath(audio)) if isinstance(audio, os.PathLike) else audio, part.get("sample_rate")
            )
        except AudioInputError as error:
            raise AudioInputError(f"{where}: {error}") from None
        return seconds, max_audio_tokens(seconds)

    def check_prompt(self, messages: Sequence[Message]) -> None:
        """Check ``messages`` completely and refuse a prompt that cannot fit, before any audio is tokenized.

        Every message and part is checked first (:func:`~stepaudio.llm.prompts.check_messages`); then
        the prompt's length is bounded from the text (tokenized, cheap) and the audio's durations (file
        headers / array lengths / ``audio_ids`` counts, nothing decoded): a prompt that would leave no
        room for a reply in ``max_seq_len`` is refused at once, not after minutes of tokenizing.

        Raises:
            PromptError: malformed messages, or a prompt (text + audio) too long for the context.
            AudioInputError: an audio file that is missing, a folder or unreadable (naming the message).
        """
        from ..tokenizer.interleave import AUDIO_TOKENS_PER_SECOND, GROUP_LINGUISTIC, GROUP_SEMANTIC, audio_seconds_for

        check_messages(messages, audio_tokenizer_configured=self.audio_tokenizer is not None)
        estimates = [(where, *self._audio_estimate(where, part)) for where, part in iter_audio_parts(messages)]
        text_only = [{**message, "content": _without_audio(message["content"])} for message in messages]
        text_tokens = len(self.tokenizer.encode(render_chat_prompt(text_only)))
        audio_tokens = sum(tokens for _, _, tokens in estimates)
        limit = self.max_seq_len
        if text_tokens + audio_tokens < limit:
            return
        context = f"Step-Audio-Chat's {limit}-token context (max_seq_len of config.json)"
        if text_tokens >= limit or not estimates:
            what = "the text of the prompt alone is" if estimates else "the prompt is"
            raise PromptError(
                f"{what} {text_tokens} tokens long but Step-Audio-Chat takes at most {limit} (prompt + reply, "
                "max_seq_len of config.json); drop old turns or shorten the text"
            )
        room = limit - 1 - text_tokens  # audio tokens that fit with the text and one reply token
        where, seconds, tokens = max(estimates, key=lambda estimate: estimate[2])
        others = audio_tokens - tokens
        group = GROUP_LINGUISTIC + GROUP_SEMANTIC
        if tokens > room and room - others >= group:  # this clip alone cannot fit: it is the one to shorten
            at_most = audio_seconds_for(room - others)
            besides = f" besides {others} tokens of other audio in the conversation" if others else ""
            raise PromptError(
                f"the audio in {where} lasts {seconds:.1f} s (~{tokens} audio tokens), more than {context} holds"
                f"{besides} with room for the reply: shorten it to at most {at_most:.1f} s or split it into "
                "several turns"
            )
        total_seconds = sum(estimate[1] for estimate in estimates)
        at_most = audio_seconds_for(room)
        places = ", ".join(estimate[0] for estimate in estimates)
        raise PromptError(
            f"the audio of the conversation ({places}) lasts {total_seconds:.1f} s in total (~{audio_tokens} audio "
            f"tokens at {AUDIO_TOKENS_PER_SECOND:.1f}/s), more than {context} holds with the text and room for the "
            f"reply: drop old turns or shorten the audio to at most {at_most:.1f} s in total"
        )

    def _generation_inputs(self, messages: Sequence[Message], max_new_tokens: int) -> tuple[list[int], int]:
        """The prompt ids of ``messages`` and ``max_new_tokens`` capped to the room left in the context."""
        prompt_ids = self.encode_messages(messages)
        if len(prompt_ids) >= self.max_seq_len:
            raise PromptError(
                f"the prompt is {len(prompt_ids)} tokens long but Step-Audio-Chat takes at most {self.max_seq_len} "
                "(prompt + reply, max_seq_len of config.json); drop old turns or shorten the audio"
            )
        room = self.max_seq_len - len(prompt_ids)
        if max_new_tokens > room:
            logger.warning(
                "max_new_tokens=%d does not fit after a %d-token prompt; generating at most %d tokens",
                max_new_tokens,
                len(prompt_ids),
                room,
            )
            max_new_tokens = room
        return prompt_ids, max_new_tokens

    @staticmethod
    def sampling_settings(
        max_new_tokens: int, temperature: float, top_p: float, top_k: int, do_sample: bool
    ) -> SamplingSettings:
        """The backend's :class:`~stepaudio.llm.backends.SamplingSettings` of a reply (it ends at ``<|EOT|>``)."""
        return SamplingSettings(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_token_ids=(EOT_ID,),
        )

    def decode_reply(self, token_ids: Sequence[int]) -> str:
        """Reply text of generated ids: everything before the first end-of-turn token, specials removed."""
        token_ids = list(token_ids)
        if EOT_ID in token_ids:
            token_ids = token_ids[: token_ids.index(EOT_ID)]
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    @torch.inference_mode()
    def __call__(
        self,
        messages: Sequence[Message],
        max_new_tokens: int = 2048,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 50,
        do_sample: bool = True,
        streamer: Any | None = None,
    ) -> str:
        """Generate the assistant's reply to ``messages`` (upstream defaults: sampling, T=0.7, top-p 0.9, top-k 50).

        ``streamer`` is any transformers streamer (e.g. ``TextStreamer``) that should see the tokens as
        they are generated; see :meth:`stream` for an iterator of text pieces instead.

        Every argument and message is checked before anything is tokenized (see :meth:`check_prompt`
        and :func:`check_generation_args`).
        """
        check_generation_args(max_new_tokens, temperature, top_p, top_k, do_sample)
        if streamer is not None and not (
            callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))
        ):
            detail = f"must be a transformers streamer (with put() and end()), got {type(streamer).__name__}"
            raise InvalidArgumentError.about("streamer", detail, streamer)
        self.check_prompt(messages)
        prompt_ids, max_new_tokens = self._generation_inputs(messages, max_new_tokens)
        settings = self.sampling_settings(max_new_tokens, temperature, top_p, top_k, do_sample)
        if streamer is None:
            return self.decode_reply(self.backend.generate_ids(prompt_ids, settings))
        # As generate does: the prompt first ([1, L]), then each id ([1]), then end().
        streamer.put(torch.tensor([prompt_ids]))
        generated: list[int] = []
        ids = self.backend.stream_ids(prompt_ids, settings)
        try:
            for token in ids:
                generated.append(token)
                streamer.put(torch.tensor([token]))
        finally:
            ids.close()  # stops the backend within a token when the streamer raised
        streamer.end()
        return self.decode_reply(generated)

    def stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int = 2048,
        temperature: float = 0.7,
        top_p: float = 0.9,
        top_k: int = 50,
        do_sample: bool = True,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the reply as text pieces while it is generated (generation runs in a worker thread).

        Arguments and messages are checked when ``stream`` is called (not on the first ``next``);
        audio is tokenized and generation starts on the first ``next``.  Generation stops promptly
        (within one token) when ``cancel`` is set, or when the consumer stops iterating (the generator
        is closed); the text produced so far has then been yielded.
        """
        check_generation_args(max_new_tokens, temperature, top_p, top_k, do_sample, timeout)
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            detail = f"must be None or a threading.Event, got {type(cancel).__name__}"
            raise InvalidArgumentError.about("cancel", detail, cancel)
        self.check_prompt(messages)
        return self._stream(messages, max_new_tokens, temperature, top_p, top_k, do_sample, timeout, cancel)

    def _stream(
        self,
        messages: Sequence[Message],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        do_sample: bool,
        timeout: float | None,
        cancel: threading.Event | None,
    ) -> Iterator[str]:
        prompt_ids, max_new_tokens = self._generation_inputs(messages, max_new_tokens)
        settings = self.sampling_settings(max_new_tokens, temperature, top_p, top_k, do_sample)
        streamer = _ReplyStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        streamer.put(torch.tensor([prompt_ids]))  # skipped as the prompt
        ids = self.backend.stream_ids(prompt_ids, settings, cancel)
        with BackgroundFeed(ids, streamer, thread_name="stepaudio-chat-feed"):
            for piece in streamer:
                if piece:
                    yield piece
