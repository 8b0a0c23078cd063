"""The TTS-3B sampling rules: the pure torch functions, the transformers processors and the vLLM processor state.

The vLLM logits processor delegates everything per request to ``SlotRules`` (Model Runner V2) and
``BatchRules`` (V1 runner); both are checked here against the transformers processors on random batches,
so the two engines forbid the same ids.  No vLLM is needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stepaudio.errors import InvalidArgumentError
from stepaudio.llm.backends.base import SamplingSettings
from stepaudio.llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES
from stepaudio.tts.sampling import (
    RepetitionAwareLogitsProcessor,
    audio_tokens_only_mask,
    forbid_repeated_last_,
    last_tokens,
    repetition_blocked,
)
from stepaudio.tts.tts import AudioTokensOnlyLogitsProcessor
from stepaudio.vllm.tts_rules import EXTRA_ARGS_KEY, BatchRules, SlotRules, TTSRules

VOCAB = 74752  # the official Step-1 vocabulary


def _original_repetition_rule(input_ids: torch.Tensor, scores: torch.Tensor, window: int, max_ratio: float):
    """The processor's body before the rule moved into pure functions (the behaviour to keep)."""
    recent = input_ids[:, -window:]
    last = recent[:, -1]
    repeats = (recent == last[:, None]).sum(dim=-1)
    blocked = repeats / window > max_ratio
    if blocked.any():
        rows = blocked.nonzero(as_tuple=True)[0]
        scores = scores.clone()
        scores[rows, last[rows]] = float("-inf")
    return scores


def _random_sequences(generator: torch.Generator, count: int, longest: int, alphabet: int = 4) -> list[torch.Tensor]:
    """Sequences of a few audio ids (so repeats are frequent), of lengths 1..longest."""
    lengths = torch.randint(1, longest + 1, (count,), generator=generator)
    return [
        torch.randint(AUDIO_TOKEN_OFFSET, AUDIO_TOKEN_OFFSET + alphabet, (int(n),), generator=generator)
        for n in lengths
    ]


def _reference(sequences: list[torch.Tensor], logits: torch.Tensor, rules: list[TTSRules]) -> torch.Tensor:
    """What the transformers processors (in StepAudioTTS's order) make of each row."""
    expected = logits.clone()
    for row, (sequence, rule) in enumerate(zip(sequences, rules, strict=True)):
        scores = expected[row : row + 1]
        if rule.audio_tokens_only:
            scores = AudioTokensOnlyLogitsProcessor(logits.shape[-1])(sequence[None], scores)
        if rule.repetition_window is not None:
            processor = RepetitionAwareLogitsProcessor(rule.repetition_window, rule.repetition_max_ratio)
            scores = processor(sequence[None], scores)
        expected[row] = scores[0]
    return expected


RULES = [
    TTSRules(True, 10, 0.1),
    TTSRules(),
    TTSRules(False, 3, 0.3),
    TTSRules(True, None),
    TTSRules(True, 15, 0.1),
    TTSRules(False, 10, 0.2),
    TTSRules(False, 1, 0.0),
    TTSRules(True, 4, 0.25),
]


def test_audio_tokens_only_mask_allows_audio_ids_and_eot():
    mask = audio_tokens_only_mask(VOCAB, "cpu", torch.bfloat16)
    assert mask.shape == (VOCAB,) and mask.dtype == torch.bfloat16
    allowed = torch.zeros(VOCAB, dtype=torch.bool)
    allowed[AUDIO_TOKEN_OFFSET : AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES] = True
    allowed[EOT_ID] = True
    assert torch.all(mask[allowed] == 0.0)
    assert torch.all(mask[~allowed] == float("-inf"))
    assert int(allowed.sum()) == NUM_AUDIO_CODES + 1


def test_audio_tokens_only_mask_equals_the_transformers_processor():
    processor = AudioTokensOnlyLogitsProcessor(VOCAB)
    for dtype in (torch.float32, torch.float16):
        assert torch.equal(
            audio_tokens_only_mask(VOCAB, "cpu", dtype), processor.additive_mask(torch.device("cpu"), dtype)
        )


@pytest.mark.parametrize("window, max_ratio", [(10, 0.1), (3, 0.3), (1, 0.0), (5, 0.2), (10, 1.0)])
def test_repetition_processor_keeps_its_behaviour(window, max_ratio):
    generator = torch.Generator().manual_seed(window)
    processor = RepetitionAwareLogitsProcessor(window, max_ratio)
    for length in (1, window - 1, window, window + 7):
        if length < 1:
            continue
        input_ids = torch.randint(0, 3, (16, length), generator=generator)
        scores = torch.randn(16, 8, generator=generator)
        result = processor(input_ids, scores)
        expected = _original_repetition_rule(input_ids, scores, window, max_ratio)
        assert torch.equal(result, expected)
        # Nothing blocked: the very same tensor comes back; something blocked: the input is left untouched.
        assert (result is scores) == bool(torch.isfinite(result).all())


def test_repetition_blocked_counts_only_valid_columns():
    recent = torch.tensor([[5, 7, 7], [5, 7, 7], [1, 2, 3]])
    valid = torch.tensor([[True, True, True], [False, False, True], [True, True, True]])
    assert repetition_blocked(recent, 3, 0.5).tolist() == [True, True, False]
    assert repetition_blocked(recent, 3, 0.4, valid).tolist() == [True, False, False]


def test_last_tokens_takes_the_tail_of_each_row():
    table = torch.tensor([[1, 2, 3, 4, 0], [9, 8, 0, 0, 0]], dtype=torch.int32)
    ids, valid = last_tokens(table, torch.tensor([4, 2]), 3)
    assert ids.tolist() == [[2, 3, 4], [9, 9, 8]]
    assert valid.tolist() == [[True, True, True], [False, True, True]]


def test_sync_free_rule_equals_the_processor_on_random_batches():
    generator = torch.Generator().manual_seed(1)
    for window, max_ratio in ((10, 0.1), (4, 0.25), (7, 0.3)):
        sequences = _random_sequences(generator, 12, 25)
        table = torch.zeros(12, 32, dtype=torch.int64)
        for row, sequence in enumerate(sequences):
            table[row, : len(sequence)] = sequence
        lengths = torch.tensor([len(s) for s in sequences])
        logits = torch.randn(12, VOCAB, generator=generator)
        ids, valid = last_tokens(table, lengths, window)
        result = forbid_repeated_last_(logits.clone(), ids, window, max_ratio, valid)
        rule = TTSRules(False, window, max_ratio)
        assert torch.equal(result, _reference(sequences, logits, [rule] * 12))


def test_slot_rules_equal_the_transformers_processors():
    """Model Runner V2 layout: a token table per slot, rows mapped to slots in any order, mixed rules."""
    generator = torch.Generator().manual_seed(2)
    sequences = _random_sequences(generator, len(RULES), 30)
    slots = np.array([7, 2, 5, 0, 9, 3, 11, 4])
    table = torch.zeros(12, 40, dtype=torch.int32)
    lengths = torch.zeros(12, dtype=torch.int32)
    state = SlotRules(12)
    state.add(1, TTSRules(True, 10, 0.1))  # a previous occupant of a slot that is reused below
    for row, (sequence, rule) in enumerate(zip(sequences, RULES, strict=True)):
        slot = int(slots[row])
        table[slot, : len(sequence)] = sequence.to(torch.int32)
        lengths[slot] = len(sequence)
        assert state.add(slot, rule) is rule.active
    state.add(1, TTSRules())
    logits = torch.randn(len(RULES), VOCAB, generator=generator)
    result = state.apply(logits.clone(), slots, torch.from_numpy(slots).to(torch.int32), table, lengths)
    assert torch.equal(result, _reference(sequences, logits, RULES))
    # A batch of one slot without rules is left as it was.
    untouched = torch.randn(1, VOCAB, generator=generator)
    assert torch.equal(state.apply(untouched.clone(), np.array([1]), torch.tensor([1]), table, lengths), untouched)


def test_batch_rules_follow_adds_moves_and_growing_outputs():
    """V1 runner layout: prompt and live output lists per batch index, updated by removed/added/moved."""
    generator = torch.Generator().manual_seed(3)
    sequences = _random_sequences(generator, len(RULES), 30)
    outputs = [sequence[len(sequence) // 2 :].tolist() for sequence in sequences]
    prompts = [sequence[: len(sequence) // 2].tolist() for sequence in sequences]
    state = BatchRules()
    state.update([], [(row, rule, prompts[row], outputs[row]) for row, rule in enumerate(RULES)], [])
    assert len(state) == sum(rule.active for rule in RULES)
    logits = torch.randn(len(RULES), VOCAB, generator=generator)
    assert torch.equal(state.apply(logits.clone()), _reference(sequences, logits, RULES))

    # The engine appends to the output lists it handed over; the state sees the new ids.
    for row, output in enumerate(outputs):
        output.extend([AUDIO_TOKEN_OFFSET + 1] * (row % 3))
    grown = [torch.tensor(prompts[row] + outputs[row]) for row in range(len(RULES))]
    assert torch.equal(state.apply(logits.clone()), _reference(grown, logits, RULES))

    # Remove row 1, swap rows 0 and 2, move row 4 to 1: rules and histories travel with their requests.
    state.update([1], [], [(0, 2, True), (4, 1, False)])
    order = [2, 4, 0, 3, None, 5, 6, 7]
    moved_rules = [RULES[i] if i is not None else TTSRules() for i in order]
    moved_sequences = [grown[i] if i is not None else grown[0] for i in order]
    assert torch.equal(state.apply(logits.clone()), _reference(moved_sequences, logits, moved_rules))

    # A request without rules added over an index clears it.
    state.update([], [(0, TTSRules(), prompts[0], outputs[0])], [])
    moved_rules[0] = TTSRules()
    assert torch.equal(state.apply(logits.clone()), _reference(moved_sequences, logits, moved_rules))


def test_batch_rules_need_prompt_ids_for_the_repetition_rule():
    state = BatchRules()
    state.update([], [(0, TTSRules(True, None), None, [])], [])
    assert len(state) == 1
    with pytest.raises(InvalidArgumentError, match="repetition_window needs a token-id prompt"):
        state.update([], [(1, TTSRules(False, 10, 0.1), None, [])], [])


def test_tts_rules_from_extra_args():
    tts3b = TTSRules(True, 10, 0.1)
    assert TTSRules.from_extra_args(None) == TTSRules()
    assert TTSRules.from_extra_args({"other_plugin": 3}) == TTSRules()
    for value in (1, True):
        assert TTSRules.from_extra_args({EXTRA_ARGS_KEY: value}) == tts3b
    for value in (0, False, None):
        assert TTSRules.from_extra_args({EXTRA_ARGS_KEY: value}) == TTSRules()
    as_dict = {"audio_tokens_only": False, "repetition_window": 4, "repetition_max_ratio": 0.5}
    assert TTSRules.from_extra_args({EXTRA_ARGS_KEY: as_dict}) == TTSRules(False, 4, 0.5)
    assert TTSRules.from_extra_args({EXTRA_ARGS_KEY: json.dumps(as_dict)}) == TTSRules(False, 4, 0.5)
    assert TTSRules.from_extra_args({EXTRA_ARGS_KEY: '{"audio_tokens_only": 1, "repetition_window": 0}'}) == TTSRules(
        True, None
    )


def test_tts_rules_round_trip_through_settings_and_extra_args():
    settings = SamplingSettings(max_new_tokens=8, audio_tokens_only=True, repetition_window=10)
    rules = TTSRules.from_settings(settings)
    assert rules == TTSRules(True, 10, 0.1)
    extra_args = rules.to_extra_args()
    assert list(extra_args) == [EXTRA_ARGS_KEY] and isinstance(extra_args[EXTRA_ARGS_KEY], str)
    assert TTSRules.from_extra_args(extra_args) == rules
    assert TTSRules.from_settings(SamplingSettings(max_new_tokens=8)).to_extra_args() == {}


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (
            {EXTRA_ARGS_KEY: 2},
            "extra_args['stepaudio_tts'] must be true/false or 1/0, got 2",
        ),
        (
            {EXTRA_ARGS_KEY: "{audio"},
            "extra_args['stepaudio_tts'] must be 1/true (the TTS-3B rules), 0/false, or a JSON object with "
            "audio_tokens_only, repetition_window, repetition_max_ratio; the string is not JSON (",
        ),
        (
            {EXTRA_ARGS_KEY: {"window": 3}},
            "extra_args['stepaudio_tts'] must be 1/true (the TTS-3B rules), 0/false, or a JSON object with "
            "audio_tokens_only, repetition_window, repetition_max_ratio; unknown field(s) window",
        ),
        (
            {EXTRA_ARGS_KEY: {"repetition_window": -1}},
            "extra_args['stepaudio_tts'].repetition_window must be a whole number 0 or more, got -1; "
            "0 or null turns the rule off",
        ),
        (
            {EXTRA_ARGS_KEY: {"repetition_max_ratio": 1.5}},
            "extra_args['stepaudio_tts'].repetition_max_ratio must be a number from 0.0 to 1.0, got 1.5",
        ),
        (
            {EXTRA_ARGS_KEY: {"audio_tokens_only": "yes"}},
            "extra_args['stepaudio_tts'].audio_tokens_only must be true/false or 1/0, got 'yes'",
        ),
        (
            {"stepaudio_audio_only": 1},
            "extra_args['stepaudio_audio_only'] is not a stepaudio sampling key; the TTS rules go under "
            "'stepaudio_tts'",
        ),
    ],
)
def test_tts_rules_refuse_malformed_extra_args(extra_args, message):
    with pytest.raises(InvalidArgumentError) as caught:
        TTSRules.from_extra_args(extra_args)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError)  # vLLM answers a ValueError of validate_params with HTTP 400
