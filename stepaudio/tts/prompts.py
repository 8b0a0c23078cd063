"""Prompts of the Step-Audio-TTS-3B speech decoder LM: system prompts, instruction tags, token id layout.

A TTS prompt is a short conversation that shows the model one example of the voice, then asks for
the target text::

    [BOS]
    <|BOT|> E("system\\n" + system prompt)  <|EOT|>
    <|BOT|> E("human\\n")  T(prompt text)   <|EOT|>
    <|BOT|> E("assistant\\n") prompt audio ids <|EOT|>
    <|BOT|> E("human\\n")  T(target text)   <|EOT|>
    <|BOT|> E("assistant\\n")                      <- the model continues with audio ids

``E(s)`` is the tokenizer's ``encode(s)``, which starts with BOS (the as-run upstream behaviour, so
the sequence reads ``1, 4, 1, ...``); ``T(s)`` encodes ``"\\n" + s`` and drops the ids of ``"\\n"``
alone, which removes BOS and the dummy-prefix piece so the text tokenizes as it does mid-sentence.

The system prompts are the model's training prompts and are used byte-exactly
(``system_prompts.json`` beside this file).  A leading ``(tag)`` or ``（tag）`` selects emotion,
dialect, speed or music style; ``RAP`` and ``哼唱`` (humming) switch to the music system prompts and
the ``CosyVoice-300M-25Hz-Music`` decoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..errors import PromptError
from ..llm.text_tokenizer import BOT_ID, EOT_ID

__all__ = [
    "KNOWN_INSTRUCTIONS",
    "MUSIC_INSTRUCTIONS",
    "SPEECH_DECODER",
    "MUSIC_DECODER",
    "TTSRequestPlan",
    "build_tts_prompt_ids",
    "leading_instruction",
    "plan_tts_request",
    "system_prompts",
]

#: Instructions that select the music system prompts and decoder.
MUSIC_INSTRUCTIONS = frozenset({"RAP", "哼唱"})
#: Sub-folders of Step-Audio-TTS-3B holding the speech and the music (RAP / humming) decoders.
SPEECH_DECODER = "CosyVoice-300M-25Hz"
MUSIC_DECODER = "CosyVoice-300M-25Hz-Music"

# A bracket group at the very start of the text, ASCII or full-width parentheses, no nested brackets.
# Upstream matches `^(...).*$` without DOTALL, which misses the tag when the text has a line break; this
# pattern only looks at the start, so multi-line texts keep their tag.
_LEADING_TAG = re.compile(r"^[（(]([^()（）]*)[）)]")


@lru_cache(maxsize=1)
def system_prompts() -> dict[str, str]:
    """The TTS-3B training system prompts, byte-exact (keys as in upstream ``tts.py``)."""
    path = Path(__file__).with_name("system_prompts.json")
    return dict(json.loads(path.read_text(encoding="utf-8"))["prompts"])


def _listed_instructions() -> tuple[str, ...]:
    """The tags the system prompt lists (its ``- "高兴1"`` lines), in prompt order."""
    return tuple(re.findall(r'^- "([^"]+)"$', system_prompts()["sys_prompt_wo_spk"], flags=re.MULTILINE))


#: The instruction tags the TTS-3B system prompt lists, in its order: emotion (``高兴1 高兴2 生气1 生气2
#: 悲伤1 撒娇1``), language or dialect (``中文 英文 韩语 日语 四川话 粤语 广东话``), music (``RAP 哼唱``)
#: and speed (``慢速1 慢速2 快速1 快速2``).
#: Parsed from the prompt itself, so the list and the model's prompt cannot drift apart.
KNOWN_INSTRUCTIONS: tuple[str, ...] = _listed_instructions()


def leading_instruction(text: str) -> str | None:
    """The instruction of a leading ``(tag)``/``（tag）`` group, without brackets, or ``None``.

    ``"(高兴1)今天真好"`` -> ``"高兴1"``; ``"（RAP）..."`` -> ``"RAP"``; ``"今天(高兴1)"`` -> ``None``.
    """
    match = _LEADING_TAG.match(text)
    return match.group(1) if match else None


@dataclass(frozen=True)
class TTSRequestPlan:
    """What one TTS request uses: system prompt, decoder folder and the speaker whose prompt is shown.

    Attributes:
        system_prompt: the system prompt text (byte-exact).
        decoder: ``CosyVoice-300M-25Hz`` or ``CosyVoice-300M-25Hz-Music``.
        prompt_speaker: the registered speaker whose prompt audio/text to use (``Tingting``,
            ``TingtingRAP``, ``Tingting哼唱``, ...), or ``None`` when cloning from a given prompt.
        instruction: the leading tag of the text, if any.
    """

    system_prompt: str
    decoder: str
    prompt_speaker: str | None
    instruction: str | None


def plan_tts_request(text: str, speaker: str | None) -> TTSRequestPlan:
    """Choose system prompt, decoder and prompt speaker for ``text`` (upstream ``tts.py`` rules).

    Args:
        text: the target text, possibly starting with a ``(tag)``.
        speaker: a registered speaker id, or ``None`` for zero-shot cloning.

    Raises:
        PromptError: the text is empty or consists of a tag only.
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptError("TTS text is empty: give the text to speak, optionally starting with a (tag)")
    instruction = leading_instruction(text)
    if instruction is not None and not _LEADING_TAG.sub("", text, count=1).strip():
        raise PromptError(f"TTS text {text!r} is only the tag ({instruction}); add the text to speak after it")
    prompts = system_prompts()
    if instruction in MUSIC_INSTRUCTIONS:
        system = prompts["sys_prompt_for_vocal"] if "哼唱" in text else prompts["sys_prompt_for_rap"]
        prompt_speaker = None if speaker is None else f"{speaker}{instruction}"
        return TTSRequestPlan(system, MUSIC_DECODER, prompt_speaker, instruction)
    if speaker is None:
        return TTSRequestPlan(prompts["sys_prompt_wo_spk"], SPEECH_DECODER, None, instruction)
    return TTSRequestPlan(prompts["sys_prompt_with_spk"].format(speaker), SPEECH_DECODER, speaker, instruction)


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """``T(s)``: ids of ``s`` as it tokenizes after a line break (no BOS, no dummy-prefix piece)."""
    newline_only = tokenizer.encode("\n")
    return tokenizer.encode("\n" + text)[len(newline_only) :]


def build_tts_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str,
    prompt_text: str,
    prompt_audio_ids: Sequence[int],
    target_text: str,
) -> list[int]:
    """The TTS-3B prompt ids, laid out exactly as upstream (see the module docstring).

    Args:
        tokenizer: the Step tokenizer of the TTS-3B folder (``encode`` adds BOS).
        system_prompt: from :func:`plan_tts_request`.
        prompt_text: transcript of the voice prompt.
        prompt_audio_ids: the voice prompt's interleaved audio ids (``65536 + N``).
        target_text: the text to speak.
    """
    encode = tokenizer.encode
    ids = [tokenizer.bos_token_id]
    ids += [BOT_ID] + encode("system\n" + system_prompt) + [EOT_ID]
    ids += [BOT_ID] + encode("human\n") + _text_ids(tokenizer, prompt_text) + [EOT_ID]
    ids += [BOT_ID] + encode("assistant\n") + list(prompt_audio_ids) + [EOT_ID]
    ids += [BOT_ID] + encode("human\n") + _text_ids(tokenizer, target_text) + [EOT_ID]
    ids += [BOT_ID] + encode("assistant\n")
    return ids
