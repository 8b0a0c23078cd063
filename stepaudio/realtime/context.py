"""``ConversationContext``: the chat history of a realtime session, kept as text within a token budget.

Past user turns are held as audio ids only until their transcript is ready (the controller has them
transcribed on a worker by a pluggable :class:`Transcriber`, by default the chat model with the ASR
instruction, and hands the text to :meth:`ConversationContext.set_transcript`), then as text.  The
current user turn is always audio ids.  When the prompt would exceed the token
budget, the oldest turns are evicted first.  ``compression_ratio`` reports how many audio tokens the
transcripts replaced per text token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..llm.prompts import ASR_INSTRUCTION

logger = logging.getLogger(__name__)

__all__ = ["Transcriber", "ChatTranscriber", "ConversationContext", "HistoryTurn"]

#: Prompt tokens of one message besides its content (role header, end-of-turn).
MESSAGE_OVERHEAD_TOKENS = 3


class Transcriber(Protocol):
    """Turns the audio ids of a user turn into its transcript."""

    def transcribe(self, audio_ids: Sequence[int]) -> str:
        """The transcript of ``audio_ids`` (interleaved LLM audio ids ``65536 + N``)."""
        ...


class ChatTranscriber:
    """The default transcriber: Step-Audio-Chat itself, asked with the ASR instruction (greedy)."""

    def __init__(self, llm: Any, max_new_tokens: int = 128) -> None:
        self.llm = llm
        self.max_new_tokens = max_new_tokens

    def transcribe(self, audio_ids: Sequence[int]) -> str:
        messages = [
            {"role": "system", "content": ASR_INSTRUCTION},
            {"role": "user", "content": {"type": "audio", "audio_ids": list(audio_ids)}},
        ]
        return self.llm(messages, max_new_tokens=self.max_new_tokens, do_sample=False).strip()


@dataclass
class HistoryTurn:
    """One past turn: ``role`` "user" (audio ids, then transcript) or "assistant" (text)."""

    role: str
    turn: int
    text: str | None = None
    audio_ids: list[int] | None = None

    @property
    def transcribed(self) -> bool:
        return self.role == "user" and self.text is not None


class ConversationContext:
    """History as text under a token budget, owned by one controller (not thread-safe by design).

    Args:
        count_text_tokens: text -> number of prompt tokens (the chat tokenizer's length).
        token_budget: prompt tokens the history + current turn may use.
        system_prompt: always kept (not evicted).
        count_prompt_tokens: messages -> their exact prompt length (the chat model's ``encode_messages``);
            with ``max_prompt_tokens``, the prompt is measured after the estimate-based eviction and more
            old turns are evicted until it fits, so no reply ever fails on the model's length limit.
        max_prompt_tokens: the longest prompt the chat model takes with room for the reply
            (``max_seq_len - max_new_tokens``).
    """

    def __init__(
        self,
        count_text_tokens: Callable[[str], int],
        token_budget: int,
        system_prompt: str | None = None,
        count_prompt_tokens: Callable[[list[dict[str, Any]]], int] | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        self.count_prompt_tokens = count_prompt_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.count_text_tokens = count_text_tokens
        self.token_budget = token_budget
        self.system_prompt = system_prompt
        self.turns: list[HistoryTurn] = []
        self.evicted_turns = 0
        self._audio_tokens_transcribed = 0
        self._text_tokens_of_transcripts = 0

    # --------------------------------------------------------------------------------- history updates
    def add_user_turn(self, turn: int, audio_ids: Sequence[int]) -> None:
        """Record a finished user turn as audio ids (its transcript may follow: :meth:`set_transcript`)."""
        self.turns.append(HistoryTurn(role="user", turn=turn, audio_ids=list(audio_ids)))

    def _user_entry(self, turn: int) -> HistoryTurn | None:
        for entry in self.turns:
            if entry.role == "user" and entry.turn == turn:
                return entry
        return None  # evicted meanwhile

    def set_user_audio(self, turn: int, audio_ids: Sequence[int]) -> None:
        """Replace the audio ids of user turn ``turn`` (its final or re-tokenized ids); no-op once evicted."""
        entry = self._user_entry(turn)
        if entry is not None:
            entry.audio_ids = list(audio_ids)

    def set_transcript(self, turn: int, text: str) -> None:
        """Hold user turn ``turn`` as its transcript from now on; no-op once evicted."""
        entry = self._user_entry(turn)
        if entry is None or entry.text is not None:
            return
        entry.text = text
        self._audio_tokens_transcribed += len(entry.audio_ids or ())
        self._text_tokens_of_transcripts += self.count_text_tokens(text)

    def add_assistant_turn(self, turn: int, text: str) -> None:
        """Record what the assistant said (only the played part after a barge-in)."""
        if text.strip():
            self.turns.append(HistoryTurn(role="assistant", turn=turn, text=text))

    # ------------------------------------------------------------------------------------ prompt side
    def _turn_tokens(self, entry: HistoryTurn) -> int:
        if entry.text is not None:
            return self.count_text_tokens(entry.text) + MESSAGE_OVERHEAD_TOKENS
        return len(entry.audio_ids or ()) + MESSAGE_OVERHEAD_TOKENS

    @staticmethod
    def _message(entry: HistoryTurn) -> dict[str, Any]:
        if entry.text is not None:
            return {"role": entry.role, "content": entry.text}
        return {"role": entry.role, "content": {"type": "audio", "audio_ids": list(entry.audio_ids or ())}}

    def messages(self, current_audio_ids: Sequence[int]) -> tuple[list[dict[str, Any]], int]:
        """Messages for a reply to the current user turn, and their prompt tokens.

        Oldest turns are evicted (for good) while the estimated total exceeds the budget; then, when
        the exact prompt length can be measured, while it exceeds ``max_prompt_tokens``.  The system
        prompt and the current turn always stay.
        """
        fixed = len(current_audio_ids) + MESSAGE_OVERHEAD_TOKENS
        if self.system_prompt:
            fixed += self.count_text_tokens(self.system_prompt) + MESSAGE_OVERHEAD_TOKENS
        costs = [self._turn_tokens(entry) for entry in self.turns]
        while self.turns and fixed + sum(costs) > self.token_budget:
            self._evict_oldest(costs)
        self._drop_leading_assistant(costs)
        messages = self._assemble(current_audio_ids)
        total = fixed + sum(costs)
        if self.count_prompt_tokens is not None and self.max_prompt_tokens is not None:
            total = self.count_prompt_tokens(messages)
            while self.turns and total > self.max_prompt_tokens:
                self._evict_oldest(costs)
                self._drop_leading_assistant(costs)
                messages = self._assemble(current_audio_ids)
                total = self.count_prompt_tokens(messages)
        return messages, total

    def _evict_oldest(self, costs: list[int]) -> None:
        evicted = self.turns.pop(0)
        costs.pop(0)
        self.evicted_turns += 1
        logger.debug("context budget %d: evicted %s turn %d", self.token_budget, evicted.role, evicted.turn)

    def _drop_leading_assistant(self, costs: list[int]) -> None:
        """A history must not start with an assistant turn: drop one left over by eviction."""
        while self.turns and self.turns[0].role == "assistant":
            self.turns.pop(0)
            costs.pop(0)
            self.evicted_turns += 1

    def _assemble(self, current_audio_ids: Sequence[int]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.extend(self._message(entry) for entry in self.turns)
        messages.append({"role": "user", "content": {"type": "audio", "audio_ids": list(current_audio_ids)}})
        return messages

    def compression_ratio(self) -> float | None:
        """Audio tokens replaced per transcript token so far (``None`` before the first transcript)."""
        if self._text_tokens_of_transcripts == 0:
            return None
        return self._audio_tokens_transcribed / self._text_tokens_of_transcripts
