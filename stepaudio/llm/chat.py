"""``StepAudioChat``: the Step-Audio-Chat model as a callable, text or audio turns in, reply text out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import TextIteratorStreamer

from ..device import resolve_device, resolve_dtype
from ..errors import OFFICIAL_DOWNLOAD_HINT, CheckpointFileNotFoundError, PromptError
from .generation import BackgroundGeneration
from .modeling import Step1ForCausalLM
from .prompts import render_chat_prompt
from .text_tokenizer import EOT_ID, load_text_tokenizer

logger = logging.getLogger(__name__)

__all__ = ["StepAudioChat", "resolve_model_folder"]

Message = Mapping[str, Any]


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
    raise CheckpointFileNotFoundError(
        f"{path} is not a {folder_name} folder: neither {path / marker} nor {path / folder_name / marker} exists. "
        f"Pass the {folder_name} folder, or the folder that contains it. {OFFICIAL_DOWNLOAD_HINT}",
        folder=path,
        file=path / marker,
    )


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

    Messages are ``{"role": "system"|"user"|"assistant", "content": ...}`` where content is a
    string, ``{"type": "text", "text": ...}``, ``{"type": "audio", "audio": path_or_array,
    "sample_rate": sr}`` or a list of such parts.
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
    ) -> None:
        self.model_path = resolve_model_folder(model_path, "Step-Audio-Chat")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = load_text_tokenizer(self.model_path)
        self.model = Step1ForCausalLM.from_pretrained(
            self.model_path, dtype=self.dtype, attn_implementation=attn_implementation, device_map=device_map
        )
        if device_map is None:
            self.model.to(self.device)
        self.model.eval()
        logger.info(
            "Step-Audio-Chat loaded from %s on %s (%s, %s attention)",
            self.model_path,
            device_map if device_map is not None else self.device,
            self.dtype,
            self.model.config._attn_implementation,
        )
        if audio_tokenizer is None and tokenizer_path is not None:
            from ..tokenizer import StepAudioTokenizer

            audio_tokenizer = StepAudioTokenizer(tokenizer_path, device=self.device)
        self.audio_tokenizer = audio_tokenizer

    @property
    def max_seq_len(self) -> int:
        """Longest prompt + reply the model supports (``max_seq_len`` of config.json)."""
        return self.model.config.max_seq_len

    def _audio_part_to_text(self, part: Mapping[str, Any]) -> str:
        assert self.audio_tokenizer is not None  # checked by message_content_to_text
        return self.audio_tokenizer(part["audio"], part.get("sample_rate"))

    def encode_messages(self, messages: Sequence[Message]) -> list[int]:
        """Prompt token ids for ``messages`` in the Step chat format (BOS first, ends with the assistant header)."""
        audio_to_text = self._audio_part_to_text if self.audio_tokenizer is not None else None
        prompt = render_chat_prompt(messages, audio_to_text=audio_to_text)
        return self.tokenizer.encode(prompt)

    def _generation_inputs(self, messages: Sequence[Message], max_new_tokens: int) -> tuple[torch.Tensor, int]:
        prompt_ids = self.encode_messages(messages)
        if len(prompt_ids) >= self.max_seq_len:
            raise PromptError(
                f"the prompt is {len(prompt_ids)} tokens long but Step-Audio-Chat takes at most {self.max_seq_len} "
                "(prompt + reply); drop old turns or shorten the audio"
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
        input_device = self.model.get_input_embeddings().weight.device
        return torch.tensor([prompt_ids], device=input_device), max_new_tokens

    def _generate_kwargs(
        self, max_new_tokens: int, temperature: float, top_p: float, top_k: int, do_sample: bool
    ) -> dict:
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "eos_token_id": EOT_ID,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        return kwargs

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
        """
        input_ids, max_new_tokens = self._generation_inputs(messages, max_new_tokens)
        output = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=streamer,
            **self._generate_kwargs(max_new_tokens, temperature, top_p, top_k, do_sample),
        )
        return self.decode_reply(output[0, input_ids.shape[1] :].tolist())

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

        Generation stops promptly (within one token) when ``cancel`` is set, or when the consumer
        stops iterating (the generator is closed); the text produced so far has then been yielded.
        """
        input_ids, max_new_tokens = self._generation_inputs(messages, max_new_tokens)
        streamer = _ReplyStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        generation = BackgroundGeneration(
            self.model,
            input_ids,
            streamer,
            cancel=cancel,
            thread_name="stepaudio-chat-generate",
            **self._generate_kwargs(max_new_tokens, temperature, top_p, top_k, do_sample),
        )
        with generation:
            for piece in streamer:
                if piece:
                    yield piece
