"""Prompts of Step-Audio-EditX: system prompts, edit instructions and the token id layout, byte-exact.

Two conversations, both ending where the model continues with audio ids (``65536 + N``)::

    clone:  [BOS] <|BOT|> E("system\\n" + CLONE_SYSTEM(speaker, prompt text, prompt audio tokens)) <|EOT|>
                  <|BOT|> E("human\\n") T(target text) <|EOT|>
                  <|BOT|> E("assistant\\n")

    edit:   [BOS] <|BOT|> E("system\\n" + EDIT_SYSTEM) <|EOT|>
                  <|BOT|> E("human\\n") E(instruction + "\\n" + audio tokens + "\\n") <|EOT|>
                  <|BOT|> E("assistant\\n")

``E(s)`` is the Step tokenizer's ``encode(s)`` (it starts with BOS, as the original ran it);
``T(s)`` encodes ``"\\n" + s`` and drops the ids of ``"\\n"`` alone.  Audio tokens are written as
the ``<audio_N>`` string inside the text (each is one piece of the tokenizer); in the clone
prompt they sit in the *system* prompt, not in an assistant turn as in TTS-3B.

The strings are the model's training prompts: every space and line break matters (the clone template
has a space before two of its line breaks), so they are spelled out with explicit escapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..llm.text_tokenizer import BOT_ID, EOT_ID
from ..tokenizer.interleave import ids_to_string
from .edit_config import LANGUAGES, EditRequest

__all__ = [
    "CLONE_SYSTEM_PROMPT_TEMPLATE",
    "EDIT_SYSTEM_PROMPT",
    "DENOISE_INSTRUCTION",
    "VAD_INSTRUCTION",
    "build_clone_prompt_ids",
    "build_edit_prompt_ids",
    "clone_speaker_id",
    "clone_system_prompt",
    "edit_instruction",
    "with_language",
]

#: System prompt of zero-shot cloning (``str.format`` fields ``speaker``, ``prompt_text``, ``prompt_wav_tokens``).
CLONE_SYSTEM_PROMPT_TEMPLATE = (
    "Generate audio with the following timbre, prosody and speaking style\n"
    "\n"
    "[speaker_start]\n"
    "speaker name: {speaker}\n"
    "speaker prompt text: \n"
    "{prompt_text}\n"
    "speaker audio tokens: \n"
    "{prompt_wav_tokens}\n"
    "[speaker_end]\n"
)

#: System prompt of every edit.
EDIT_SYSTEM_PROMPT = (
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user instructions and "
    "applying precise adjustments to meet their needs. Your expertise spans a wide range of enhancement "
    "capabilities, including but not limited to:\n"
    "# Emotional Enhancement\n"
    "# Speaking Style Transfer\n"
    "# Non-linguistic Adjustments\n"
    "# Audio Tuning & Editing\n"
    "Note: You will receive instructions in natural language and are expected to accurately interpret and execute "
    "the most suitable audio edits and enhancements.\n"
)

DENOISE_INSTRUCTION = (
    "Remove any noise from the given audio while preserving the voice content clearly. Ensure that the speech "
    "quality remains intact with minimal distortion, and eliminate all noise from the audio.\n"
)
VAD_INSTRUCTION = (
    "Remove any silent portions from the given audio while preserving the voice content clearly. Ensure that the "
    "speech quality remains intact with minimal distortion, and eliminate all silence from the audio.\n"
)


def edit_instruction(request: EditRequest) -> str:
    """The human turn's instruction for a checked edit request (the transcript is stripped, as the original does)."""
    audio_text = request.audio_text.strip()
    kind, info = request.edit_type, request.edit_info
    if kind in ("emotion", "speed"):
        if info == "remove":  # only emotion lists "remove"; the original shares the branch with speed
            return f"Remove any emotion in the following audio and the reference text is: {audio_text}\n"
        return f"Make the following audio more {info}. The text corresponding to the audio is: {audio_text}\n"
    if kind == "style":
        if info == "remove":
            return f"Remove any speaking styles in the following audio and the reference text is: {audio_text}\n"
        return f"Make the following audio more {info} style. The text corresponding to the audio is: {audio_text}\n"
    if kind == "denoise":
        return DENOISE_INSTRUCTION
    if kind == "vad":
        return VAD_INSTRUCTION
    if kind == "paralinguistic":
        return (
            f"Add some non-verbal sounds to make the audio more natural, the new text is : {request.text}\n"
            f"  The text corresponding to the audio is: {audio_text}\n"
        )
    raise ValueError(f"unchecked edit type {kind!r}: pass the request through check_edit_request first")


def clone_system_prompt(speaker: str, prompt_text: str, prompt_audio_ids: Sequence[int]) -> str:
    """The clone system prompt with the voice's name, transcript and ``<audio_N>`` tokens filled in."""
    return CLONE_SYSTEM_PROMPT_TEMPLATE.format(
        speaker=speaker, prompt_text=prompt_text, prompt_wav_tokens=ids_to_string(prompt_audio_ids)
    )


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``T(s)``: ids of ``s`` as it tokenizes after a line break (no BOS, no dummy-prefix piece)."""
    return tokenizer.encode("\n" + text)[len(tokenizer.encode("\n")) :]


def build_clone_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    speaker: str,
    prompt_text: str,
    prompt_audio_ids: Sequence[int],
    target_text: str,
) -> list[int]:
    """Prompt ids of zero-shot cloning (layout in the module docstring).

    Args:
        tokenizer: the Step tokenizer of the Step-Audio-EditX folder (``encode`` adds BOS).
        speaker: the voice's name in the system prompt (the original uses :func:`clone_speaker_id`).
        prompt_text: transcript of the voice prompt clip.
        prompt_audio_ids: the clip's interleaved audio ids (``65536 + N``).
        target_text: the text to speak (with its language prefix, if any).
    """
    system = clone_system_prompt(speaker, prompt_text, prompt_audio_ids)
    ids = [tokenizer.bos_token_id]
    ids += [BOT_ID] + tokenizer.encode("system\n" + system) + [EOT_ID]
    ids += [BOT_ID] + tokenizer.encode("human\n") + _text_ids(tokenizer, target_text) + [EOT_ID]
    ids += [BOT_ID] + tokenizer.encode("assistant\n")
    return ids


def build_edit_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, request: EditRequest, audio_ids: Sequence[int]
) -> list[int]:
    """Prompt ids of one edit of the audio whose interleaved ids are ``audio_ids`` (layout in the module docstring)."""
    human = f"{edit_instruction(request)}\n{ids_to_string(audio_ids).strip()}\n"
    ids = [tokenizer.bos_token_id]
    ids += [BOT_ID] + tokenizer.encode("system\n" + EDIT_SYSTEM_PROMPT) + [EOT_ID]
    ids += [BOT_ID] + tokenizer.encode("human\n") + tokenizer.encode(human) + [EOT_ID]
    ids += [BOT_ID] + tokenizer.encode("assistant\n")
    return ids


def clone_speaker_id(prompt_text: str, samples: np.ndarray) -> str:
    """The original's name for a cloned voice: ``clone_`` + the first 16 hex digits of a SHA-256.

    The hash covers the transcript's UTF-8 bytes, then the float32 bytes of the clip as read from the
    file (all channels, ``[C, T]`` flattened row by row): its first and last 1000 values when it has
    more than 2000, else all of them.
    """
    flat = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if flat.size > 2000:
        flat = np.concatenate([flat[:1000], flat[-1000:]])
    digest = hashlib.sha256()
    digest.update(prompt_text.encode("utf-8"))
    digest.update(flat.tobytes())
    return f"clone_{digest.hexdigest()[:16]}"


def with_language(text: str, language: str | None) -> str:
    """``text`` with the ``[Language]`` prefix the model reads for a dialect or language (none added twice)."""
    if language is None or any(text.startswith(f"[{known}]") for known in LANGUAGES):
        return text
    return f"[{language}]{text}"
