"""A catalogue of hostile inputs to StepAudioChat: each is refused with one clear line before any work.

"Before any work" is checked directly: the chat is built with a plain recording callable as its
``audio_tokenizer`` (the parameter takes any callable), and every refused call must leave it unused --
a malformed part *after* an audio part and audio too long for the context included.  A last test
builds the chat with the real (tiny) audio tokenizer and checks a 10-minute clip is refused in well
under a second, where tokenizing it would take minutes.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stepaudio import StepAudioChat
from stepaudio.errors import (
    AudioInputError,
    AudioTokenError,
    CheckpointFileNotFoundError,
    InputFileError,
    InvalidArgumentError,
    PromptError,
    UsageError,
)

RATE = 16000
HELLO = [{"role": "user", "content": "hello"}]
NOISE_1S = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)


class RecordingAudioTokenizer:
    """Stands in for StepAudioTokenizer: records every call and returns one 2+3 group of audio tokens."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, audio: object, sample_rate: int | None = None) -> str:
        self.calls.append(audio)
        return "<audio_1><audio_2><audio_1030><audio_1031><audio_1032>"


@pytest.fixture(scope="module")
def recorder() -> RecordingAudioTokenizer:
    return RecordingAudioTokenizer()


@pytest.fixture(scope="module")
def chat(tiny_chat_dir: Path, recorder: RecordingAudioTokenizer) -> StepAudioChat:
    return StepAudioChat(tiny_chat_dir, device="cpu", audio_tokenizer=recorder)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-minute wav file (8 kHz int16 noise keeps it small: 9.6 MB)."""
    path = tmp_path_factory.mktemp("long") / "ten_minutes.wav"
    noise = np.random.default_rng(1).integers(-3000, 3000, 600 * 8000, dtype=np.int16)
    soundfile.write(path, noise, 8000, subtype="PCM_16")
    return path


@pytest.fixture(autouse=True)
def _fresh_recorder(recorder: RecordingAudioTokenizer) -> None:
    recorder.calls.clear()


def _assert_one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message and message
    return message


def _audio(samples: np.ndarray = NOISE_1S, rate: int = RATE) -> dict:
    return {"type": "audio", "audio": samples, "sample_rate": rate}


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, r"max_new_tokens must be a positive whole number, got 0"),
        ({"max_new_tokens": -1}, r"max_new_tokens must be a positive whole number, got -1"),
        ({"max_new_tokens": 1.5}, r"max_new_tokens must be a positive whole number, got 1\.5"),
        ({"max_new_tokens": "10"}, r"max_new_tokens must be a positive whole number, got '10'"),
        ({"max_new_tokens": True}, r"max_new_tokens must be a positive whole number, got True"),
        ({"temperature": 0}, r"temperature must be a positive number, got 0; use do_sample=False"),
        ({"temperature": -1.0}, r"temperature must be a positive number, got -1\.0"),
        ({"temperature": math.nan}, r"temperature must be a positive finite number, got nan"),
        ({"temperature": math.nan, "do_sample": False}, r"temperature must be a finite number, got nan"),
        ({"temperature": "hot"}, r"temperature must be a positive number, got 'hot'"),
        ({"top_p": 0}, r"top_p must be a number above 0 and at most 1, got 0"),
        ({"top_p": 1.5}, r"top_p must be a number above 0 and at most 1, got 1\.5"),
        ({"top_p": math.nan}, r"top_p must be a finite number above 0 and at most 1, got nan"),
        ({"top_p": True}, r"top_p must be a number above 0 and at most 1, got True"),
        ({"top_k": -1}, r"top_k must be a whole number 0 or more, got -1"),
        ({"top_k": 2.0}, r"top_k must be a whole number 0 or more, got 2\.0"),
        ({"do_sample": "yes"}, r"do_sample must be True or False, got 'yes'"),
        ({"do_sample": None}, r"do_sample must be True or False, got None"),
    ],
)
@pytest.mark.parametrize("method", ["call", "stream"])
def test_bad_generation_arguments(chat, recorder, kwargs, match, method):
    # An audio turn too: the arguments are refused before its audio is tokenized.
    messages = [{"role": "user", "content": _audio()}]
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        if method == "call":
            chat(messages, **kwargs)
        else:
            chat.stream(messages, **kwargs)  # refused on the call itself, not on the first next()
    _assert_one_line(caught.value)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert caught.value.name == next(iter(kwargs))
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, r"timeout must be a positive number, got 0"),
        ({"timeout": -2.5}, r"timeout must be a positive number, got -2\.5"),
        ({"timeout": math.inf}, r"timeout must be a positive finite number, got inf"),
        ({"cancel": "stop"}, r"cancel must be None or a threading\.Event, got str"),
    ],
)
def test_bad_stream_arguments(chat, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        chat.stream(HELLO, **kwargs)
    _assert_one_line(caught.value)


def test_bad_streamer(chat):
    with pytest.raises(InvalidArgumentError, match=r"streamer must be a transformers streamer") as caught:
        chat(HELLO, streamer=print)
    _assert_one_line(caught.value)


def test_greedy_decoding_accepts_any_finite_temperature(chat):
    assert isinstance(chat(HELLO, max_new_tokens=2, do_sample=False, temperature=0), str)
    assert isinstance(chat(HELLO, max_new_tokens=2, top_k=0, top_p=1, temperature=0.5), str)


# ------------------------------------------------------------------------------------------- messages
def _surrogate(text: str) -> str:
    return text + b"\xff".decode("utf-8", errors="surrogateescape")


MESSAGE_CASES = [
    ("not a list: a string", "hello", PromptError, r"messages must be a non-empty list .*, got str"),
    ("not a list: one dict", {"role": "user", "content": "hi"}, PromptError, r"messages must be .*, got dict"),
    ("not a list: None", None, PromptError, r"messages must be .*, got NoneType"),
    ("empty list", [], PromptError, r"messages must be a non-empty list .*, got an empty list"),
    ("not a dict", ["hello"], PromptError, r"message 0 must be a dict with 'role' and 'content', got 'hello'"),
    ("no role", [{"content": "x"}], PromptError, r"message 0 must be a dict with 'role' and 'content'"),
    ("no content", [{"role": "user"}], PromptError, r"message 0 must be a dict with 'role' and 'content'"),
    ("unknown role", [{"role": "robot", "content": "x"}], PromptError, r"message 0 has unknown role 'robot'; use one"),
    ("role not a string", [{"role": ["user"], "content": "x"}], PromptError, r"message 0 has unknown role \['user'\]"),
    (
        "content None in a user turn",
        [{"role": "user", "content": None}],
        PromptError,
        r"message 0 \(user\) has content None: an open turn is allowed only as the last message",
    ),
    (
        "content None before the end",
        [{"role": "assistant", "content": None}, {"role": "user", "content": "x"}],
        PromptError,
        r"message 0 \(assistant\) has content None",
    ),
    ("content 5", [{"role": "user", "content": 5}], PromptError, r"message 0: content must be a string, .* got int"),
    (
        "content bytes",
        [{"role": "user", "content": b"hi"}],
        PromptError,
        r"message 0: content must be a string, .* got bytes",
    ),
    (
        "unknown part type",
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video", "video": "x.mp4"}]}],
        PromptError,
        r"message 0, part 1: unknown content part type 'video'; use 'text' or 'audio'",
    ),
    (
        "part without type",
        [{"role": "user", "content": {"text": "hi"}}],
        PromptError,
        r"message 0: unknown content part type None",
    ),
    (
        "text part without a string",
        [{"role": "user", "content": {"type": "text", "text": None}}],
        PromptError,
        r"message 0: a text part needs a string under 'text', got NoneType",
    ),
    (
        "text part with a lone surrogate",
        [{"role": "user", "content": [{"type": "text", "text": _surrogate("caf")}]}],
        PromptError,
        r"message 0, part 0 text is not valid Unicode: an unpaired surrogate U\+DCFF at character 3",
    ),
    (
        "string content with a lone surrogate",
        [{"role": "system", "content": "ok"}, {"role": "user", "content": _surrogate("")}],
        PromptError,
        r"message 1 text is not valid Unicode",
    ),
    (
        "text with a NUL",
        [{"role": "user", "content": "a\0b"}],
        PromptError,
        r"message 0 text must be text without NUL characters",
    ),
    (
        "audio part without audio",
        [{"role": "user", "content": {"type": "audio", "sample_rate": 16000}}],
        PromptError,
        r"message 0: an audio part needs the audio \(a path or an array\) under 'audio'",
    ),
    (
        "audio part with a misspelt key",
        [{"role": "user", "content": {"type": "audio", "audio": NOISE_1S, "sampling_rate": 16000}}],
        PromptError,
        r"message 0: unknown key\(s\) 'sampling_rate' in an audio part; an audio part has only 'type', 'audio'",
    ),
    (
        "array audio without sample_rate",
        [{"role": "user", "content": {"type": "audio", "audio": NOISE_1S}}],
        PromptError,
        r"message 0: array audio needs its sample rate",
    ),
    (
        "sample_rate 0",
        [{"role": "user", "content": _audio(rate=0)}],
        PromptError,
        r"message 0: 'sample_rate' must be a positive whole number of Hz \(e\.g\. 16000\), got 0",
    ),
    (
        "sample_rate float",
        [{"role": "user", "content": _audio(rate=16000.5)}],
        PromptError,
        r"'sample_rate' must be a positive whole number of Hz .*, got 16000\.5",
    ),
    (
        "audio of the wrong type",
        [{"role": "user", "content": {"type": "audio", "audio": 3.5, "sample_rate": 16000}}],
        PromptError,
        r"message 0: 'audio' must be the path of an audio file, or an array/tensor .*, got float",
    ),
    (
        "audio and audio_ids together",
        [{"role": "user", "content": {"type": "audio", "audio": "a.wav", "audio_ids": [65536]}}],
        PromptError,
        r"message 0: an audio part has either 'audio' .* or 'audio_ids' .*, not both",
    ),
    (
        "audio_ids that are not audio ids",
        [{"role": "user", "content": {"type": "audio", "audio_ids": [65536, 5]}}],
        AudioTokenError,
        r"message 0: token id 5 at position 1 is not an audio token",
    ),
    (
        "audio_ids not a list",
        [{"role": "user", "content": {"type": "audio", "audio_ids": 65536}}],
        AudioTokenError,
        r"message 0: 'audio_ids' must be a list of LLM audio ids",
    ),
    (
        "a bad part after an audio part",
        [{"role": "user", "content": [_audio(), {"type": "text", "text": None}]}],
        PromptError,
        r"message 0, part 1: a text part needs a string",
    ),
    (
        "a bad message after an audio turn",
        [
            {"role": "user", "content": _audio()},
            {"role": "assistant", "content": "ok"},
            {"role": "robot", "content": ""},
        ],
        PromptError,
        r"message 2 has unknown role 'robot'",
    ),
]


@pytest.mark.parametrize(
    ("messages", "error_type", "match"),
    [case[1:] for case in MESSAGE_CASES],
    ids=[case[0] for case in MESSAGE_CASES],
)
def test_bad_messages(chat, recorder, messages, error_type, match):
    for method in (chat, chat.stream, chat.check_prompt):
        with pytest.raises(error_type, match=match) as caught:
            method(messages)
        _assert_one_line(caught.value)
    with pytest.raises(error_type, match=match):
        chat.encode_messages(messages)
    assert recorder.calls == []  # no audio was tokenized, not even the audio part before the bad one


# ---------------------------------------------------------------------------------------- audio files
def test_audio_path_that_is_a_folder_or_missing(chat, recorder, tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "audio", "audio": tmp_path}]}]
    with pytest.raises(AudioInputError, match=rf"message 1, part 0: {tmp_path} is a directory, not an audio file"):
        chat(messages)
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioInputError, match=rf"message 0: audio file {missing} does not exist") as caught:
        chat.stream([{"role": "user", "content": {"type": "audio", "audio": str(missing)}}])
    _assert_one_line(caught.value)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio\n" * 20)
    with pytest.raises(AudioInputError, match=r"message 0: cannot read .*notes\.wav as audio") as caught:
        chat([{"role": "user", "content": {"type": "audio", "audio": not_audio}}])
    _assert_one_line(caught.value)
    assert recorder.calls == []


# ------------------------------------------------------------------------------ the context, from durations
def test_ten_minute_array_is_refused_from_its_length(chat, recorder):
    ten_minutes = np.tile(NOISE_1S, 600)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": _audio(ten_minutes)}]
    pattern = (
        r"^the audio in message 1 lasts 600\.0 s \(~25000 audio tokens\), more than Step-Audio-Chat's 2048-token "
        r"context \(max_seq_len of config\.json\) holds with room for the reply: shorten it to at most (\d+\.\d) s "
        r"or split it into several turns$"
    )
    for method in (chat, chat.stream):
        with pytest.raises(PromptError, match=pattern) as caught:
            method(messages)
    _assert_one_line(caught.value)
    assert recorder.calls == []
    # The advice is right: a clip of the suggested length is accepted, 0.12 s (one token group) more is not.
    at_most = float(caught.value.args[0].rsplit("at most ", 1)[1].split(" s", 1)[0])
    assert 45 < at_most < 2048 / (125 / 3)
    chat.check_prompt([messages[0], {"role": "user", "content": _audio(np.zeros(round(at_most * RATE), np.float32))}])
    too_long = np.zeros(round((at_most + 0.12) * RATE), np.float32)
    with pytest.raises(PromptError, match="shorten it"):
        chat.check_prompt([messages[0], {"role": "user", "content": _audio(too_long)}])


def test_ten_minute_file_is_refused_from_its_header(chat, recorder, long_wav):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "audio", "audio": long_wav}]}
    ]
    with pytest.raises(PromptError, match=r"^the audio in message 0, part 1 lasts 600\.0 s \(~25000 audio tokens\)"):
        chat(messages)
    with pytest.raises(PromptError, match=r"lasts 600\.0 s"):
        chat.stream(messages)
    assert recorder.calls == []


def test_audio_of_several_turns_adds_up(chat, recorder):
    thirty_seconds = np.tile(NOISE_1S, 30)
    two_turns = [
        {"role": "user", "content": _audio(thirty_seconds)},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": _audio(thirty_seconds)},
    ]
    chat.check_prompt(two_turns[:2])  # one 30 s clip fits
    pattern = (
        r"^the audio of the conversation \(message 0, message 2\) lasts 60\.0 s in total \(~2500 audio tokens at "
        r"41\.7/s\), more than Step-Audio-Chat's 2048-token context \(max_seq_len of config\.json\) holds with the "
        r"text and room for the reply: drop old turns or shorten the audio to at most \d+\.\d s in total$"
    )
    with pytest.raises(PromptError, match=pattern) as caught:
        chat(two_turns)
    _assert_one_line(caught.value)
    # One clip too long by itself, besides another one: that one is named, with what is left for it.
    one_long = [{"role": "user", "content": [_audio(np.tile(NOISE_1S, 10)), _audio(np.tile(NOISE_1S, 60))]}]
    with pytest.raises(
        PromptError,
        match=r"^the audio in message 0, part 1 lasts 60\.0 s \(~2500 audio tokens\), .* besides 415 tokens of other "
        r"audio in the conversation with room for the reply: shorten it to at most 3\d\.\d s",
    ) as caught:
        chat.stream(one_long)
    _assert_one_line(caught.value)
    ids_turns = [{"role": "user", "content": {"type": "audio", "audio_ids": [65536] * 1000}} for _ in range(3)]
    with pytest.raises(
        PromptError, match=r"^the audio of the conversation \(message 0, message 1, message 2\) lasts 72\.0 s"
    ):
        chat(ids_turns)
    assert recorder.calls == []


def test_long_text_is_refused_before_generation(chat):
    with pytest.raises(
        PromptError, match=r"^the prompt is \d+ tokens long but Step-Audio-Chat takes at most 2048"
    ) as caught:
        chat.stream([{"role": "user", "content": "hello " * 2100}])
    _assert_one_line(caught.value)
    with pytest.raises(PromptError, match=r"^the text of the prompt alone is \d+ tokens long"):
        chat([{"role": "user", "content": ["hello " * 2100, _audio()]}])


def test_a_valid_audio_turn_reaches_the_tokenizer_once(chat, recorder):
    messages = [{"role": "user", "content": [{"type": "text", "text": ""}, _audio()]}]
    assert isinstance(chat(messages, max_new_tokens=2, do_sample=False), str)
    assert len(recorder.calls) == 1


def test_real_tokenizer_is_never_reached_for_ten_minutes(tiny_chat_dir, tiny_tokenizer_dir, long_wav):
    chat = StepAudioChat(tiny_chat_dir, device="cpu", tokenizer_path=tiny_tokenizer_dir)
    started = time.perf_counter()
    with pytest.raises(PromptError, match=r"lasts 600\.0 s"):
        chat([{"role": "user", "content": {"type": "audio", "audio": str(long_wav)}}])
    with pytest.raises(PromptError, match=r"lasts 600\.0 s"):
        chat([{"role": "user", "content": _audio(np.tile(NOISE_1S, 600))}])
    assert time.perf_counter() - started < 2.0  # tokenizing 10 minutes takes minutes


# ------------------------------------------------------------------------------------------ constructor
@pytest.mark.parametrize(
    ("kwargs", "error_type", "match"),
    [
        ({"attn_implementation": "flash"}, InvalidArgumentError, r"attn_implementation must be one of sdpa, flex"),
        ({"attn_implementation": None}, InvalidArgumentError, r"attn_implementation must be one of"),
        ({"device": "gpu"}, InvalidArgumentError, r"device must be a device such as 'cpu'"),
        ({"dtype": "int8"}, InvalidArgumentError, r"dtype must be one of"),
        ({"device_map": 3}, InvalidArgumentError, r"device_map must be None, a strategy such as 'auto' or a dict"),
        ({"device_map": " "}, InvalidArgumentError, r"device_map must be None"),
        ({"audio_tokenizer": "tokenizer"}, InvalidArgumentError, r"audio_tokenizer must be callable"),
        (
            {"tokenizer_path": "/nowhere/Step-Audio-Tokenizer"},
            InputFileError,
            r"tokenizer_path /nowhere/Step-Audio-Tokenizer does not exist",
        ),
        ({"tokenizer_path": __file__}, InputFileError, r"tokenizer_path .*test_chat_bad_inputs\.py is a file"),
        (
            {"tokenizer_path": ".", "audio_tokenizer": RecordingAudioTokenizer()},
            InvalidArgumentError,
            r"tokenizer_path must be None when audio_tokenizer is given",
        ),
    ],
)
def test_bad_constructor_arguments_are_refused_before_loading(tiny_chat_dir, monkeypatch, kwargs, error_type, match):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("stepaudio.llm.chat.load_text_tokenizer", no_loading)
    with pytest.raises(error_type, match=match) as caught:
        StepAudioChat(tiny_chat_dir, **{"device": "cpu", **kwargs})
    _assert_one_line(caught.value)


def test_tokenizer_folder_layout_is_checked_before_loading(tiny_chat_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("stepaudio.llm.chat.load_text_tokenizer", lambda *a: pytest.fail("loaded too early"))
    with pytest.raises(CheckpointFileNotFoundError, match=r"is not a Step-Audio-Tokenizer folder") as caught:
        StepAudioChat(tiny_chat_dir, device="cpu", tokenizer_path=tmp_path)
    _assert_one_line(caught.value)


def test_model_path_that_is_a_file(tiny_chat_dir):
    with pytest.raises(
        CheckpointFileNotFoundError, match=r"model path .*config\.json is a file, not a folder"
    ) as caught:
        StepAudioChat(tiny_chat_dir / "config.json", device="cpu")
    _assert_one_line(caught.value)


# ------------------------------------------------------------------------------------- quiet model loads
def test_loading_tiny_models_writes_nothing_to_stderr(tiny_chat_dir, tiny_tokenizer_dir, tiny_tts_dir, capfd, caplog):
    from transformers.utils import logging as hf_logging

    from stepaudio import StepAudioTTS
    from stepaudio.tokenizer import StepAudioTokenizer

    caplog.set_level(logging.WARNING)
    capfd.readouterr()
    assert hf_logging.is_progress_bar_enabled()
    chat = StepAudioChat(tiny_chat_dir.parent, device="cpu", tokenizer_path=tiny_tokenizer_dir.parent)
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    StepAudioTTS(tiny_tts_dir, tokenizer, device="cpu")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err and "it/s" not in captured.err
    assert captured.err == "" and captured.out == ""
    assert [record for record in caplog.records if not record.name.startswith("stepaudio")] == []
    assert hf_logging.is_progress_bar_enabled()  # transformers' own setting is restored for other loads
    assert isinstance(chat.audio_tokenizer, StepAudioTokenizer)


def test_big_checkpoints_keep_the_loading_bar(tiny_chat_dir, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    from stepaudio.llm.modeling import Step1ForCausalLM

    monkeypatch.setattr("stepaudio.llm.modeling.QUIET_LOAD_BYTES", 1)  # every checkpoint counts as big
    capfd.readouterr()
    Step1ForCausalLM.from_pretrained(tiny_chat_dir)
    assert "Loading weights" in capfd.readouterr().err
    hf_logging.disable_progress_bar()  # a caller's own choice wins in both directions
    try:
        Step1ForCausalLM.from_pretrained(tiny_chat_dir)
        assert "Loading weights" not in capfd.readouterr().err
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
