"""The package surface: public names, lazy exports, the console command's sub-commands."""

import stepaudio
from stepaudio.cli import build_parser


def test_public_api_names():
    from stepaudio import StepAudio, StepAudioChat, StepAudioTokenizer, StepAudioTTS

    assert StepAudio.__module__ == "stepaudio.pipeline"
    assert StepAudioChat.__module__ == "stepaudio.llm.chat"
    assert StepAudioTTS.__module__ == "stepaudio.tts.tts"
    assert StepAudioTokenizer.__module__ == "stepaudio.tokenizer.tokenizer"
    assert set(stepaudio.__all__) >= {"StepAudio", "StepAudioChat", "StepAudioTTS", "StepAudioTokenizer"}


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        stepaudio.Nope  # noqa: B018


def test_console_command_has_every_sub_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps the sub-parsers here
    assert {"chat", "tts", "tokenize", "make-fixtures", "serve-realtime"} <= set(commands)


def test_cli_reports_library_errors_without_a_traceback(tmp_path, capsys):
    from stepaudio.cli import main

    assert main(["chat", "--model-path", str(tmp_path / "missing"), "--text", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
