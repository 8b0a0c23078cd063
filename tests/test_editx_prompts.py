"""Step-Audio-EditX prompts: byte-exact templates, instructions per edit type, id layout, request checks."""

from __future__ import annotations

import numpy as np
import pytest

from stepaudio.editx import edit_config
from stepaudio.editx.edit_config import check_edit_request, check_language, paralinguistic_tags
from stepaudio.editx.model import iteration_requests
from stepaudio.editx.prompts import (
    CLONE_SYSTEM_PROMPT_TEMPLATE,
    EDIT_SYSTEM_PROMPT,
    build_clone_prompt_ids,
    build_edit_prompt_ids,
    clone_speaker_id,
    edit_instruction,
    with_language,
)
from stepaudio.errors import InvalidArgumentError
from stepaudio.llm.text_tokenizer import load_text_tokenizer

# The original's strings, written out from the reference notes (shared/reference/editx.md), line by line.
CLONE_LINES = [
    "Generate audio with the following timbre, prosody and speaking style",
    "",
    "[speaker_start]",
    "speaker name: {speaker}",
    "speaker prompt text: ",  # trailing space in the original
    "{prompt_text}",
    "speaker audio tokens: ",  # trailing space in the original
    "{prompt_wav_tokens}",
    "[speaker_end]",
    "",
]
EDIT_SYSTEM_LINES = [
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user instructions and "
    "applying precise adjustments to meet their needs. Your expertise spans a wide range of enhancement "
    "capabilities, including but not limited to:",
    "# Emotional Enhancement",
    "# Speaking Style Transfer",
    "# Non-linguistic Adjustments",
    "# Audio Tuning & Editing",
    "Note: You will receive instructions in natural language and are expected to accurately interpret and execute "
    "the most suitable audio edits and enhancements.",
    "",
]
QUALITY = "while preserving the voice content clearly. Ensure that the speech quality remains intact with minimal "


def test_system_prompts_are_byte_exact():
    assert CLONE_SYSTEM_PROMPT_TEMPLATE == "\n".join(CLONE_LINES)
    assert EDIT_SYSTEM_PROMPT == "\n".join(EDIT_SYSTEM_LINES)
    assert CLONE_SYSTEM_PROMPT_TEMPLATE.count(": \n") == 2


@pytest.mark.parametrize(
    ("edit_type", "edit_info", "text", "expected"),
    [
        ("emotion", "happy", None, "Make the following audio more happy. The text corresponding to the audio is: T\n"),
        ("emotion", "remove", None, "Remove any emotion in the following audio and the reference text is: T\n"),
        (
            "speed",
            "more faster",
            None,
            "Make the following audio more more faster. The text corresponding to the audio is: T\n",
        ),
        (
            "style",
            "whisper",
            None,
            "Make the following audio more whisper style. The text corresponding to the audio is: T\n",
        ),
        ("style", "remove", None, "Remove any speaking styles in the following audio and the reference text is: T\n"),
        (
            "denoise",
            None,
            None,
            f"Remove any noise from the given audio {QUALITY}distortion, and eliminate all noise from the audio.\n",
        ),
        (
            "vad",
            None,
            None,
            f"Remove any silent portions from the given audio {QUALITY}distortion, and eliminate all "
            "silence from the audio.\n",
        ),
        (
            "paralinguistic",
            None,
            "T [Uhm] x",
            "Add some non-verbal sounds to make the audio more natural, the new "
            "text is : T [Uhm] x\n  The text corresponding to the audio is: T\n",
        ),
    ],
)
def test_instruction_of_each_edit_type(edit_type, edit_info, text, expected):
    request = check_edit_request(edit_type, edit_info, "  T \n" if edit_type != "denoise" else "", text)
    assert edit_instruction(request) == expected


def test_edit_types_and_values_match_the_original():
    assert edit_config.EDIT_TYPES == ("emotion", "style", "vad", "denoise", "paralinguistic", "speed")
    assert len(edit_config.EMOTIONS) == 15 and edit_config.EMOTIONS[-1] == "remove"
    assert len(edit_config.SPEAKING_STYLES) == 33 and "act_coy" in edit_config.SPEAKING_STYLES
    assert edit_config.SPEEDS == ("faster", "slower", "more faster", "more slower")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("clone",),
            "edit_type must be one of 'emotion', 'style', 'vad', 'denoise', 'paralinguistic', 'speed', got "
            "'clone' (clone is StepAudioEditX.clone, not an edit)",
        ),
        (("emotion", None, "t"), "edit_info is required for edit_type 'emotion': pass one of 'happy', 'angry'"),
        (
            ("speed", "fast", "t"),
            "edit_info must be one of 'faster', 'slower', 'more faster', 'more slower' for "
            "edit_type 'speed', got 'fast'",
        ),
        (("vad", "happy"), "edit_info must be empty for edit_type 'vad' (it takes none), got 'happy'"),
        (("style", "whisper", " "), "audio_text is required for edit_type 'style'"),
        (("paralinguistic", None, "t"), "text is required for edit_type 'paralinguistic'"),
        (("emotion", "sad", "t", "x"), "text only applies to edit_type 'paralinguistic'"),
    ],
)
def test_bad_requests_fail_in_one_line_listing_accepted_values(args, message):
    with pytest.raises(InvalidArgumentError) as caught:
        check_edit_request(*args)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_denoise_needs_no_transcript_and_empty_edit_info_is_none():
    request = check_edit_request("denoise", "", None)
    assert (request.edit_info, request.audio_text, request.text) == (None, "", None)


def test_language_prefix_and_tags():
    assert with_language("你好", "Sichuanese") == "[Sichuanese]你好"
    assert with_language("[Cantonese]你好", "Sichuanese") == "[Cantonese]你好"
    assert with_language("你好", None) == "你好"
    assert check_language("Korean") == "Korean"
    with pytest.raises(InvalidArgumentError, match="language must be None or one of 'Sichuanese', 'Cantonese'"):
        check_language("sichuanese")
    assert paralinguistic_tags("a [Uhm] b[Sigh]") == ["Uhm", "Sigh"]


def test_iterations_edit_the_previous_output():
    emotion = check_edit_request("emotion", "sad", "hello", None)
    assert [r.audio_text for r in iteration_requests(emotion, 3)] == ["hello"] * 3
    para = check_edit_request("paralinguistic", None, "I think so", "I think [Uhm] so")
    steps = iteration_requests(para, 2)
    assert (steps[0].audio_text, steps[1].audio_text) == ("I think so", "I think [Uhm] so")
    assert steps[1].text == "I think [Uhm] so"
    with pytest.raises(InvalidArgumentError, match="iterations must be a whole number from 1 to 10"):
        iteration_requests(emotion, 0)


def test_clone_speaker_id_hashes_text_and_clip_ends():
    import hashlib

    samples = np.linspace(-1, 1, 5000, dtype=np.float32)[None, :]
    digest = hashlib.sha256(b"hi" + np.concatenate([samples[0, :1000], samples[0, -1000:]]).tobytes())
    assert clone_speaker_id("hi", samples) == "clone_" + digest.hexdigest()[:16]
    short = samples[:, :100]
    assert clone_speaker_id("hi", short) == "clone_" + hashlib.sha256(b"hi" + short.tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def text_tokenizer(tiny_tts_lm_dir):
    return load_text_tokenizer(tiny_tts_lm_dir)


def test_edit_prompt_ids_layout(text_tokenizer):
    request = check_edit_request("emotion", "happy", "hi", None)
    audio_ids = [65536 + 5, 65536 + 7, 65536 + 1024 + 1, 65536 + 1024 + 2, 65536 + 1024 + 3]
    ids = build_edit_prompt_ids(text_tokenizer, request, audio_ids)
    encode = text_tokenizer.encode
    human = (
        "Make the following audio more happy. The text corresponding to the audio is: hi\n\n"
        "<audio_5><audio_7><audio_1025><audio_1026><audio_1027>\n"
    )
    expected = [1, 4, *encode("system\n" + "\n".join(EDIT_SYSTEM_LINES)), 3]
    expected += [4, *encode("human\n"), *encode(human), 3, 4, *encode("assistant\n")]
    assert ids == expected
    assert ids[:3] == [1, 4, 1]  # encode adds BOS, as the original ran it
    assert [i for i in ids if i >= 65536] == audio_ids  # each <audio_N> is one id, 65536 + N


def test_clone_prompt_ids_layout(text_tokenizer):
    audio_ids = [65536, 65537, 66560, 66561, 66562]
    ids = build_clone_prompt_ids(text_tokenizer, "clone_0123456789abcdef", "prompt words", audio_ids, "[Korean]hello")
    system = "\n".join(CLONE_LINES).format(
        speaker="clone_0123456789abcdef",
        prompt_text="prompt words",
        prompt_wav_tokens="<audio_0><audio_1><audio_1024><audio_1025><audio_1026>",
    )
    encode = text_tokenizer.encode
    target = encode("\n[Korean]hello")[len(encode("\n")) :]
    expected = [1, 4, *encode("system\n" + system), 3, 4, *encode("human\n"), *target, 3, 4, *encode("assistant\n")]
    assert ids == expected
