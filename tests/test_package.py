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

    # A usage error (the option names no folder): exit 2, found before anything loads.
    assert main(["chat", "--model-path", str(tmp_path / "missing"), "--text", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepaudio chat: error: --model-path ") and "does not exist" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # A run-time error (the folder is there but its config is broken): exit 1, one line.
    (tmp_path / "config.json").write_text("{not json")
    assert main(["chat", "--model-path", str(tmp_path), "--text", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stepaudio chat: error: ") and "config.json" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


