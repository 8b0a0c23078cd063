"""TTS-3B prompt building: system prompts, tags, id layout, repetition-aware sampling."""

import json

import pytest
import sentencepiece as spm
import torch

from stepaudio.errors import PromptError
from stepaudio.llm.text_tokenizer import load_text_tokenizer
from stepaudio.tts import (
    MUSIC_DECODER,
    SPEECH_DECODER,
    RepetitionAwareLogitsProcessor,
    build_tts_prompt_ids,
    leading_instruction,
    plan_tts_request,
    system_prompts,
)

PROMPT_TEXT = "那等我们到海洋馆之后，给妈妈买个礼物，好不好呀？"
PROMPT_AUDIO = [65536 + 5, 65536 + 1000, 65536 + 1024 + 7, 65536 + 1024 + 4095, 65536 + 1024]


@pytest.fixture(scope="module")
def tokenizer(tiny_tts_lm_dir):
    return load_text_tokenizer(tiny_tts_lm_dir)


@pytest.fixture(scope="module")
def raw_sentencepiece(tiny_tts_lm_dir):
    return spm.SentencePieceProcessor(model_file=str(tiny_tts_lm_dir / "tokenizer.model"))


def test_system_prompts_are_byte_exact(shared_audio_dir):
    reference = json.loads((shared_audio_dir.parent / "reference" / "tts_system_prompts.json").read_bytes())
    assert system_prompts() == reference["prompts"]
    assert system_prompts()["sys_prompt_with_spk"].count("{}") == 1


@pytest.mark.parametrize(
    ("text", "instruction"),
    [
        ("(高兴1)今天天气真好", "高兴1"),
        ("（悲伤1）我不想去", "悲伤1"),
        ("(四川话）要得", "四川话"),
        ("(RAP)line one\nline two", "RAP"),
        ("今天(高兴1)天气真好", None),
        (" (高兴1)leading space", None),
        ("(a(b))nested", None),
        ("no tag", None),
    ],
)
def test_leading_instruction(text, instruction):
    assert leading_instruction(text) == instruction


def test_plans_for_speaker_clone_rap_and_humming():
    prompts = system_prompts()
    plan = plan_tts_request("(高兴1)你好", "Tingting")
    assert (plan.system_prompt, plan.decoder, plan.prompt_speaker, plan.instruction) == (
        prompts["sys_prompt_with_spk"].format("Tingting"),
        SPEECH_DECODER,
        "Tingting",
        "高兴1",
    )
    assert "使用[Tingting]的声音" in plan.system_prompt
    clone = plan_tts_request("你好", None)
    assert (clone.system_prompt, clone.decoder, clone.prompt_speaker) == (
        prompts["sys_prompt_wo_spk"],
        SPEECH_DECODER,
        None,
    )
    rap = plan_tts_request("(RAP)远远甩开的笑", "Tingting")
    assert (rap.system_prompt, rap.decoder, rap.prompt_speaker) == (
        prompts["sys_prompt_for_rap"],
        MUSIC_DECODER,
        "TingtingRAP",
    )
    humming = plan_tts_request("（哼唱）你从一座叫我的小镇经过", "Tingting")
    assert (humming.system_prompt, humming.decoder, humming.prompt_speaker) == (
        prompts["sys_prompt_for_vocal"],
        MUSIC_DECODER,
        "Tingting哼唱",
    )
    # RAP tag but humming mentioned in the text: upstream picks the vocal prompt.
    assert plan_tts_request("(RAP)我们一起哼唱", "Tingting").system_prompt == prompts["sys_prompt_for_vocal"]
    assert plan_tts_request("(RAP)clone rap", None).prompt_speaker is None


@pytest.mark.parametrize("text", ["", "   ", "(高兴1)", "（RAP） ", None])
def test_empty_or_tag_only_text_is_rejected(text):
    with pytest.raises(PromptError):
        plan_tts_request(text, "Tingting")


def _expected_ids(sp, system: str, prompt_text: str, prompt_audio: list[int], target: str) -> list[int]:
    """Hand-assembled layout with raw sentencepiece: E(s) = BOS + pieces; T(s) = pieces of s after a newline."""
    newline = sp.encode("\n")
    assert len(newline) == 2  # '▁' and the newline byte piece

    def E(s):
        return [1] + sp.encode(s)

    def T(s):
        return sp.encode("\n" + s)[len(newline) :]

    return (
        [1]
        + [4]
        + E("system\n" + system)
        + [3]
        + [4]
        + E("human\n")
        + T(prompt_text)
        + [3]
        + [4]
        + E("assistant\n")
        + prompt_audio
        + [3]
        + [4]
        + E("human\n")
        + T(target)
        + [3]
        + [4]
        + E("assistant\n")
    )


@pytest.mark.parametrize(
    ("text", "speaker"),
    [
        ("今天天气真好", "Tingting"),  # built-in speaker
        ("(高兴1)今天天气真好", "Tingting"),  # emotion tag, kept in the text
        ("The quick brown fox.", None),  # zero-shot clone
        ("(RAP)远远甩开的笑", "Tingting"),  # RAP
        ("（哼唱）你从一座叫我的小镇经过", "Tingting"),  # humming
    ],
)
def test_prompt_id_layout_matches_hand_built_lists(tokenizer, raw_sentencepiece, text, speaker):
    plan = plan_tts_request(text, speaker)
    ids = build_tts_prompt_ids(tokenizer, plan.system_prompt, PROMPT_TEXT, PROMPT_AUDIO, text)
    assert ids == _expected_ids(raw_sentencepiece, plan.system_prompt, PROMPT_TEXT, PROMPT_AUDIO, text)
    # As-run upstream: a BOS after every <|BOT|>, and the prompt audio verbatim in the assistant turn.
    assert ids[:3] == [1, 4, 1] and ids.count(4) == 5 and ids.count(3) == 4
    start = ids.index(PROMPT_AUDIO[0])
    assert ids[start : start + len(PROMPT_AUDIO)] + [3] == PROMPT_AUDIO + [3]
    assert tokenizer.decode(ids, skip_special_tokens=True).count(text) == 1


def test_repetition_aware_processor_blocks_only_over_repeated_last_token():
    processor = RepetitionAwareLogitsProcessor()
    scores = torch.zeros(3, 10)
    input_ids = torch.tensor(
        [
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7],  # 7 twice in the last 10: blocked
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0],  # 0 once in the last 10 (the first 0 is outside): allowed
            [7, 2, 3, 4, 5, 6, 1, 8, 9, 2, 7],  # the first 7 is outside the window: allowed
        ]
    )
    out = processor(input_ids, scores.clone())
    assert out[0, 7] == float("-inf") and torch.isfinite(out[0, :7]).all()
    assert torch.isfinite(out[1]).all() and torch.isfinite(out[2]).all()
    assert torch.equal(scores, torch.zeros(3, 10))  # input not modified in place
