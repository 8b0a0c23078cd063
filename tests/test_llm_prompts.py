"""Step text tokenizer, chat prompt format and <audio_N> helpers."""

import numpy as np
import pytest

from stepaudio.errors import AudioTokenError, CheckpointError, CheckpointFileNotFoundError, PromptError
from stepaudio.llm.prompts import (
    audio_codes_to_ids,
    audio_ids_to_codes,
    format_audio_tokens,
    parse_audio_tokens,
    render_chat_prompt,
)
from stepaudio.llm.text_tokenizer import load_text_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_dir):
    return load_text_tokenizer(tiny_chat_dir)


def test_special_and_audio_ids_are_the_official_ones(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<|EOT|>", "<|BOT|>", "<audio_0>", "<audio_5119>"])
    assert ids == [0, 1, 2, 3, 4, 65536, 70655]
    assert len(tokenizer) == 74752


def test_reference_vector_structure(tokenizer):
    # Reference notes §1.5: "<s><|BOT|> assistant\n<audio_1><|EOT|>" -> [1, 4, ▁assistant, \n, 65537, 3].
    ids = tokenizer.encode("<s><|BOT|> assistant\n<audio_1><|EOT|>", add_special_tokens=False)
    assert len(ids) == 6
    assert ids[:2] == [1, 4] and ids[4:] == [65537, 3]
    assert tokenizer.convert_ids_to_tokens(ids[2]) == "▁assistant"
    assert tokenizer.decode(ids[3:4]) == "\n"


def test_encode_adds_bos_and_audio_pieces_are_single_tokens(tokenizer):
    prompt = render_chat_prompt([{"role": "user", "content": format_audio_tokens([3, 1030, 5119])}])
    ids = tokenizer.encode(prompt)
    assert ids[0] == 1 and ids[1] == 4
    assert ids[-3:-1] != [] and [65539, 66566, 70655] == [i for i in ids if i >= 65536]
    assert ids.count(3) == 1 and ids.count(4) == 2


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "你好，今天天气怎么样？",
        "mixed 中文 and English\nnew line  two spaces",
    ],
)
def test_text_round_trips_through_the_tokenizer(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text


def test_chat_prompt_format():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "human", "content": {"type": "text", "text": "again"}},
    ]
    assert render_chat_prompt(messages) == (
        "<|BOT|>system\nbe brief<|EOT|><|BOT|>human\nhi<|EOT|><|BOT|>assistant\nhello<|EOT|>"
        "<|BOT|>human\nagain<|EOT|><|BOT|>assistant\n"
    )
    assert render_chat_prompt(messages[:2], add_generation_prompt=False).endswith("hi<|EOT|>")


def test_checkpoint_chat_template_agrees_when_a_system_prompt_is_given(tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_chat_prompt(messages)


def test_audio_parts_use_the_given_audio_tokenizer_and_require_one():
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "?"}]}]
    assert render_chat_prompt(messages, audio_to_text=lambda part: "<audio_7>") == (
        "<|BOT|>human\n<audio_7>?<|EOT|><|BOT|>assistant\n"
    )
    with pytest.raises(PromptError, match="no audio tokenizer is configured"):
        render_chat_prompt(messages)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        ([{"content": "x"}], "'role' and 'content'"),
        ([{"role": "user", "content": 5}], "content must be"),
        ([{"role": "user", "content": {"type": "video"}}], "unknown content part type 'video'"),
        ([{"role": "user", "content": {"type": "text", "text": None}}], "needs a string"),
    ],
)
def test_malformed_messages_raise_prompt_errors(messages, message):
    with pytest.raises(PromptError, match=message):
        render_chat_prompt(messages)


def test_audio_string_helpers_round_trip():
    codes = [0, 1023, 1024, 5119, 17]
    text = format_audio_tokens(np.array(codes))
    assert text == "<audio_0><audio_1023><audio_1024><audio_5119><audio_17>"
    assert parse_audio_tokens(text) == codes
    assert parse_audio_tokens("  " + text + "\n") == codes
    assert audio_ids_to_codes(audio_codes_to_ids(codes)) == codes
    assert audio_codes_to_ids([0, 5119]) == [65536, 70655]
    assert parse_audio_tokens("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<audio_1> <audio_2>", "character 9"),
        ("<audio_1>x", "character 9"),
        ("<audio_5120>", "invalid"),
        ("<audio_-3>", "character 0"),
        ("<audio_>", "character 0"),
        ("<audio_1", "character 0"),
    ],
)
def test_malformed_audio_strings_are_rejected(text, message):
    with pytest.raises(AudioTokenError, match=message):
        parse_audio_tokens(text)


@pytest.mark.parametrize("bad", [[5120], [-1], [1.5], [True]])
def test_bad_audio_codes_are_rejected(bad):
    with pytest.raises(AudioTokenError):
        format_audio_tokens(bad)
    with pytest.raises(AudioTokenError):
        audio_codes_to_ids(bad)


def test_non_audio_ids_are_rejected():
    with pytest.raises(AudioTokenError, match="token id 65535 at position 1"):
        audio_ids_to_codes([65536, 65535])
    with pytest.raises(AudioTokenError, match="not an integer"):
        audio_ids_to_codes([65536.0])


def test_tokenizer_loader_errors(tiny_chat_dir, tmp_path):
    with pytest.raises(CheckpointFileNotFoundError, match="tokenizer.model"):
        load_text_tokenizer(tmp_path)
    # A tokenizer without the Step layout (here: a plain trained model) is refused with the piece named.
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["hello world", "good morning everyone"] * 50),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=24,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (tmp_path / "tokenizer_config.json").write_text((tiny_chat_dir / "tokenizer_config.json").read_text())
    with pytest.raises(CheckpointError, match="not the tokenizer of a Step-Audio LLM folder"):
        load_text_tokenizer(tmp_path)


def test_tts_tokenizer_without_add_bos_key_adds_bos_like_upstream(tiny_tts_lm_dir):
    config = (tiny_tts_lm_dir / "tokenizer_config.json").read_text()
    assert "add_bos_token" not in config  # as published for Step-Audio-TTS-3B
    tokenizer = load_text_tokenizer(tiny_tts_lm_dir)
    assert tokenizer.encode("human\n")[0] == 1


# Expected strings derived from upstream stepaudio.py ``apply_chat_template``: a message with content None
# is written as "<|BOT|>{role}\n" (no <|EOT|>), and "<|BOT|>assistant\n" is appended only when the text
# does not already end with it.
@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (
            [{"role": "user", "content": "你好"}, {"role": "assistant", "content": None}],
            "<|BOT|>human\n你好<|EOT|><|BOT|>assistant\n",
        ),
        (
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": {"type": "text", "text": "again"}},
                {"role": "assistant", "content": None},
            ],
            "<|BOT|>system\nbe brief<|EOT|><|BOT|>human\nhi<|EOT|><|BOT|>assistant\nhello<|EOT|>"
            "<|BOT|>human\nagain<|EOT|><|BOT|>assistant\n",
        ),
        (
            [{"role": "user", "content": "<audio_3><audio_1030>"}, {"role": "assistant", "content": None}],
            "<|BOT|>human\n<audio_3><audio_1030><|EOT|><|BOT|>assistant\n",
        ),
        # an assistant message WITH content as the last message is closed and followed by a new header
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "<|BOT|>human\nhi<|EOT|><|BOT|>assistant\nhello<|EOT|><|BOT|>assistant\n",
        ),
    ],
)
def test_open_assistant_turn_matches_upstream(messages, expected):
    assert render_chat_prompt(messages) == expected


def test_open_assistant_turn_is_the_generation_prompt():
    closed = [{"role": "user", "content": "hi"}]
    open_turn = closed + [{"role": "assistant", "content": None}]
    assert render_chat_prompt(open_turn) == render_chat_prompt(closed) == "<|BOT|>human\nhi<|EOT|><|BOT|>assistant\n"
    # the open turn is written even without a generation prompt, and never twice
    assert render_chat_prompt(open_turn, add_generation_prompt=False) == "<|BOT|>human\nhi<|EOT|><|BOT|>assistant\n"
    assert render_chat_prompt([{"role": "assistant", "content": None}]) == "<|BOT|>assistant\n"


def test_open_assistant_turn_token_ids_match_upstream(tokenizer):
    messages = [{"role": "user", "content": "hi <audio_7>"}, {"role": "assistant", "content": None}]
    ids = tokenizer.encode(render_chat_prompt(messages))
    # upstream: llm_tokenizer.encode(text) of the same text (BOS prepended)
    assert ids == tokenizer.encode("<|BOT|>human\nhi <audio_7><|EOT|><|BOT|>assistant\n")
    assert ids[:2] == [1, 4] and ids.count(4) == 2 and ids.count(3) == 1 and ids[-1] != 3
    assert ids == tokenizer.encode(render_chat_prompt(messages[:1]))


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": None}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}, {"role": "user", "content": "x"}],
        [{"role": "user", "content": None}],
        [{"role": "system", "content": None}, {"role": "user", "content": "hi"}],
    ],
)
def test_open_turn_anywhere_else_is_a_prompt_error(messages):
    with pytest.raises(PromptError, match="an open turn is allowed only as the last message, with role 'assistant'"):
        render_chat_prompt(messages)
