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
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import AudioTokenError, PromptError
from .text_tokenizer import AUDIO_TOKEN_OFFSET, NUM_AUDIO_CODES

__all__ = [
    "ASR_INSTRUCTION",
    "CHAT_ROLES",
    "DEFAULT_VOICE_SYSTEM_PROMPT",
    "AudioToText",
    "audio_codes_to_ids",
    "audio_ids_to_codes",
    "format_audio_tokens",
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

    Raises:
        PromptError: no messages, a message without role/content, an unknown role, or ``content: None``
            anywhere but in a last assistant message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or len(messages) == 0:
        raise PromptError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    pieces: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
        role = CHAT_ROLES.get(message["role"])
        if role is None:
            raise PromptError(f"message {i} has unknown role {message['role']!r}; use one of {sorted(CHAT_ROLES)}")
        if message["content"] is None:
            if role != "assistant" or i != len(messages) - 1:
                raise PromptError(
                    f"message {i} ({message['role']}) has content None: an open turn is allowed only as the last "
                    "message, with role 'assistant'"
                )
            pieces.append(f"<|BOT|>{role}\n")  # the open turn is the generation prompt (upstream: no <|EOT|>)
            return "".join(pieces)
        text = message_content_to_text(message["content"], audio_to_text, where=f"message {i}")
        pieces.append(f"<|BOT|>{role}\n{text}<|EOT|>")
    if add_generation_prompt:
        pieces.append("<|BOT|>assistant\n")
    return "".join(pieces)
