"""Long-text splitting for TTS."""

import pytest

from stepaudio.tts.text import split_tts_text


def test_sentences_are_packed_and_tag_is_repeated():
    assert split_tts_text("(高兴1)你好。今天天气真好！", max_chars=4) == [
        "(高兴1)你好。",
        "(高兴1)今天天气",
        "(高兴1)真好！",
    ]
    assert split_tts_text("（RAP）一句。两句。", max_chars=10) == ["（RAP）一句。两句。"]


def test_english_sentence_ends_but_not_decimals():
    assert split_tts_text("The value is 3.14. Next sentence here! And a third one?", max_chars=20) == [
        "The value is 3.14.",
        "Next sentence here!",
        "And a third one?",
    ]


def test_every_character_is_kept_in_order():
    text = "第一句话很长很长，有逗号，还有更多的内容。第二句！Third sentence, with commas, and words. 最后"
    for limit in (5, 12, 40, 1000):
        segments = split_tts_text(text, max_chars=limit)
        assert all(len(segment) <= limit for segment in segments)
        assert "".join(segments).replace(" ", "") == text.replace(" ", "")


def test_short_text_is_one_segment_and_empty_text_none():
    assert split_tts_text("短句。") == ["短句。"]
    assert split_tts_text("   ") == []
    with pytest.raises(ValueError):
        split_tts_text("x", max_chars=0)
