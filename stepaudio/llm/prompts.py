"""Chat prompts and ``<audio_N>`` token helpers for the Step-1 models.

Terms used throughout the package:

* an **audio code** is the ``N`` of ``<audio_N>``: 0..1023 are linguistic (vq02) codes, 1024..5119
  are semantic (vq06) codes shifted by 1024;
* an **audio id** is the LLM token id of that piece, ``65536 + N``;
* an **audio string** is the concatenation ``<audio_N><audio_M>...`` with no separators, the form in
  which audio enters a chat prompt.

The chat prompt is the upstream format: ``<|BOT|>{role}\\n{content}<|EOT|>`` per message (role
``user`` written as ``human``), ending with ``<|BOT|>assistant\\n``; ``encode`` then prepends BOS.
As upstream, a last message ``{"role": "assistant", "content": None}`` is an open assistant turn:
it is written as ``<|BOT|>assistant\\n`` without ``<|EOT|>`` and is itself the generation prompt.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import AudioTokenError, InvalidArgumentError, PromptError
from ..validation import check_text
from .text_tokenizer import AUDIO_TOKEN_OFFSET, NUM_AUDIO_CODES

__all__ = [
    "ASR_INSTRUCTION",
    "CHAT_ROLES",
    "DEFAULT_VOICE_SYSTEM_PROMPT",
    "AudioToText",
    "audio_codes_to_ids",
    "audio_ids_to_codes",
    "check_messages",
    "format_audio_tokens",
    "iter_audio_parts",
    "message_content_to_text",
    "parse_audio_tokens",
    "render_chat_prompt",
]

#: Role names as written in the prompt (``user`` is accepted and written as ``human``).
CHAT_ROLES: dict[str, str] = {"system": "system", "user": "human", "human": "human", "assistant": "assistant"}

#: The upstream demo's system prompt: "answer briefly and colloquially, in the user's language".
DEFAULT_VOICE_SYSTEM_PROMPT = "适配用户的语言，用简短口语化的文字回答"

#: Instruction that makes the chat model transcribe the audio that follows ("write down what you hear").
ASR_INSTRUCTION = "请记录下你所听到的语音内容。"

_AUDIO_PIECE = re.compile(r"<audio_(\d+)>")

#: Turns one audio content part (``{"type": "audio", "audio": ..., ...}``) into its audio string.
AudioToText = Callable[[Mapping[str, Any]], str]


def _check_code(code: Any, position: int) -> int:
    """Return ``code`` as int if it is an integer in ``0..5119`` (numpy integers included), else raise."""
    if isinstance(code, bool) or not isinstance(code, numbers.Integral) or not 0 <= code < NUM_AUDIO_CODES:
        raise AudioTokenError(
            f"audio code {code!r} at position {position} is invalid: <audio_N> needs an integer "
            f"0 <= N < {NUM_AUDIO_CODES} (0..1023 linguistic, 1024..5119 semantic)"
        )
    return int(code)


def format_audio_tokens(codes: Iterable[int]) -> str:
    """``[3, 1030]`` -> ``"<audio_3><audio_1030>"``; rejects codes outside ``0..5119``."""
    return "".join(f"<audio_{_check_code(code, i)}>" for i, code in enumerate(codes))


def parse_audio_tokens(text: str) -> list[int]:
    """``"<audio_3><audio_1030>"`` -> ``[3, 1030]``.

    The whole string must be ``<audio_N>`` pieces (surrounding whitespace is ignored); anything else
    raises :class:`~stepaudio.errors.AudioTokenError` naming the offending position.
    """
    if not isinstance(text, str):
        raise AudioTokenError(f"expected an audio string like '<audio_12><audio_1030>', got {type(text).__name__}")
    text = text.strip()
    codes: list[int] = []
    position = 0
    while position < len(text):
        match = _AUDIO_PIECE.match(text, position)
        if match is None:
            snippet = text[position : position + 20]
            raise AudioTokenError(
                f"malformed audio string at character {position}: {snippet!r} is not an <audio_N> piece "
                "(expected only pieces like '<audio_12>', with no separators)"
            )
        codes.append(_check_code(int(match.group(1)), len(codes)))
        position = match.end()
    return codes


def audio_codes_to_ids(codes: Iterable[int]) -> list[int]:
    """Audio codes (``N``) to LLM token ids (``65536 + N``)."""
    return [AUDIO_TOKEN_OFFSET + _check_code(code, i) for i, code in enumerate(codes)]


def audio_ids_to_codes(ids: Iterable[int]) -> list[int]:
    """LLM token ids (``65536 + N``) to audio codes (``N``); rejects ids that are not audio pieces."""
    codes = []
    for i, token_id in enumerate(ids):
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral):
            raise AudioTokenError(f"token id {token_id!r} at position {i} is not an integer")
        code = int(token_id) - AUDIO_TOKEN_OFFSET
        if not 0 <= code < NUM_AUDIO_CODES:
            raise AudioTokenError(
                f"token id {int(token_id)} at position {i} is not an audio token: audio ids are "
                f"{AUDIO_TOKEN_OFFSET}..{AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES - 1}"
            )
        codes.append(code)
    return codes


def message_content_to_text(content: Any, audio_to_text: AudioToText | None = None, where: str = "message") -> str:
    """Render message content as prompt text.

    ``content`` may be a string, one part ``{"type": "text", "text": ...}`` /
    ``{"type": "audio", "audio": path_or_array, ...}`` / ``{"type": "audio", "audio_ids": [65536 + N, ...]}``
    (already tokenized), or a list of such parts (concatenated).  Audio parts with raw audio are turned
    into audio strings by ``audio_to_text``.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        kind = content.get("type")
        if kind == "text":
            text = content.get("text")
            if not isinstance(text, str):
                raise PromptError(f"{where}: a text part needs a string under 'text', got {type(text).__name__}")
            return text
        if kind == "audio" and "audio_ids" in content:
            # Audio already tokenized (e.g. by a streaming tokenizer session): LLM ids 65536 + N.
            return format_audio_tokens(audio_ids_to_codes(content["audio_ids"]))
        if kind == "audio":
            if "audio" not in content:
                raise PromptError(f"{where}: an audio part needs the audio (a path or an array) under 'audio'")
            if audio_to_text is None:
                raise PromptError(
                    f"{where} contains audio, but no audio tokenizer is configured: create StepAudioChat with "
                    "tokenizer_path=<Step-Audio-Tokenizer folder> (or audio_tokenizer=...)"
                )
            return audio_to_text(content)
        raise PromptError(f"{where}: unknown content part type {kind!r}; use 'text' or 'audio'")
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        return "".join(
            message_content_to_text(part, audio_to_text, where=f"{where}, part {i}") for i, part in enumerate(content)
        )
    raise PromptError(
        f"{where}: content must be a string, a {{'type': 'text'|'audio', ...}} part or a list of parts, "
        f"got {type(content).__name__}"
    )


_TEXT_PART_KEYS = ("type", "text")
_AUDIO_PART_KEYS = ("type", "audio", "sample_rate", "audio_ids")
_MESSAGES_SHAPE = "a non-empty list of {'role': ..., 'content': ...} dicts"


def _short(value: object, limit: int = 60) -> str:
    """One-line, shortened ``repr`` of a refused value (numpy reprs span lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_array(value: object) -> bool:
    """Array-like audio: numpy arrays, torch tensors (anything with a ``shape``), lists and tuples of samples."""
    return hasattr(value, "shape") or isinstance(value, (list, tuple))


def _check_prompt_text(value: object, where: str) -> None:
    try:
        check_text(value, where, allow_empty=True)
    except InvalidArgumentError as error:
        raise PromptError(str(error)) from None


def _check_audio_part(part: Mapping[str, Any], where: str, audio_tokenizer_configured: bool) -> None:
    if "audio_ids" in part:
        if "audio" in part:
            raise PromptError(
                f"{where}: an audio part has either 'audio' (a path or an array) or 'audio_ids' (already tokenized), "
                "not both"
            )
        ids = part["audio_ids"]
        if isinstance(ids, (str, bytes)) or not (isinstance(ids, Sequence) or hasattr(ids, "shape")):
            raise AudioTokenError(
                f"{where}: 'audio_ids' must be a list of LLM audio ids (65536 + N), got {_short(ids)}"
            )
        try:
            audio_ids_to_codes(ids)
        except AudioTokenError as error:
            raise AudioTokenError(f"{where}: {error}") from None
        return
    if "audio" not in part:
        raise PromptError(f"{where}: an audio part needs the audio (a path or an array) under 'audio'")
    audio = part["audio"]
    sample_rate = part.get("sample_rate")
    if _is_path(audio):
        path = os.fspath(audio)
        if isinstance(path, bytes) or not path.strip():
            raise PromptError(f"{where}: 'audio' must be the path of an audio file or an array, got {_short(audio)}")
        _check_prompt_text(path, f"{where} 'audio' path")
    elif not _is_array(audio):
        raise PromptError(
            f"{where}: 'audio' must be the path of an audio file, or an array/tensor of samples with 'sample_rate', "
            f"got {type(audio).__name__}"
        )
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0
    ):
        raise PromptError(
            f"{where}: 'sample_rate' must be a positive whole number of Hz (e.g. 16000), got {_short(sample_rate)}"
        )
    if sample_rate is None and not _is_path(audio):
        raise PromptError(
            f"{where}: array audio needs its sample rate: {{'type': 'audio', 'audio': samples, 'sample_rate': 16000}}"
        )
    if not audio_tokenizer_configured:
        raise PromptError(
            f"{where} contains audio, but no audio tokenizer is configured: create StepAudioChat with "
            "tokenizer_path=<Step-Audio-Tokenizer folder> (or audio_tokenizer=...)"
        )


def _check_part(part: Any, where: str, audio_tokenizer_configured: bool) -> None:
    """Check one content part (or a nested list of parts) without rendering anything."""
    if isinstance(part, str):
        _check_prompt_text(part, f"{where} text")
        return
    if isinstance(part, Mapping):
        kind = part.get("type")
        allowed = {"text": _TEXT_PART_KEYS, "audio": _AUDIO_PART_KEYS}.get(kind) if isinstance(kind, str) else None
        if allowed is None:
            raise PromptError(f"{where}: unknown content part type {_short(kind)}; use 'text' or 'audio'")
        unknown = [key for key in part if key not in allowed]
        article = "an" if kind == "audio" else "a"
        if unknown:
            raise PromptError(
                f"{where}: unknown key(s) {', '.join(_short(key) for key in unknown)} in {article} {kind} part; "
                f"{article} {kind} part has only {', '.join(repr(key) for key in allowed)}"
            )
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise PromptError(f"{where}: a text part needs a string under 'text', got {type(text).__name__}")
            _check_prompt_text(text, f"{where} text")
        else:
            _check_audio_part(part, where, audio_tokenizer_configured)
        return
    if isinstance(part, Sequence) and not isinstance(part, (bytes, bytearray)):
        for i, item in enumerate(part):
            _check_part(item, f"{where}, part {i}", audio_tokenizer_configured)
        return
    raise PromptError(
        f"{where}: content must be a string, a {{'type': 'text'|'audio', ...}} part or a list of parts, "
        f"got {type(part).__name__}"
    )


def check_messages(messages: Any, audio_tokenizer_configured: bool = True) -> None:
    """Check every message and content part, without rendering or tokenizing anything.

    :func:`render_chat_prompt` runs this first, so a malformed part anywhere is reported before any
    audio is tokenized.  Messages are ``{"role": "system"|"user"|"human"|"assistant", "content": ...}``;
    content is a string, a part ``{"type": "text", "text": str}``, ``{"type": "audio", "audio": path}``,
    ``{"type": "audio", "audio": samples, "sample_rate": hz}``, ``{"type": "audio", "audio_ids": [...]}``,
    or a list of parts; ``None`` only in a last assistant message (an open turn).

    Raises:
        PromptError: naming the message index and the part (``message 2, part 1: ...``).
        AudioTokenError: ``audio_ids`` that are not LLM audio ids.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise PromptError(f"messages must be {_MESSAGES_SHAPE}, got {type(messages).__name__}")
    if len(messages) == 0:
        raise PromptError(f"messages must be {_MESSAGES_SHAPE}, got an empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"message {i} must be a dict with 'role' and 'content', got {_short(message, 80)}")
        role = message["role"]
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise PromptError(f"message {i} has unknown role {_short(role)}; use one of {sorted(CHAT_ROLES)}")
        if message["content"] is None:
            if CHAT_ROLES[role] != "assistant" or i != len(messages) - 1:
                raise PromptError(
                    f"message {i} ({role}) has content None: an open turn is allowed only as the last "
                    "message, with role 'assistant'"
                )
            continue
        _check_part(message["content"], f"message {i}", audio_tokenizer_configured)


def iter_audio_parts(messages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, part)`` of every audio part of checked messages, in order (``where``: ``message 0, part 1``)."""

    def walk(content: Any, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        if isinstance(content, Mapping):
            if content.get("type") == "audio":
                yield where, content
        elif isinstance(content, Sequence) and not isinstance(content, (str, bytes, bytearray)):
            for i, part in enumerate(content):
                yield from walk(part, f"{where}, part {i}")

    for i, message in enumerate(messages):
        yield from walk(message["content"], f"message {i}")


def render_chat_prompt(
    messages: Sequence[Mapping[str, Any]],
    audio_to_text: AudioToText | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render messages in the Step chat format (BOS is added later by the tokenizer).

    ``[{"role": "user", "content": "hi"}]`` ->
    ``"<|BOT|>human\\nhi<|EOT|><|BOT|>assistant\\n"``.

    A last message ``{"role": "assistant", "content": None}`` leaves the assistant turn open, as
    upstream's ``apply_chat_template`` does: it is written as ``<|BOT|>assistant\\n`` (no ``<|EOT|>``)
    and no second assistant header follows, whatever ``add_generation_prompt`` says; the prompt is then
    the same as without that message.  An assistant message with content as the last message is a
    closed turn (``...<|EOT|>``), followed by the generation prompt as usual.

    Every message is checked (:func:`check_messages`) before the first audio part is tokenized.

    Raises:
        PromptError: no messages, a message without role/content, an unknown role, ``content: None``
            anywhere but in a last assistant message, or a malformed part (naming message and part).
    """
    check_messages(messages, audio_tokenizer_configured=audio_to_text is not None)
    pieces: list[str] = []
    for i, message in enumerate(messages):
        role = CHAT_ROLES[message["role"]]
        if message["content"] is None:  # an open last assistant turn (checked above)
            pieces.append(f"<|BOT|>{role}\n")  # the open turn is the generation prompt (upstream: no <|EOT|>)
            return "".join(pieces)
        text = message_content_to_text(message["content"], audio_to_text, where=f"message {i}")
        pieces.append(f"<|BOT|>{role}\n{text}<|EOT|>")
    if add_generation_prompt:
        pieces.append("<|BOT|>assistant\n")
    return "".join(pieces)
