"""The model factory: one path rule, settings checked up front, folders found before any load, all commands use it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stepaudio import assembly
from stepaudio.assembly import (
    CHAT_FOLDER,
    EDITX_FOLDER,
    TOKENIZER_FOLDER,
    TTS_FOLDER,
    ModelFolders,
    ModelSettings,
    find_model_folders,
    load_editx,
    load_pipeline,
    load_tokenizer,
)
from stepaudio.cli import build_parser, main
from stepaudio.errors import InputFileError, InvalidArgumentError
from stepaudio.pipeline import StepAudio

MARKERS = {
    TOKENIZER_FOLDER: "linguistic_tokenizer.npy",
    CHAT_FOLDER: "config.json",
    TTS_FOLDER: "config.json",
    EDITX_FOLDER: "config.json",
}


@pytest.fixture(scope="module")
def root(tiny_model_root) -> Path:
    """One root with the three official folders and speakers/, as `python -m stepaudio.testing OUT` writes it."""
    return tiny_model_root


@pytest.fixture(scope="module")
def pipeline(root) -> StepAudio:
    """The pipeline `stepaudio serve-realtime` builds from its options (through the factory)."""
    from stepaudio.realtime.cli import model_settings

    args = build_parser().parse_args(
        ["serve-realtime", "--model-path", str(root), "--device", "cpu", "--max-speech-seconds", "0.6"]
    )
    return load_pipeline(args.model_path, model_settings(args))


def fake_root(folder: Path, models=(TOKENIZER_FOLDER, CHAT_FOLDER, TTS_FOLDER), content: str = "") -> Path:
    """Official folders holding only their marker file (garbage inside): loading any of them would fail."""
    for model in models:
        (folder / model).mkdir(parents=True)
        (folder / model / MARKERS[model]).write_text(content)
    return folder


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def describe(pipeline: StepAudio) -> dict:
    """What a pipeline's models were built from and with."""
    return {
        "tokenizer": pipeline.tokenizer.files,
        "chat": pipeline.llm.model_path,
        "tts": pipeline.tts.model_path,
        "speakers": pipeline.tts.speakers.folder,
        "devices": (pipeline.tokenizer.device, pipeline.llm.device, pipeline.tts.device),
        "dtypes": (pipeline.llm.dtype, pipeline.tts.dtype),
        "allow_unknown_tags": pipeline.tts.allow_unknown_tags,
        "shared tokenizer": pipeline.llm.audio_tokenizer is pipeline.tokenizer is pipeline.tts.audio_tokenizer,
    }


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


# ----------------------------------------------------------------------------------------------- path rule
def test_root_rule_and_override_rule_build_the_same_models(root, pipeline):
    upstream = StepAudio(
        root / TOKENIZER_FOLDER, root / TTS_FOLDER, root, speakers_dir=root / "speakers", device="cpu"
    )  # the upstream constructor: one folder per model (the chat's given as the folder holding it)
    assert describe(upstream) == describe(pipeline)
    assert describe(pipeline)["tts"] == root / TTS_FOLDER and describe(pipeline)["shared tokenizer"]
    assert same_weights(upstream.llm.model, pipeline.llm.model) and same_weights(upstream.tts.model, pipeline.tts.model)
    assert (upstream.tts.max_speech_seconds, pipeline.tts.max_speech_seconds) == (None, 0.6)  # a setting, not a patch


def test_every_form_of_a_folder_finds_the_same_folders(root, tmp_path):
    found = find_model_folders(root)
    assert found == ModelFolders(root / TOKENIZER_FOLDER, root / CHAT_FOLDER, root / TTS_FOLDER, root / "speakers")
    overrides = ModelSettings(
        tokenizer_path=root / TOKENIZER_FOLDER,
        chat_path=root,
        tts_path=root / TTS_FOLDER,
        speakers_dir=root / "speakers",
    )
    assert find_model_folders(None, overrides) == found
    assert find_model_folders(tmp_path, overrides) == found  # an override wins over the root
    assert find_model_folders(root / CHAT_FOLDER, models=(CHAT_FOLDER,)) == ModelFolders(chat=root / CHAT_FOLDER)
    # speakers/ only when the root has one and the TTS is asked for
    elsewhere = fake_root(tmp_path / "elsewhere", (TTS_FOLDER,))
    assert find_model_folders(elsewhere, models=(TTS_FOLDER,)) == ModelFolders(tts=elsewhere / TTS_FOLDER)
    assert find_model_folders(root, models=(TOKENIZER_FOLDER,)).speakers is None


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"device": "gpu"}, "device must be a device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"),
        (
            {"dtype": "fp8"},
            "dtype must be one of bf16, bfloat16, float, float16, float32, fp16, fp32, half or a torch.dtype, "
            "got 'fp8'",
        ),
        ({"attention": "flash"}, "attention must be one of sdpa, flex, flex_attention, eager, got 'flash'"),
        (
            {"llm_device_map": " "},
            "llm_device_map must be None, a strategy such as 'auto' or a dict of module name -> device, got ' '",
        ),
        ({"speakers_dir": 3}, "speakers_dir must be None or the path of a folder, got 3"),
        ({"tts_path": ""}, "tts_path must be None or the path of a folder, got ''"),
        (
            {"chat_path": "a\udcffb"},
            "chat_path is not valid Unicode: an unpaired surrogate U+DCFF at character 1 (undecodable bytes); "
            "pass UTF-8 text",
        ),
        ({"max_speech_seconds": 0}, "max_speech_seconds must be a positive number, got 0; None means no limit"),
        (
            {"max_speech_seconds": float("nan")},
            "max_speech_seconds must be a positive finite number, got nan; None means no limit",
        ),
        ({"allow_unknown_tags": "yes"}, "allow_unknown_tags must be True or False, got 'yes'"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_settings_are_checked_when_made(settings, message):
    with pytest.raises(InvalidArgumentError) as caught:
        ModelSettings(**settings)
    assert one_line(caught) == message
    assert caught.value.name == next(iter(settings))


def test_settings_are_normalised_and_compare_by_value(tmp_path):
    settings = ModelSettings(tts_path=str(tmp_path), max_speech_seconds=2, allow_unknown_tags=True)
    assert settings == ModelSettings(tts_path=tmp_path, max_speech_seconds=2.0, allow_unknown_tags=True)
    assert isinstance(settings.tts_path, Path) and isinstance(settings.max_speech_seconds, float)
    with pytest.raises(InvalidArgumentError) as caught:
        load_tokenizer(tmp_path, {"device": "cpu"})
    assert one_line(caught) == "settings must be None or a ModelSettings, got {'device': 'cpu'}"


# ----------------------------------------------------------------------------------------------- folders first
def test_a_missing_folder_is_refused_before_any_model_loads(tmp_path):
    # The tokenizer and chat folders are there but broken: loading either would fail with another error.
    models = fake_root(tmp_path / "models", (TOKENIZER_FOLDER, CHAT_FOLDER), content="{not json")
    with pytest.raises(InputFileError) as caught:
        load_pipeline(models, ModelSettings(device="cpu"))
    assert one_line(caught) == (
        f"root {models} holds no {TTS_FOLDER} folder: neither {models / 'config.json'} nor "
        f"{models / TTS_FOLDER / 'config.json'} exists; pass the folder that contains {TTS_FOLDER}/ "
        "(or tts_path=STEP_AUDIO_TTS_3B_DIR)"
    )
    with pytest.raises(InputFileError) as caught:
        load_pipeline(models, ModelSettings(tts_path=tmp_path / "nowhere"))
    assert one_line(caught) == (
        f"tts_path {tmp_path / 'nowhere'} does not exist; expected the {TTS_FOLDER} folder or a folder holding it"
    )
    with pytest.raises(InputFileError) as caught:
        load_pipeline(models, ModelSettings(speakers_dir=tmp_path / "nowhere"))
    assert one_line(caught) == (
        f"speakers_dir {tmp_path / 'nowhere'} does not exist; expected a speakers folder (speakers_info.json + one "
        "{id}_prompt.wav each)"
    )
    with pytest.raises(InvalidArgumentError) as caught:
        load_tokenizer(None, ModelSettings())
    assert one_line(caught) == (
        f"{TOKENIZER_FOLDER} has no folder: pass root (the folder holding {TOKENIZER_FOLDER}/) or tokenizer_path"
    )


def test_editx_is_found_by_the_same_rule_and_shares_the_tokenizer(root, pipeline, tmp_path):
    assert find_model_folders(root, models=(EDITX_FOLDER,)) == ModelFolders(editx=root / EDITX_FOLDER)
    override = ModelSettings(editx_path=str(root / EDITX_FOLDER))
    assert find_model_folders(tmp_path, override, (EDITX_FOLDER,)).editx == root / EDITX_FOLDER
    assert find_model_folders(root).editx is None  # a voice chat does not look for it
    editx = load_editx(root, ModelSettings(device="cpu", max_speech_seconds=0.4), tokenizer=pipeline.tokenizer)
    assert editx.audio_tokenizer is pipeline.tokenizer  # one tokenizer for every model
    assert (editx.model_path, editx.max_speech_seconds, editx.device.type) == (root / EDITX_FOLDER, 0.4, "cpu")
    # Folders first: without an EditX folder nothing loads, not even the (broken) tokenizer.
    models = fake_root(tmp_path / "models", (TOKENIZER_FOLDER,), content="{not json")
    with pytest.raises(InputFileError) as caught:
        load_editx(models, ModelSettings(device="cpu"))
    assert one_line(caught) == (
        f"root {models} holds no {EDITX_FOLDER} folder: neither {models / 'config.json'} nor "
        f"{models / EDITX_FOLDER / 'config.json'} exists; pass the folder that contains {EDITX_FOLDER}/ "
        "(or editx_path=STEP_AUDIO_EDITX_DIR)"
    )


def test_serve_loads_editx_only_when_asked(root):
    from stepaudio.realtime.cli import model_settings
    from stepaudio.server.cli import wants_editx

    plain = build_parser().parse_args(["serve", "--model-path", str(root)])
    assert not wants_editx(plain) and model_settings(plain).editx_path is None  # even though root holds EditX
    flag = build_parser().parse_args(["serve", "--model-path", str(root), "--editx"])
    assert wants_editx(flag) and model_settings(flag).editx_path is None
    folder = build_parser().parse_args(["serve", "--model-path", "R", "--editx-path", "E"])
    assert wants_editx(folder) and model_settings(folder).editx_path == Path("E")


def test_the_upstream_constructor_names_its_own_arguments(tmp_path):
    models = fake_root(tmp_path / "models", content="{not json")
    with pytest.raises(InputFileError) as caught:
        StepAudio(models, models, tmp_path / "nowhere", device="cpu")
    assert one_line(caught) == (
        f"llm_path {tmp_path / 'nowhere'} does not exist; expected the {CHAT_FOLDER} folder or a folder holding it"
    )


# ----------------------------------------------------------------------------------------------- names
def test_the_aliases_are_the_same_objects(pipeline):
    assert pipeline.encoder is pipeline.tokenizer and pipeline.decoder is pipeline.tts
    with pytest.raises(AttributeError):
        pipeline.decoder = pipeline.tts  # read-only: the real attribute is .tts


def test_modules_are_named_for_what_they_hold():
    from stepaudio import ModelSettings as exported_settings
    from stepaudio import load_pipeline as exported_load
    from stepaudio.cosyvoice import CosyVoiceDecoder, StreamingConfig, TokenToWavStream
    from stepaudio.tts import SAMPLE_RATE, StepAudioTTS
    from stepaudio.tts.tts import StepAudioTTS as defined

    assert StepAudioTTS is defined and SAMPLE_RATE == 22050
    assert (exported_settings, exported_load) == (ModelSettings, load_pipeline)
    assert CosyVoiceDecoder.__module__ == "stepaudio.cosyvoice.decoder"
    assert TokenToWavStream.__module__ == StreamingConfig.__module__ == "stepaudio.cosyvoice.token_to_wav_stream"


# ----------------------------------------------------------------------------------------------- commands
FOLDER_OPTIONS = ["--tokenizer-path", "T", "--tts-path", "S"]
SPEECH_OPTIONS = ["--speakers-dir", "V", "--max-speech-seconds", "3", "--device", "cpu"]
FOLDERS = {"tokenizer_path": Path("T"), "tts_path": Path("S")}
SPEECH = {"speakers_dir": Path("V"), "max_speech_seconds": 3.0, "device": "cpu"}
COMMANDS = {
    "chat": (
        ["chat", "--text", "hi", "--llm-path", "C", "--dtype", "fp32", "--attention", "eager"],
        "stepaudio.pipeline_cli",
        ModelSettings(
            chat_path=Path("C"), dtype="fp32", attention="eager", allow_unknown_tags=True, **FOLDERS, **SPEECH
        ),
    ),
    "tts": (
        ["tts", "--output-path", "out", "--allow-unknown-tags"],
        "stepaudio.tts.cli",
        ModelSettings(allow_unknown_tags=True, **FOLDERS, **SPEECH),
    ),
    "tokenize": (
        ["tokenize", "clip.wav", "--tokenizer-path", "T", "--device", "cpu"],
        "stepaudio.tokenizer.cli",
        ModelSettings(tokenizer_path=Path("T"), device="cpu"),
    ),
    "serve-realtime": (
        ["serve-realtime", "--llm-path", "C"],
        "stepaudio.realtime.cli",
        ModelSettings(chat_path=Path("C"), allow_unknown_tags=True, **FOLDERS, **SPEECH),
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_turns_its_options_into_settings(command):
    import importlib

    argv, module, expected = COMMANDS[command]
    options = [] if command == "tokenize" else FOLDER_OPTIONS + SPEECH_OPTIONS
    args = build_parser().parse_args([*argv, "--model-path", "R", *options])
    assert importlib.import_module(module).model_settings(args) == expected


def test_commands_build_their_models_through_the_factory(root, shared_audio_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def record(name):
        real = getattr(assembly, name)

        def loader(*args, **kwargs):
            model = real(*args, **kwargs)
            calls.append((name, args, model))
            return model

        monkeypatch.setattr(assembly, name, loader)

    for name in ("load_tokenizer", "load_chat", "load_tts", "load_models", "load_pipeline"):
        record(name)
    clip = str(shared_audio_dir / "BAC009S0764W0121.wav")
    out = tmp_path / "tokens.jsonl"
    assert main(["tokenize", "--model-path", str(root), clip, "--output", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["num_tokens"] > 0
    assert [(name, args) for name, args, _ in calls] == [("load_tokenizer", (str(root), ModelSettings()))]

    calls.clear()
    tts_argv = ["tts", "--model-path", str(root), "--output-path", str(tmp_path), "--max-speech-seconds", "0.3"]
    assert main([*tts_argv, "--device", "cpu", "--text", "你好"]) == 0
    settings = ModelSettings(device="cpu", max_speech_seconds=0.3, allow_unknown_tags=False)
    [(name, args, tts)] = calls
    assert (name, args) == ("load_tts", (str(root), settings))
    assert (tts.max_speech_seconds, tts.allow_unknown_tags, tts.speakers.folder) == (0.3, False, root / "speakers")

    calls.clear()
    chat_argv = ["chat", "--model-path", str(root), "--device", "cpu", "--max-new-tokens", "2", "--greedy"]
    assert main([*chat_argv, "--text", "hi"]) == 0
    settings = ModelSettings(device="cpu", allow_unknown_tags=True)
    [(name, args, chat)] = calls
    assert (name, args, chat.audio_tokenizer) == ("load_chat", (str(root), settings), None)  # text only: no tokenizer
    assert "assistant: " in capsys.readouterr().out
