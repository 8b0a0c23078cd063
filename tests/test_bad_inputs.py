"""A catalogue of hostile command-line inputs: each gets one error line, the right exit status, and leaves no file.

Every case runs a real command in-process through :func:`stepaudio.cli.main` (the ``stepaudio``
console script's entry point) on tiny official-layout fixture folders.  Usage errors (exit 2) must be
found before any model loads; run-time errors (exit 1) after.  In every case the output folder stays
absent or empty and nothing appears outside it.  The root scripts, whose parsers are built separately,
are exercised as subprocesses at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stepaudio.cli import EXIT_RUNTIME_ERROR, EXIT_USAGE_ERROR, main

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
USAGE, RUNTIME = EXIT_USAGE_ERROR, EXIT_RUNTIME_ERROR


@pytest.fixture(scope="module")
def root(tiny_model_root) -> Path:
    """The tiny official folders side by side, as `stepaudio make-fixtures` writes them."""
    return tiny_model_root


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_audio_dir) -> dict[str, Path]:
    """Inputs the catalogue points options at: real speech, not-audio, empty, silent and over-long clips."""
    folder = tmp_path_factory.mktemp("inputs")
    speech, rate = soundfile.read(shared_audio_dir / "BAC009S0764W0121.wav", dtype="float32")
    paths = {
        "speech": shared_audio_dir / "BAC009S0764W0121.wav",
        "prompt": shared_audio_dir / "prompt_wav_yuqian.wav",
        "text": folder / "notes.txt",
        "empty": folder / "empty.wav",
        "silent": folder / "silent.wav",
        "long_prompt": folder / "long_prompt.wav",
        "ten_minutes": folder / "ten_minutes.wav",
        "folder": folder / "a_folder",
        "no_registry": folder / "no_registry",
    }
    paths["text"].write_text("this is not audio\n")
    paths["empty"].write_bytes(b"")
    soundfile.write(paths["silent"], np.zeros(16000, np.float32), 16000)
    soundfile.write(paths["long_prompt"], np.tile(speech, 15)[: 60 * rate], rate)  # 60 s clone prompt
    soundfile.write(paths["ten_minutes"], np.tile(speech, 150)[: 600 * rate], rate)  # 10 min chat turn
    paths["folder"].mkdir()
    paths["no_registry"].mkdir()
    return paths


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a command in-process; argparse's own errors (SystemExit) are turned into their exit status."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def expand(argv: list[str], root: Path, out: Path, inputs: dict[str, Path]) -> list[str]:
    names = {"root": str(root), "out": str(out), **{key: str(value) for key, value in inputs.items()}}
    return [arg.format(**names) if "{" in arg and "}" in arg else arg for arg in argv]


TTS = ["tts", "--model-path", "{root}", "--output-path", "{out}"]
CLONE = TTS + ["--synthesis-type", "clone", "--speaker", "me", "--prompt-text", "叫做秋风起蟹脚痒"]
CHAT = ["chat", "--model-path", "{root}"]
SPEAK = CHAT + ["--output-path", "{out}"]
TOKENIZE = ["tokenize", "--model-path", "{root}"]
SERVE = ["serve-realtime", "--model-path", "{root}", "--port", "18765"]

# (case id, argv, exit status, fragments the one error line must contain)
USAGE_CASES = [
    ("no command", [], USAGE, ["required: COMMAND"]),
    ("unknown command", ["speak"], USAGE, ["invalid choice: 'speak'"]),
    ("tts without model path", ["tts", "--output-path", "{out}"], USAGE, ["--model-path"]),
    ("speed not a number", TTS + ["--speed", "fast"], USAGE, ["--speed", "invalid float value: 'fast'"]),
    ("speed 0", TTS + ["--speed", "0"], USAGE, ["--speed must be a number from 0.25 to 4.0, got 0.0"]),
    ("speed negative", TTS + ["--speed", "-1"], USAGE, ["--speed must be", "got -1.0"]),
    ("speed nan", TTS + ["--speed", "nan"], USAGE, ["--speed must be a finite number", "got nan"]),
    ("speed inf", TTS + ["--speed", "inf"], USAGE, ["--speed must be a finite number", "got inf"]),
    ("speed too fast", TTS + ["--speed", "5"], USAGE, ["--speed must be", "got 5.0"]),
    ("volume nan", TTS + ["--volume", "nan"], USAGE, ["--volume must be a finite number from 0.0 to 10.0"]),
    ("volume negative", TTS + ["--volume", "-0.5"], USAGE, ["--volume must be"]),
    ("volume too loud", TTS + ["--volume", "11"], USAGE, ["--volume must be", "got 11.0"]),
    ("speech seconds -1", TTS + ["--max-speech-seconds", "-1"], USAGE, ["--max-speech-seconds must be a positive"]),
    ("speech seconds 0", TTS + ["--max-speech-seconds", "0"], USAGE, ["--max-speech-seconds must be a positive"]),
    ("speech seconds nan", TTS + ["--max-speech-seconds", "nan"], USAGE, ["--max-speech-seconds must be"]),
    ("seed negative", TTS + ["--seed", "-1"], USAGE, ["--seed must be a whole number from 0"]),
    ("seed not an int", TTS + ["--seed", "1.5"], USAGE, ["--seed", "invalid int value"]),
    ("device unknown", TTS + ["--device", "gpu"], USAGE, ["--device must be a device such as 'cpu'"]),
    ("device without cuda", TTS + ["--device", "cuda:7"], USAGE, ["--device must be an available device"]),
    ("output path is a file", TTS[:-1] + ["{text}"], USAGE, ["--output-path", "is a file, not a folder"]),
    ("output path under a file", TTS[:-1] + ["{text}/sub"], USAGE, ["cannot be created", "is a file"]),
    (
        "model path missing",
        ["tts", "--model-path", "{out}/nowhere", "--output-path", "{out}"],
        USAGE,
        ["--model-path", "does not exist"],
    ),
    (
        "model path is a file",
        ["tts", "--model-path", "{text}", "--output-path", "{out}"],
        USAGE,
        ["--model-path", "is a file, not a folder"],
    ),
    (
        "model path holds no model",
        ["tts", "--model-path", "{folder}", "--output-path", "{out}"],
        USAGE,
        ["holds no Step-Audio-TTS-3B folder"],
    ),
    ("tts path missing", TTS + ["--tts-path", "{out}/nowhere"], USAGE, ["--tts-path", "does not exist"]),
    ("tokenizer path wrong", TTS + ["--tokenizer-path", "{folder}"], USAGE, ["--tokenizer-path", "holds no"]),
    ("text empty", TTS + ["--text", ""], USAGE, ["--text", "empty"]),
    ("text blank", TTS + ["--text", "   "], USAGE, ["--text", "empty"]),
    ("text punctuation only", TTS + ["--text", "!!!"], USAGE, ["nothing to speak"]),
    ("text CJK punctuation only", TTS + ["--text", "。。。？！"], USAGE, ["nothing to speak"]),
    ("text emoji only", TTS + ["--text", "😀🎉"], USAGE, ["nothing to speak"]),
    ("text control characters", TTS + ["--text", "\x01\x02\x7f"], USAGE, ["nothing to speak"]),
    ("text undecodable bytes", TTS + ["--text", "ab\udcffcd"], USAGE, ["not valid Unicode", "U+DCFF"]),
    ("text with NUL", TTS + ["--text", "a\0b"], USAGE, ["NUL"]),
    ("text tag only", TTS + ["--text", "（高兴1）"], USAGE, ["only the tag"]),
    ("text unknown tag", TTS + ["--text", "（愤怒9）你好"], USAGE, ["unknown tag （愤怒9）", "--allow-unknown-tags"]),
    (
        "speaker escapes",
        CLONE[:-4] + ["--speaker", "../../escaped", "--prompt-wav", "{prompt}", "--prompt-text", "hi"],
        USAGE,
        ["--speaker must be a name", "'../../escaped'"],
    ),
    ("speaker with slash", TTS + ["--speaker", "sub/name"], USAGE, ["--speaker must be a name", "'sub/name'"]),
    ("speaker absolute", TTS + ["--speaker", "/tmp/x"], USAGE, ["--speaker must be a name"]),
    ("speaker hidden", TTS + ["--speaker", ".hidden"], USAGE, ["--speaker must be a name"]),
    ("speaker empty", TTS + ["--speaker", ""], USAGE, ["--speaker must be a name"]),
    ("speaker too long", TTS + ["--speaker", "a" * 65], USAGE, ["at most 64"]),
    ("speaker control char", TTS + ["--speaker", "a\nb"], USAGE, ["--speaker must be a name"]),
    (
        "speaker unregistered",
        TTS + ["--speaker", "Nobody"],
        USAGE,
        ["--speaker 'Nobody' is not registered", "Tingting", "--synthesis-type clone"],
    ),
    ("speakers dir missing", TTS + ["--speakers-dir", "{out}/nowhere"], USAGE, ["--speakers-dir", "does not exist"]),
    (
        "speakers dir without registry",
        TTS + ["--speakers-dir", "{no_registry}"],
        USAGE,
        ["--speakers-dir", "speakers_info.json"],
    ),
    ("clone without prompt", TTS + ["--synthesis-type", "clone"], USAGE, ["needs --prompt-wav CLIP"]),
    (
        "clone without transcript",
        TTS + ["--synthesis-type", "clone", "--prompt-wav", "{prompt}"],
        USAGE,
        ["needs --prompt-wav CLIP"],
    ),
    ("clone prompt is a folder", CLONE + ["--prompt-wav", "{folder}"], USAGE, ["--prompt-wav", "is a folder"]),
    ("clone prompt missing", CLONE + ["--prompt-wav", "{out}/none.wav"], USAGE, ["--prompt-wav", "does not exist"]),
    ("clone prompt not audio", CLONE + ["--prompt-wav", "{text}"], USAGE, ["--prompt-wav", "cannot read"]),
    ("clone prompt empty file", CLONE + ["--prompt-wav", "{empty}"], USAGE, ["--prompt-wav", "cannot read"]),
    (
        "clone transcript blank",
        CLONE[:-2] + ["--prompt-text", " ", "--prompt-wav", "{prompt}"],
        USAGE,
        ["--prompt-text must be non-empty text"],
    ),
    ("prompt without clone", TTS + ["--prompt-wav", "{prompt}"], USAGE, ["only apply to --synthesis-type clone"]),
    ("synthesis type unknown", TTS + ["--synthesis-type", "sing"], USAGE, ["invalid choice: 'sing'"]),
    (
        "max new tokens 0",
        CHAT + ["--text", "hi", "--max-new-tokens", "0"],
        USAGE,
        ["--max-new-tokens must be a positive whole number, got 0"],
    ),
    ("max new tokens negative", CHAT + ["--text", "hi", "--max-new-tokens", "-3"], USAGE, ["--max-new-tokens"]),
    ("temperature 0", CHAT + ["--text", "hi", "--temperature", "0"], USAGE, ["--temperature must be", "--greedy"]),
    ("temperature nan", CHAT + ["--text", "hi", "--temperature", "nan"], USAGE, ["--temperature must be"]),
    ("top-p 0", CHAT + ["--text", "hi", "--top-p", "0"], USAGE, ["--top-p must be"]),
    ("top-p above 1", CHAT + ["--text", "hi", "--top-p", "1.5"], USAGE, ["--top-p must be"]),
    ("dtype unknown", CHAT + ["--text", "hi", "--dtype", "fp8"], USAGE, ["--dtype must be one of"]),
    ("attention unknown", CHAT + ["--text", "hi", "--attention", "flash"], USAGE, ["invalid choice: 'flash'"]),
    ("chat text empty", CHAT + ["--text", ""], USAGE, ["--text must be non-empty text"]),
    ("chat system undecodable", CHAT + ["--text", "hi", "--system", "\udce9"], USAGE, ["--system is not valid"]),
    ("chat audio missing", CHAT + ["--audio", "{out}/q.wav"], USAGE, ["--audio", "does not exist"]),
    ("chat audio folder", CHAT + ["--audio", "{folder}"], USAGE, ["--audio", "is a folder"]),
    ("chat audio not audio", CHAT + ["--audio", "{text}"], USAGE, ["--audio", "cannot read"]),
    ("previous without speech", CHAT + ["--text", "hi", "--audio", "@previous"], USAGE, ["needs --output-path"]),
    ("previous first", SPEAK + ["--audio", "@previous"], USAGE, ["before it"]),
    ("chat output path is a file", CHAT + ["--text", "hi", "--output-path", "{text}"], USAGE, ["is a file"]),
    ("chat speaker unregistered", SPEAK + ["--text", "hi", "--speaker", "Nobody"], USAGE, ["is not registered"]),
    ("chat model path missing", ["chat", "--model-path", "{out}/x", "--text", "hi"], USAGE, ["does not exist"]),
    ("tokenize file missing", TOKENIZE + ["{out}/none.wav"], USAGE, ["FILE", "does not exist"]),
    ("tokenize folder as file", TOKENIZE + ["{folder}"], USAGE, ["FILE", "is a folder"]),
    ("tokenize not audio", TOKENIZE + ["{speech}", "{text}"], USAGE, ["cannot read"]),
    ("tokenize output is a folder", TOKENIZE + ["{speech}", "--output", "{folder}"], USAGE, ["--output", "folder"]),
    ("tokenize model path wrong", ["tokenize", "--model-path", "{folder}", "{speech}"], USAGE, ["holds no"]),
    ("tokenize device unknown", TOKENIZE + ["{speech}", "--device", "tpu:0"], USAGE, ["--device must be"]),
    ("fixtures into a file", ["make-fixtures", "{text}"], USAGE, ["OUT_DIR", "is a file"]),
    ("fixtures seed negative", ["make-fixtures", "{out}", "--seed", "-2"], USAGE, ["--seed must be"]),
    ("serve port 0", SERVE[:-1] + ["0"], USAGE, ["--port must be a port number from 1 to 65535"]),
    ("serve port too big", SERVE[:-1] + ["70000"], USAGE, ["--port must be", "65535"]),
    ("serve workers 0", SERVE + ["--workers", "0"], USAGE, ["--workers must be a whole number from 1 to 256, got 0"]),
    ("serve sessions 0", SERVE + ["--max-sessions", "0"], USAGE, ["--max-sessions must be"]),
    (
        "serve idle nan",
        SERVE + ["--idle-timeout", "nan"],
        USAGE,
        ["--idle-timeout must be a positive finite number, got nan"],
    ),
    ("serve message bytes tiny", SERVE + ["--max-message-bytes", "10"], USAGE, ["--max-message-bytes must be"]),
    (
        "serve pause after end",
        SERVE + ["--pause-ms", "700"],
        USAGE,
        ["--end-of-turn-ms (600) must be longer than --pause-ms (700)"],
    ),
    ("serve pause negative", SERVE + ["--pause-ms", "-5"], USAGE, ["--pause-ms must be"]),
    ("serve context tiny", SERVE + ["--context-tokens", "3"], USAGE, ["--context-tokens must be"]),
    ("serve host unresolvable", SERVE + ["--host", "no such host!"], USAGE, ["--host 'no such host!'"]),
    ("serve speaker unregistered", SERVE + ["--speaker", "Nobody"], USAGE, ["is not registered"]),
]


@pytest.mark.parametrize("argv, status, fragments", [case[1:] for case in USAGE_CASES], ids=[c[0] for c in USAGE_CASES])
def test_usage_errors_are_one_line_before_any_work(argv, status, fragments, root, files, tmp_path, capsys):
    out = tmp_path / "out"
    before = files_under(tmp_path)
    start = time.perf_counter()
    code, stdout, stderr = run(expand(argv, root, out, files), capsys)
    elapsed = time.perf_counter() - start
    assert code == status, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("stepaudio"), line
    for fragment in fragments:
        assert fragment in line, line
    assert "Traceback" not in stderr and "loaded from" not in stderr  # no model was loaded
    assert elapsed < 5.0, f"{elapsed:.1f} s: the check ran after some expensive work"
    assert "open http" not in stdout
    assert files_under(tmp_path) == before  # nothing written, inside or outside the output folder


def test_usage_errors_cover_more_than_the_issue_lists():
    assert len(USAGE_CASES) >= 90


def test_port_in_use_is_refused_before_loading(root, files, tmp_path, capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        argv = ["serve-realtime", "--model-path", str(root), "--port", str(port)]
        code, stdout, stderr = run(argv, capsys)
    assert code == USAGE
    assert error_lines(stderr) == [
        f"stepaudio serve-realtime: error: --port {port} on 127.0.0.1 is already in use by another program; "
        "pick another with --port"
    ]
    assert "open http" not in stdout and "loaded from" not in stderr


def test_version(capsys):
    code, stdout, _ = run(["--version"], capsys)
    from stepaudio import __version__

    assert code == 0 and stdout.strip() == f"stepaudio {__version__}"


def test_verbose_adds_the_traceback(root, files, tmp_path, capsys):
    code, _, stderr = run(TTS[:1] + ["--verbose"] + expand(TTS[1:], root, tmp_path, files) + ["--speed", "0"], capsys)
    assert code == USAGE and "Traceback (most recent call last)" in stderr
    assert error_lines(stderr)[-1].startswith("stepaudio tts: error: --speed must be")


# Errors found while working (after the models loaded): exit 1, one line, no output file.
def test_clone_prompt_too_long_for_the_model_is_refused_before_tokenizing(root, files, tmp_path, capsys):
    argv = CLONE + ["--prompt-wav", "{long_prompt}", "--text", "你好"]
    code, _, stderr = run(expand(argv, root, tmp_path / "out", files), capsys)
    assert code == RUNTIME, stderr
    (line,) = error_lines(stderr)
    assert "lasts 60.0 s" in line and "max_seq_len" in line
    assert not (tmp_path / "out").exists()


def test_ten_minute_chat_turn_is_refused_from_its_duration(root, files, tmp_path, capsys):
    start = time.perf_counter()
    code, _, stderr = run(expand(CHAT + ["--audio", "{ten_minutes}"], root, tmp_path, files), capsys)
    elapsed = time.perf_counter() - start
    assert code == RUNTIME, stderr
    (line,) = error_lines(stderr)
    assert "600.0 s" in line and "max_seq_len" in line
    assert elapsed < 30, f"refused only after {elapsed:.0f} s: the clip was tokenized first"


def test_tokenize_failures_leave_no_output_file(root, files, tmp_path, capsys):
    output = tmp_path / "tokens.jsonl"
    code, _, stderr = run(expand(TOKENIZE + ["{silent}", "--output", str(output)], root, tmp_path, files), capsys)
    assert code == RUNTIME
    (line,) = error_lines(stderr)
    assert "all zeros" in line
    assert files_under(tmp_path) == []


def test_tokenize_takes_the_parent_folder_like_every_command(root, files, tmp_path, capsys):
    output = tmp_path / "tokens.jsonl"
    code, _, stderr = run(expand(TOKENIZE + ["{speech}", "--output", str(output)], root, tmp_path, files), capsys)
    assert code == 0, stderr
    assert output.read_text().count("<audio_") > 0


def test_unknown_tag_can_be_allowed(root, files, tmp_path, capsys):
    argv = TTS + ["--text", "（愤怒9）你好", "--allow-unknown-tags", "--max-speech-seconds", "0.5"]
    code, stdout, stderr = run(expand(argv, root, tmp_path / "out", files), capsys)
    assert code == 0, stderr
    assert "unknown tag （愤怒9）" in stderr  # said once, as a warning
    assert (tmp_path / "out" / "Tingting_tts.wav").is_file()


# The root scripts have parsers of their own: run them as a user does.
def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=PROJECT_ROOT, timeout=300
    )


def test_script_help_names_the_script_and_shows_every_flag():
    offline = _script("offline_inference.py", "--help")
    assert offline.returncode == 0 and offline.stdout.startswith("usage: offline_inference.py")
    for flag in ("--max-new-tokens", "--max-speech-seconds", "--speakers-dir", "--seed", "--text", "--audio"):
        assert flag in offline.stdout
    tts = _script("tts_inference.py", "--help")
    assert (
        tts.returncode == 0 and tts.stdout.startswith("usage: tts_inference.py") and "stepaudio tts" not in tts.stdout
    )
    assert _script("tts_inference.py", "--version").stdout.startswith("stepaudio ")


def test_script_refuses_an_escaping_speaker_name(root, tmp_path):
    done = _script(
        "tts_inference.py", "--model-path", str(root), "--output-path", str(tmp_path / "out"),
        "--synthesis-type", "clone", "--speaker", "../escaped", "--prompt-wav", str(root / "speakers" /
        "Tingting_prompt.wav"), "--prompt-text", "hello",
    )  # fmt: skip
    assert done.returncode == USAGE
    assert done.stderr.strip().splitlines()[-1].startswith("tts_inference.py: error: --speaker must be a name")
    assert files_under(tmp_path) == []


def test_script_argparse_errors_are_one_line():
    done = _script("offline_inference.py", "--model-path")
    assert done.returncode == USAGE
    assert done.stderr.strip() == (
        "offline_inference.py: error: argument --model-path: expected one argument (see `offline_inference.py --help`)"
    )


def test_undecodable_stdin_line_is_skipped_and_the_chat_goes_on(root, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hi\n\xff\xfe bad\nbye\n")))
    code, stdout, stderr = run(["chat", "--model-path", str(root), "--max-new-tokens", "3", "--greedy"], capsys)
    assert code == 0, stderr
    assert error_lines(stderr) == [
        "stepaudio chat: error: line 2 of standard input is not valid Unicode: an unpaired surrogate U+DCFF at "
        "character 0 (undecodable bytes); pass UTF-8 text; the line was skipped"
    ]
    assert stdout.count("assistant: ") == 2


# The shared checks behind both interfaces (stepaudio.validation), and constructors outside the tts/chat tests.
@pytest.mark.parametrize(
    "name, ok",
    [("Tingting", True), ("Tingting哼唱", True), ("yu-qian_2.v1", True), ("../x", False), ("a/b", False),
     ("a\\b", False), (".hidden", False), ("", False), ("-rf", False), ("C:x", False), ("a b", False),
     ("a\x00b", False), ("x" * 65, False), (None, False), (5, False)],
)  # fmt: skip
def test_safe_names(name, ok):
    from stepaudio.errors import InvalidArgumentError
    from stepaudio.validation import check_safe_name

    if ok:
        assert check_safe_name(name, "speaker") == name
    else:
        with pytest.raises(InvalidArgumentError, match="speaker must be a name of at most 64"):
            check_safe_name(name, "speaker")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": -1}, "seed must be a whole number from 0"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"n_timesteps": 0}, "n_timesteps must be a whole number from 1 to 1000"),
        ({"device": "gpu"}, "device must be a device such as 'cpu'"),
        ({"dtype": "int8"}, "dtype must be one of"),
    ],
)
def test_decoder_constructor_checks_arguments_before_the_folder(kwargs, message):
    from stepaudio.cosyvoice import CosyVoiceDecoder
    from stepaudio.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        CosyVoiceDecoder.from_pretrained("/nonexistent/CosyVoice-300M-25Hz", **kwargs)


def test_write_audio_leaves_no_partial_file(tmp_path):
    from stepaudio.audio import write_audio

    path = write_audio(tmp_path / "new" / "a.wav", np.zeros((1, 2205), np.float32), 22050)
    assert soundfile.info(path).frames == 2205 and files_under(tmp_path) == [path]
    with pytest.raises(Exception):  # noqa: B017 (any soundfile error): a rate soundfile cannot write
        write_audio(tmp_path / "b.wav", np.zeros(100, np.float32), 0)
    assert files_under(tmp_path) == [path]  # neither b.wav nor its temporary file
