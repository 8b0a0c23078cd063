"""The TTS-3B sampling rules as per-request vLLM arguments, and the state of the vLLM logits processor.

A request turns the rules on with one key, ``stepaudio_tts``, of ``SamplingParams.extra_args``
(in-process) or ``vllm_xargs`` (the OpenAI-compatible server, whose values may only be strings,
numbers or lists).  Its value is either

* ``1`` / ``true``: upstream's TTS-3B rules (audio ids only, repetition window 10, ratio 0.1), or
* a JSON object (a string over HTTP; a string or a dict in-process) with any of
  ``audio_tokens_only`` (bool), ``repetition_window`` (whole number >= 1, or ``0``/``null`` for off)
  and ``repetition_max_ratio`` (0..1, default 0.1);

``0`` / ``false`` or no key: no rule.  :meth:`TTSRules.to_extra_args` writes the canonical form.

Nothing here imports vLLM: the vLLM class (:mod:`.logits_processors`) only unpacks vLLM's batch
bookkeeping and delegates to :class:`SlotRules` (Model Runner V2) or :class:`BatchRules` (V1 runner).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..llm.backends.base import TTS_REPETITION_MAX_RATIO, TTS_REPETITION_WINDOW, SamplingSettings
from ..tts.sampling import audio_tokens_only_mask, forbid_repeated_last_, last_tokens
from ..validation import check_float, check_int, describe_value

__all__ = ["EXTRA_ARGS_KEY", "BatchRules", "SlotRules", "TTSRules"]

#: The ``extra_args`` / ``vllm_xargs`` key of the TTS rules.
EXTRA_ARGS_KEY = "stepaudio_tts"
_FIELDS = ("audio_tokens_only", "repetition_window", "repetition_max_ratio")
_NAME = f"extra_args[{EXTRA_ARGS_KEY!r}]"
_REQUIREMENT = "must be 1/true (the TTS-3B rules), 0/false, or a JSON object with " + ", ".join(_FIELDS)


def _flag(value: object, name: str) -> bool:
    """``True``/``False`` or ``1``/``0`` (JSON booleans may arrive as integers through ``vllm_xargs``)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidArgumentError.about(name, f"must be true/false or 1/0, got {describe_value(value)}", value)


@dataclass(frozen=True)
class TTSRules:
    """Which TTS-3B sampling rules one request uses.

    Attributes:
        audio_tokens_only: only ``<audio_N>`` ids and ``<|EOT|>`` may be sampled.
        repetition_window: the anti-loop window ``w`` (``None``: rule off).
        repetition_max_ratio: the anti-loop ratio.
    """

    audio_tokens_only: bool = False
    repetition_window: int | None = None
    repetition_max_ratio: float = TTS_REPETITION_MAX_RATIO

    @property
    def active(self) -> bool:
        """Whether any rule changes the logits."""
        return self.audio_tokens_only or self.repetition_window is not None

    @classmethod
    def from_settings(cls, settings: SamplingSettings) -> TTSRules:
        """The rules a backend's :class:`~stepaudio.llm.backends.base.SamplingSettings` ask for."""
        return cls(settings.audio_tokens_only, settings.repetition_window, settings.repetition_max_ratio)

    def to_extra_args(self) -> dict[str, str]:
        """The ``extra_args`` / ``vllm_xargs`` entry for these rules (empty when no rule is on)."""
        if not self.active:
            return {}
        rules = {
            "audio_tokens_only": self.audio_tokens_only,
            "repetition_window": self.repetition_window,
            "repetition_max_ratio": self.repetition_max_ratio,
        }
        return {EXTRA_ARGS_KEY: json.dumps(rules, separators=(",", ":"))}

    @classmethod
    def from_extra_args(cls, extra_args: Mapping[str, object] | None) -> TTSRules:
        """Read the rules of one request (see the module docstring for the accepted values).

        Raises:
            InvalidArgumentError: the value of ``stepaudio_tts`` is malformed, or another ``stepaudio_*``
                key is given (a ``ValueError``, which vLLM turns into an HTTP 400 answer).
        """
        if not extra_args:
            return cls()
        for key in extra_args:
            if isinstance(key, str) and key.startswith("stepaudio_") and key != EXTRA_ARGS_KEY:
                detail = f"is not a stepaudio sampling key; the TTS rules go under {EXTRA_ARGS_KEY!r}"
                raise InvalidArgumentError.about(f"extra_args[{key!r}]", detail, key)
        value = extra_args.get(EXTRA_ARGS_KEY)
        if value is None:
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                detail = f"{_REQUIREMENT}; the string is not JSON ({error})"
                raise InvalidArgumentError.about(_NAME, detail, value) from error
        if not isinstance(value, Mapping):
            if _flag(value, _NAME):
                return cls(True, TTS_REPETITION_WINDOW, TTS_REPETITION_MAX_RATIO)
            return cls()
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise InvalidArgumentError.about(_NAME, f"{_REQUIREMENT}; unknown field(s) {', '.join(unknown)}", value)
        audio_only = _flag(value.get("audio_tokens_only", False), f"{_NAME}.audio_tokens_only")
        window = value.get("repetition_window")
        if window is not None:
            hint = "0 or null turns the rule off"
            window = check_int(window, f"{_NAME}.repetition_window", minimum=0, hint=hint) or None
        ratio = value.get("repetition_max_ratio", TTS_REPETITION_MAX_RATIO)
        ratio = check_float(ratio, f"{_NAME}.repetition_max_ratio", minimum=0.0, maximum=1.0)
        return cls(audio_only, window, ratio)


class _MaskCache:
    """The audio-only additive mask, built once per (width, device, dtype)."""

    def __init__(self) -> None:
        self._masks: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def get(self, logits: torch.Tensor) -> torch.Tensor:
        key = (logits.shape[-1], logits.device, logits.dtype)
        if key not in self._masks:
            self._masks[key] = audio_tokens_only_mask(logits.shape[-1], logits.device, logits.dtype)
        return self._masks[key]


def _apply_audio_only(logits: torch.Tensor, rows: np.ndarray, mask: torch.Tensor) -> None:
    """Add ``mask`` to the logits ``rows`` (host indices) in place."""
    if len(rows) == logits.shape[0]:
        logits += mask
    else:
        index = torch.from_numpy(rows).to(logits.device, non_blocking=True)
        logits.index_add_(0, index, mask.expand(len(rows), -1))


def _apply_repetition(
    logits: torch.Tensor,
    rows: np.ndarray,
    ids: torch.Tensor,
    valid: torch.Tensor,
    windows: np.ndarray,
    ratios: np.ndarray,
) -> None:
    """Run the anti-loop rule on the logits ``rows`` given their trailing ids (all on ``logits.device``)."""
    device = logits.device
    window = torch.from_numpy(windows).to(device, non_blocking=True)
    ratio = torch.from_numpy(ratios).to(device, non_blocking=True)
    width = ids.shape[1]
    # A row whose window is narrower than the widest one ignores its leading columns.
    columns = torch.arange(width, device=device)[None, :]
    valid = valid & (columns >= width - window[:, None])
    if len(rows) == logits.shape[0]:
        forbid_repeated_last_(logits, ids, window, ratio, valid)
        return
    index = torch.from_numpy(rows).to(device, non_blocking=True)
    selected = logits.index_select(0, index)
    forbid_repeated_last_(selected, ids, window, ratio, valid)
    logits.index_copy_(0, index, selected)


class SlotRules:
    """Per-request-slot rules for Model Runner V2, whose token history lives in a device table.

    vLLM's V2 runner keeps every running request in a slot (``0 .. max_num_reqs - 1``) and its prompt
    and generated ids in ``all_token_ids[slot, :total_len[slot]]``; the last of them is the id fed at
    this step.  Rows of the logits follow ``idx_mapping`` (one row per request without speculative
    decoding).  Nothing is read back from the device (no host-device synchronisation).
    """

    def __init__(self, max_num_reqs: int) -> None:
        self.audio_only = np.zeros(max_num_reqs, dtype=np.bool_)
        self.window = np.zeros(max_num_reqs, dtype=np.int32)
        self.ratio = np.zeros(max_num_reqs, dtype=np.float32)
        self._masks = _MaskCache()

    def add(self, slot: int, rules: TTSRules) -> bool:
        """(Re)initialise ``slot`` for a request entering it; returns whether any rule is on."""
        self.audio_only[slot] = rules.audio_tokens_only
        self.window[slot] = rules.repetition_window or 0
        self.ratio[slot] = rules.repetition_max_ratio
        return rules.active

    def apply(
        self,
        logits: torch.Tensor,
        slots_host: np.ndarray,
        slots: torch.Tensor,
        token_ids: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Apply the rules in place.

        Args:
            logits: ``[rows, vocab]`` float logits, row ``r`` belonging to slot ``slots[r]``.
            slots_host: ``[rows]`` the same slots on the host (``ctx.idx_mapping_np``).
            slots: ``[rows]`` slots on the logits' device (``ctx.idx_mapping``).
            token_ids: ``[max_num_reqs, capacity]`` the token table (``req_states.all_token_ids.gpu``).
            lengths: ``[max_num_reqs]`` ids per slot (``req_states.total_len.gpu``).
        """
        audio = self.audio_only[slots_host]
        if audio.any():
            _apply_audio_only(logits, np.flatnonzero(audio), self._masks.get(logits))
        windows = self.window[slots_host]
        rows = np.flatnonzero(windows > 0)
        if len(rows):
            row_slots = slots[torch.from_numpy(rows).to(slots.device, non_blocking=True)].to(torch.int64)
            table = token_ids.index_select(0, row_slots)
            ids, valid = last_tokens(table, lengths.index_select(0, row_slots), int(windows[rows].max()))
            _apply_repetition(logits, rows, ids, valid, windows[rows], self.ratio[slots_host][rows])
        return logits


@dataclass
class _Entry:
    rules: TTSRules
    prompt_ids: Sequence[int]
    output_ids: Sequence[int]


class BatchRules:
    """Per-batch-index rules for vLLM's V1 model runner, which reports batch changes and hands over
    references to each request's prompt and (growing) output id lists."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._masks = _MaskCache()

    def update(
        self,
        removed: Iterable[int],
        added: Iterable[tuple[int, TTSRules, Sequence[int] | None, Sequence[int]]],
        moved: Iterable[tuple[int, int, bool]],
    ) -> None:
        """Apply one batch update, in vLLM's order: removed, added, moved.

        Args:
            removed: batch indices whose requests left.
            added: ``(index, rules, prompt ids or None, output ids)`` per new request; the output list
                is the engine's live list (it grows as tokens are generated).
            moved: ``(a, b, swap)``: the request at ``a`` moves to ``b`` (``swap``: and the one at ``b`` to ``a``).

        Raises:
            InvalidArgumentError: a request with the repetition rule has no prompt ids (an
                embeddings prompt): the rule's window covers the prompt.
        """
        for index in removed:
            self._entries.pop(index, None)
        for index, rules, prompt_ids, output_ids in added:
            if not rules.active:
                self._entries.pop(index, None)
                continue
            if prompt_ids is None and rules.repetition_window is not None:
                detail = "repetition_window needs a token-id prompt (its window covers the prompt), got embeddings"
                raise InvalidArgumentError.about(_NAME, detail)
            self._entries[index] = _Entry(rules, prompt_ids or (), output_ids)
        for source, target, swap in moved:
            first = self._entries.pop(source, None)
            second = self._entries.pop(target, None)
            if first is not None:
                self._entries[target] = first
            if swap and second is not None:
                self._entries[source] = second

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the rules in place to ``logits`` (``[batch, vocab]``, row = batch index)."""
        if not self._entries:
            return logits
        indices = sorted(self._entries)
        audio_rows = np.array([i for i in indices if self._entries[i].rules.audio_tokens_only], dtype=np.int64)
        if len(audio_rows):
            _apply_audio_only(logits, audio_rows, self._masks.get(logits))
        repeat_rows = [i for i in indices if self._entries[i].rules.repetition_window is not None]
        if repeat_rows:
            windows = np.array([self._entries[i].rules.repetition_window for i in repeat_rows], dtype=np.int32)
            ratios = np.array([self._entries[i].rules.repetition_max_ratio for i in repeat_rows], dtype=np.float32)
            width = int(windows.max())
            ids = torch.zeros((len(repeat_rows), width), dtype=torch.int64)
            valid = torch.zeros((len(repeat_rows), width), dtype=torch.bool)
            for row, index in enumerate(repeat_rows):
                tail = _tail(self._entries[index], width)
                ids[row, width - len(tail) :] = torch.tensor(tail, dtype=torch.int64)
                valid[row, width - len(tail) :] = True
            device = logits.device
            _apply_repetition(
                logits,
                np.array(repeat_rows, dtype=np.int64),
                ids.to(device, non_blocking=True),
                valid.to(device, non_blocking=True),
                windows,
                ratios,
            )
        return logits


def _tail(entry: _Entry, width: int) -> list[int]:
    """The last ``width`` ids of prompt + output without copying the whole prompt."""
    output = list(entry.output_ids[-width:])
    missing = width - len(output)
    if missing > 0 and entry.prompt_ids:
        return list(entry.prompt_ids[-missing:]) + output
    return output
