"""Hostile inputs to the TTS API: each is refused with a clear one-line error before any work is done."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from stepaudio.errors import (
    AudioInputError,
    CheckpointConfigError,
    InputFileError,
    InvalidArgumentError,
    PromptError,
)
from stepaudio.llm.modeling import Step1ForCausalLM
from stepaudio.pipeline import StepAudio, speak_reply
from stepaudio.tokenizer import StepAudioTokenizer
from stepaudio.tts.postprocess import change_speed, change_volume
from stepaudio.tts.prompts import KNOWN_INSTRUCTIONS
from stepaudio.tts.text import check_tts_text, has_speakable_text
from stepaudio.tts.tts import TTS_MAX_LENGTH, StepAudioTTS

YUQIAN_TEXT = "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。"
NOWHERE = "/nonexistent/stepaudio-test/Step-Audio-TTS-3B"


def _long_clip(shared_audio_dir: Path, path: Path, seconds: float) -> Path:
    """Real speech repeated to ``seconds`` (the yuqian prompt, 44.1 kHz)."""
    audio, rate = soundfile.read(shared_audio_dir / "prompt_wav_yuqian.wav", dtype="float32")
    repeats = math.ceil(seconds * rate / len(audio))
    soundfile.write(path, np.tile(audio, repeats)[: int(seconds * rate)], rate)
    return path


@pytest.fixture(scope="module")
def files(shared_audio_dir, tmp_path_factory):
    """A speakers folder (the shared one plus 'Long', whose clip lasts 60 s) and a 60 s clone clip."""
    root = tmp_path_factory.mktemp("bad-inputs")
    speakers = root / "speakers"
    shutil.copytree(shared_audio_dir / "speakers", speakers)
    info = json.loads((speakers / "speakers_info.json").read_text(encoding="utf-8"))
    info["Long"] = YUQIAN_TEXT
    (speakers / "speakers_info.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    _long_clip(shared_audio_dir, speakers / "Long_prompt.wav", 60.0)
    return {
        "speakers": speakers,
        "long_clip": _long_clip(shared_audio_dir, root / "long_60s.wav", 60.0),
        "clip_30s": _long_clip(shared_audio_dir, root / "clip_30s.wav", 30.0),
        "clip": shared_audio_dir / "prompt_wav_yuqian.wav",
        "root": root,
    }


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")


@pytest.fixture(scope="module")
def tts(tiny_tts_dir, tokenizer, files, tmp_path_factory):
    return StepAudioTTS(
        tiny_tts_dir,
        tokenizer,
        speakers_dir=files["speakers"],
        device="cpu",
        cache_dir=tmp_path_factory.mktemp("voice-cache"),
        max_speech_seconds=0.5,  # random LM weights rarely end a turn: keep each segment short
    )


class WorkSpy:
    """Counts the expensive steps of a call: voice prompts (cache or extraction) and LM generation."""

    def __init__(self, tts: StepAudioTTS, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for owner, name in ((tts.voice_prompts, "voice_prompt"), (tts.model, "generate")):
            original = getattr(owner, name)

            def spy(*args, _original=original, _name=name, **kwargs):
                self.calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(owner, name, spy)


@pytest.fixture()
def work(tts, monkeypatch):
    return WorkSpy(tts, monkeypatch)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# ------------------------------------------------------------------------------------ the constructor
CONSTRUCTOR_CASES = [
    ({"max_speech_seconds": -1}, InvalidArgumentError, r"max_speech_seconds must be a positive number, got -1"),
    ({"max_speech_seconds": 0}, InvalidArgumentError, r"max_speech_seconds must be a positive number, got 0"),
    ({"max_speech_seconds": float("nan")}, InvalidArgumentError, r"max_speech_seconds must be a positive finite"),
    ({"max_speech_seconds": "10"}, InvalidArgumentError, r"max_speech_seconds must be a positive number, got '10'"),
    ({"max_segment_chars": 0}, InvalidArgumentError, r"max_segment_chars must be a positive whole number, got 0"),
    ({"max_segment_chars": 1.5}, InvalidArgumentError, r"max_segment_chars must be a positive whole number"),
    ({"seed": -1}, InvalidArgumentError, r"seed must be a whole number 0 or more, got -1"),
    ({"seed": 1.5}, InvalidArgumentError, r"seed must be a whole number 0 or more, got 1.5"),
    ({"attn_implementation": "flash"}, InvalidArgumentError, r"attn_implementation must be one of sdpa, flex"),
    ({"allow_unknown_tags": "yes"}, InvalidArgumentError, r"allow_unknown_tags must be True or False"),
    ({"device": "gpu"}, InvalidArgumentError, r"device must be a device such as 'cpu'"),
    ({"dtype": "int8"}, InvalidArgumentError, r"dtype must be one of"),
    ({"speakers_dir": "/nonexistent/speakers"}, InputFileError, r"speakers_dir /nonexistent/speakers does not exist"),
    ({"tokenizer": None}, InvalidArgumentError, r"tokenizer must be a StepAudioTokenizer .* got None"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CONSTRUCTOR_CASES, ids=lambda v: str(v)[:40])
def test_constructor_checks_arguments_before_the_model_path(tokenizer, kwargs, error, match):
    # The model path does not exist: the error is the argument's, so it was checked before any loading.
    arguments = {"model_path": NOWHERE, "tokenizer": tokenizer, "device": "cpu", **kwargs}
    with pytest.raises(error, match=match) as caught:
        StepAudioTTS(**arguments)
    _one_line(caught)


def test_a_folder_as_speakers_dir_file_and_a_file_as_it_are_named(tokenizer, files):
    with pytest.raises(InputFileError, match="is a file, not a speakers folder") as caught:
        StepAudioTTS(NOWHERE, tokenizer, speakers_dir=files["clip"], device="cpu")
    _one_line(caught)


@pytest.mark.parametrize(
    ("speaker_id", "match"),
    [("../x", r"speaker id '\.\./x', which cannot be part of"), ("a b", "speaker id 'a b'"), (".x", "'.x'")],
)
def test_unsafe_speaker_ids_are_refused_before_any_model_loads(
    tiny_tts_dir, tokenizer, files, tmp_path, monkeypatch, speaker_id, match
):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the speakers folder was checked")

    monkeypatch.setattr(Step1ForCausalLM, "from_pretrained", no_loading)
    speakers = tmp_path / "speakers"
    speakers.mkdir()
    (speakers / "speakers_info.json").write_text(json.dumps({"Tingting": "你好", speaker_id: "你好"}))
    with pytest.raises(CheckpointConfigError, match=match) as caught:
        StepAudioTTS(tiny_tts_dir, tokenizer, speakers_dir=speakers, device="cpu")
    assert "speakers_info.json" in _one_line(caught)


# ------------------------------------------------------------------------------------ call settings
SETTING_CASES = [
    ({"speed_ratio": 0}, r"speed_ratio must be a number from 0.25 to 4.0, got 0; 1.0 keeps the tempo"),
    ({"speed_ratio": -1}, r"speed_ratio must be a number from 0.25 to 4.0, got -1"),
    ({"speed_ratio": float("nan")}, r"speed_ratio must be a finite number from 0.25 to 4.0, got nan"),
    ({"speed_ratio": float("inf")}, r"speed_ratio must be a finite number from 0.25 to 4.0, got inf"),
    ({"speed_ratio": "fast"}, r"speed_ratio must be a number from 0.25 to 4.0, got 'fast'"),
    ({"speed_ratio": True}, r"speed_ratio must be a number from 0.25 to 4.0, got True"),
    ({"volume_ratio": float("nan")}, r"volume_ratio must be a finite number from 0.0 to 10.0, got nan"),
    ({"volume_ratio": 11}, r"volume_ratio must be a number from 0.0 to 10.0, got 11"),
    ({"volume_ratio": -0.1}, r"volume_ratio must be a number from 0.0 to 10.0, got -0.1"),
    ({"temperature": 0}, r"temperature must be a number above 0.0 and at most 10.0, got 0"),
    ({"temperature": float("nan")}, r"temperature must be a finite number above 0.0 and at most 10.0, got nan"),
    ({"temperature": 100}, r"temperature must be a number above 0.0 and at most 10.0, got 100"),
]


@pytest.mark.parametrize(("kwargs", "match"), SETTING_CASES, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("method", ["__call__", "stream"])
def test_bad_settings_are_refused_before_work(tts, work, method, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        getattr(tts, method)("你好。", "Tingting", **kwargs)  # stream refuses at the call, not at the first chunk
    _one_line(caught)
    assert work.calls == []


def test_progress_must_be_a_bool(tts, work):
    with pytest.raises(InvalidArgumentError, match="progress must be True or False, got 'yes'"):
        tts("你好。", "Tingting", progress="yes")
    assert work.calls == []


@pytest.mark.parametrize(("speed", "volume"), [(0.0, 1.0), (float("nan"), 1.0), (1.0, float("nan")), (1.0, 11)])
def test_postprocess_uses_the_same_checks(speed, volume):
    wav = torch.zeros(1, 100)
    with pytest.raises(InvalidArgumentError, match="speed_ratio|volume_ratio"):
        change_volume(change_speed(wav, 22050, speed), volume)


# ------------------------------------------------------------------------------------ text
TEXT_CASES = [
    ("", PromptError, r"TTS text '' is empty: give the words to say"),
    ("   ", PromptError, r"TTS text '   ' is empty"),
    ("!!!", PromptError, r"TTS text '!!!' has nothing to speak \(no letters or digits\)"),
    ("。。。", PromptError, r"TTS text '。。。' has nothing to speak"),
    ("😀😀", PromptError, r"TTS text '😀😀' has nothing to speak"),
    ("\x01\x02", PromptError, r"has nothing to speak"),
    ("（高兴1）!!!", PromptError, r"has nothing to speak \(no letters or digits after the tag\)"),
    ("a\udcffb", InvalidArgumentError, r"text is not valid Unicode: an unpaired surrogate U\+DCFF at character 1"),
    ("a\0b", InvalidArgumentError, r"text must be text without NUL characters"),
    ("（愤怒9）你好", PromptError, r"unknown tag （愤怒9）; the known tags are 高兴1, .*allow_unknown_tags=True"),
    ("(rap)yo", PromptError, r"unknown tag \(rap\) \(did you mean RAP\?\)"),
    ("（高兴1）", PromptError, r"TTS text '（高兴1）' is only the tag （高兴1）; add the text to speak after it"),
    (123, InvalidArgumentError, r"text must be a string, got 123"),
    (None, InvalidArgumentError, r"text must be a string, got None"),
]


@pytest.mark.parametrize(("text", "error", "match"), TEXT_CASES, ids=lambda v: ascii(v)[:20])
@pytest.mark.parametrize("method", ["__call__", "stream"])
def test_bad_text_is_refused_before_work(tts, work, method, text, error, match):
    with pytest.raises(error, match=match) as caught:
        getattr(tts, method)(text, "Tingting")
    _one_line(caught)
    assert work.calls == []


def test_known_instructions_come_from_the_system_prompt():
    emotions = "高兴1 高兴2 生气1 生气2 悲伤1 撒娇1"
    languages = "中文 英文 韩语 日语 四川话 粤语 广东话"
    assert KNOWN_INSTRUCTIONS == tuple(f"{emotions} {languages} RAP 哼唱 慢速1 慢速2 快速1 快速2".split())


@pytest.mark.parametrize("tag", KNOWN_INSTRUCTIONS)
def test_every_known_tag_passes(tag):
    assert check_tts_text(f"（{tag}）你好") == f"（{tag}）你好"
    assert check_tts_text(f"({tag})hello") == f"({tag})hello"


def test_known_tags_and_plain_text_pass_the_request_check(tts, work):
    for text in ("（高兴1）你好。", "(四川话)你好。", "（RAP）你好", "你好。", "Hello 123", "٣", "😀 hi"):
        tts.check_request(text, "Tingting")
    assert work.calls == []


def test_unknown_tags_pass_with_one_warning_per_tag_when_allowed(tts, caplog, monkeypatch):
    monkeypatch.setattr(tts, "allow_unknown_tags", True)
    monkeypatch.setattr(tts, "_warned_tags", set())
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="stepaudio.tts.text"):
        wav, rate = tts("（愤怒9）你好。", "Tingting")
        tts.check_request("（愤怒9）再说一遍。", "Tingting")
        tts.check_request("（悄悄话）你好。", "Tingting")
    warnings = [record.getMessage() for record in caplog.records if "unknown tag" in record.getMessage()]
    assert len(warnings) == 2 and "（愤怒9）" in warnings[0] and "（悄悄话）" in warnings[1]
    assert rate == 22050 and wav.shape[1] > 0


def test_has_speakable_text():
    assert has_speakable_text("你好") and has_speakable_text("（高兴1）hi") and has_speakable_text("42")
    assert has_speakable_text("😀 ok") and has_speakable_text("(unknown)x")
    for nothing in ("", "   ", "!!!", "。。。", "😀😀", "\x01\x02", "（高兴1）", "（高兴1）…", None, 123):
        assert not has_speakable_text(nothing), nothing


# ------------------------------------------------------------------------------------ voice
def test_clone_dict_errors(tts, work, files, tmp_path):
    clip = str(files["clip"])
    cases = [
        ("not a dict", InvalidArgumentError, r"clone_dict must be a dict \{'speaker': name, 'prompt_text'"),
        ({"speaker": "x"}, InvalidArgumentError, r"clone_dict needs 'prompt_text' and 'wav_path': pass \{"),
        ({"prompt_text": YUQIAN_TEXT}, InvalidArgumentError, r"clone_dict needs 'wav_path'"),
        (
            {"prompt_text": YUQIAN_TEXT, "wav": clip},
            InvalidArgumentError,
            r"clone_dict has the unknown key 'wav' \(did you mean 'wav_path'\?\); its keys are 'speaker'",
        ),
        ({"prompt_text": "", "wav_path": clip}, InvalidArgumentError, r"clone_dict\['prompt_text'\] must be non-empty"),
        ({"prompt_text": 5, "wav_path": clip}, InvalidArgumentError, r"clone_dict\['prompt_text'\] must be a string"),
        (
            {"prompt_text": YUQIAN_TEXT, "wav_path": str(tmp_path)},
            InputFileError,
            r"clone_dict\['wav_path'\] .* is a folder, not an audio clip",
        ),
        (
            {"prompt_text": YUQIAN_TEXT, "wav_path": str(tmp_path / "missing.wav")},
            InputFileError,
            r"clone_dict\['wav_path'\] .*missing.wav does not exist; expected an audio clip",
        ),
        (
            {"speaker": 3, "prompt_text": YUQIAN_TEXT, "wav_path": clip},
            InvalidArgumentError,
            r"clone_dict\['speaker'\] must be a string",
        ),
    ]
    for clone_dict, error, match in cases:
        with pytest.raises(error, match=match) as caught:
            tts("你好。", None, clone_dict)
        _one_line(caught)
    assert work.calls == []


def test_unreadable_and_too_short_clips_are_refused_before_work(tts, work, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(800, dtype="float32"), 16000)
    for clip, match in ((not_audio, r"cannot read .*notes.wav as audio"), (short, r"lasts 0.05 s, too short")):
        with pytest.raises(AudioInputError, match=match) as caught:
            tts("你好。", None, {"prompt_text": YUQIAN_TEXT, "wav_path": clip})
        _one_line(caught)
    assert work.calls == []


def test_voice_prompt_cache_names_a_folder_as_a_folder(tts, tmp_path):
    with pytest.raises(InputFileError, match=r"voice prompt clip .* is a folder, not an audio clip"):
        tts.voice_prompts.voice_prompt(tmp_path, YUQIAN_TEXT, "CosyVoice-300M-25Hz")


def test_a_prompt_clip_too_long_for_the_context_is_refused_from_its_duration(tts, work, files):
    clone = {"speaker": "long", "prompt_text": YUQIAN_TEXT, "wav_path": str(files["long_clip"])}
    with pytest.raises(PromptError) as caught:
        tts("你好。", None, clone)
    message = _one_line(caught)
    assert message.startswith(f"voice prompt clip {files['long_clip']} lasts 60.0 s (~2500 audio tokens);")
    assert "does not fit Step-Audio-TTS-3B's 2048-token context (max_seq_len of config.json)" in message
    longest = float(message.split("use a clip of at most ")[1].split(" s")[0])
    assert 30.0 < longest < 49.2 and message.endswith("(3-10 s is typical)")
    with pytest.raises(
        PromptError, match=r"the prompt clip .*Long_prompt.wav of speaker 'Long' lasts 60.0 s"
    ) as caught:
        tts.stream("你好。", "Long")
    _one_line(caught)
    assert work.calls == []  # nothing was tokenized


def test_unknown_speaker_tells_both_ways_to_clone(tts, work):
    with pytest.raises(PromptError, match=r"unknown speaker 'Nobody': .*speakers_info.json lists Long, Tingting") as e:
        tts("你好。", "Nobody")
    message = _one_line(e)
    assert "register it there with Nobody_prompt.wav" in message
    assert "clone_dict in Python" in message and "--synthesis-type clone on the command line" in message
    for speaker, match in ((123, "speaker must be a string"), ("", "speaker must be non-empty text")):
        with pytest.raises(InvalidArgumentError, match=match):
            tts("你好。", speaker)
    with pytest.raises(InvalidArgumentError, match="speaker is needed"):
        tts("你好。")
    assert work.calls == []


def test_missing_style_voice_is_named(tts, work):
    with pytest.raises(PromptError, match=r"speaker 'Long' has no RAP voice .*register LongRAP there") as caught:
        tts("（RAP）你好", "Long")
    _one_line(caught)
    assert work.calls == []


def test_no_speakers_folder_message_is_neutral(tiny_tts_dir, tokenizer):
    no_speakers = StepAudioTTS(tiny_tts_dir, tokenizer, device="cpu", max_speech_seconds=0.5)
    with pytest.raises(PromptError, match="no speakers folder is configured") as caught:
        no_speakers("你好。", "Tingting")
    message = _one_line(caught)
    assert "--speakers-dir on the command line" in message and "--synthesis-type clone" in message


# ------------------------------------------------------------------------------------ limits
def test_max_length_follows_the_folder_max_seq_len(tts, tiny_tts_dir, tokenizer, files, tmp_path):
    config = json.loads((tiny_tts_dir / "config.json").read_text())
    assert tts.max_length == min(TTS_MAX_LENGTH, config["max_seq_len"]) == 2048
    small = tmp_path / "Step-Audio-TTS-3B"
    small.mkdir()
    for item in tiny_tts_dir.iterdir():
        if item.name != "config.json":
            (small / item.name).symlink_to(item)
    (small / "config.json").write_text(json.dumps({**config, "max_seq_len": 1024}))
    short = StepAudioTTS(small, tokenizer, speakers_dir=files["speakers"], device="cpu")
    assert short.max_length == 1024
    assert short.max_new_tokens(1000, "你好") == 24
    clone = {"prompt_text": YUQIAN_TEXT, "wav_path": str(files["clip_30s"])}
    tts.check_request("你好。", None, clone)  # 30 s (1250 tokens) fits 2048 ...
    with pytest.raises(PromptError, match=r"lasts 30.0 s \(~1250 audio tokens\).*1024-token context"):
        short.check_request("你好。", None, clone)  # ... but not 1024


def test_segments_get_a_progress_bar(tts, capsys):
    torch.manual_seed(1)
    tts.max_segment_chars = 3
    try:
        wav, _ = tts("第一句。第二句。", "Tingting", progress=True)
    finally:
        tts.max_segment_chars = 150
    assert "segments" in capsys.readouterr().err and wav.shape[1] > 0


# ------------------------------------------------------------------------------------ pipeline
def test_pipeline_reply_with_nothing_to_speak_gives_empty_audio(tts, work, caplog):
    with caplog.at_level(logging.WARNING, logger="stepaudio.pipeline"):
        wav, rate = speak_reply(tts, "😀😀！", "Tingting")
    assert rate == 22050 and wav.shape == (1, 0) and wav.dtype == torch.float32
    assert "nothing to speak" in caplog.text and work.calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_new_tokens": 0}, InvalidArgumentError, "max_new_tokens must be a positive whole number, got 0"),
        ({"temperature": 0}, InvalidArgumentError, "temperature must be a positive number, got 0"),
        ({"top_p": 0}, InvalidArgumentError, r"top_p must be a number above 0.0 and at most 1.0, got 0"),
        ({"top_p": 1.5}, InvalidArgumentError, r"top_p must be a number above 0.0 and at most 1.0, got 1.5"),
        ({"speakers_dir": "/nonexistent/speakers"}, InputFileError, "speakers_dir /nonexistent/speakers does not"),
        ({"device": "gpu"}, InvalidArgumentError, "device must be"),
    ],
)
def test_pipeline_checks_arguments_before_loading(kwargs, error, match):
    with pytest.raises(error, match=match) as caught:
        StepAudio(NOWHERE, NOWHERE, NOWHERE, **kwargs)
    _one_line(caught)
