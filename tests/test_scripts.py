"""The root scripts and the `stepaudio` commands, end to end on tiny fixture folders (as a newcomer runs them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

PROJECT_ROOT = Path(__file__).resolve().parents[1]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
MAX_SPEECH_SECONDS = 2.0


@pytest.fixture(scope="module")
def fixture_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    done = subprocess.run(
        [sys.executable, "-m", "stepaudio.testing", str(folder)], capture_output=True, text=True, env=ENV, check=True
    )
    for name in ("Step-Audio-Chat", "Step-Audio-TTS-3B", "Step-Audio-Tokenizer", "speakers"):
        assert name in done.stdout and (folder / name).is_dir()
    return folder


def _run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=PROJECT_ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _check_speech(path, max_seconds: float) -> float:
    audio, rate = soundfile.read(path, dtype="float32")
    seconds = len(audio) / rate
    assert rate == 22050
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3  # finite and not silent
    assert 0.1 < seconds <= max_seconds + 0.05  # plausible: bounded by the requested limit
    return seconds


def assert_no_third_party_noise(stderr: str) -> None:
    """Only stepaudio's own log records and progress bars reach the user: no notices or warnings of other libraries."""
    for line in stderr.replace("\r", "\n").splitlines():
        line = line.strip()
        if not line or line.startswith(("INFO stepaudio", "WARNING stepaudio")):
            continue
        assert line.startswith(("speech tokens", "segments")), f"third-party output on stderr: {line!r}"
    for noise in ("Loading weights", "ffmpeg", "torchaudio", "trust_remote_code", "huggingface"):
        assert noise not in stderr


def test_offline_inference_text_then_audio_turn(fixture_models, tmp_path):
    done = _run(
        "offline_inference.py",
        "--model-path",
        str(fixture_models),
        "--output-path",
        str(tmp_path),
        "--max-speech-seconds",
        str(MAX_SPEECH_SECONDS),
        "--max-new-tokens",
        "10",
        "--seed",
        "0",
    )
    assert_no_third_party_noise(done.stderr)
    assert "user: 你好" in done.stdout and f"user (audio): {tmp_path / 'reply_0.wav'}" in done.stdout
    assert done.stdout.count("assistant: ") == 2
    for name in ("reply_0.wav", "reply_1.wav"):
        # One segment per reply here (10 tokens of text fit in one segment).
        _check_speech(tmp_path / name, MAX_SPEECH_SECONDS)


@pytest.mark.parametrize("synthesis_type", ["tts", "clone"])
def test_tts_inference(fixture_models, tmp_path, shared_audio_dir, synthesis_type):
    args = [
        "tts_inference.py",
        "--model-path",
        str(fixture_models),
        "--output-path",
        str(tmp_path),
        "--synthesis-type",
        synthesis_type,
        "--max-speech-seconds",
        str(MAX_SPEECH_SECONDS),
        "--seed",
        "0",
    ]
    if synthesis_type == "clone":
        args += [
            "--prompt-wav",
            str(shared_audio_dir / "prompt_wav_yuqian.wav"),
            "--prompt-text",
            "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。",
            "--speaker",
            "yuqian",
        ]
    done = _run(*args)
    assert_no_third_party_noise(done.stderr)
    name = "Tingting_tts.wav" if synthesis_type == "tts" else "yuqian_clone.wav"
    assert f"wrote {tmp_path / name}" in done.stdout
    _check_speech(tmp_path / name, MAX_SPEECH_SECONDS)


def test_tts_command_streams_and_clone_needs_a_prompt(fixture_models, tmp_path):
    done = _run(
        "-m",
        "stepaudio.cli",
        "tts",
        "--model-path",
        str(fixture_models),
        "--output-path",
        str(tmp_path),
        "--text",
        "（RAP）说唱一句",
        "--stream",
        "--max-speech-seconds",
        "1.5",
    )
    assert "chunk 1:" in done.stdout
    _check_speech(tmp_path / "Tingting_tts.wav", 1.5)
    failed = subprocess.run(
        [
            sys.executable,
            "tts_inference.py",
            "--model-path",
            str(fixture_models),
            "--output-path",
            str(tmp_path),
            "--synthesis-type",
            "clone",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=PROJECT_ROOT,
    )
    assert failed.returncode == 2 and "needs --prompt-wav CLIP" in failed.stderr


def test_tokenize_command_writes_json_lines(fixture_models, tmp_path, shared_audio_dir):
    out = tmp_path / "tokens.jsonl"
    clips = [str(shared_audio_dir / "BAC009S0764W0121.wav"), str(shared_audio_dir / "espeak_en.flac")]
    _run(
        "-m",
        "stepaudio.cli",
        "tokenize",
        "--model-path",
        str(fixture_models),
        *clips,
        "--output",
        str(out),
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == clips
    assert all(r["tokens"].startswith("<audio_") and r["num_tokens"] % 5 == 0 for r in records)


def test_missing_model_folder_is_explained(tmp_path):
    done = subprocess.run(
        [sys.executable, "tts_inference.py", "--model-path", str(tmp_path), "--output-path", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 2  # a usage error: found before anything is loaded
    assert done.stderr.strip() == (
        f"tts_inference.py: error: --model-path {tmp_path} holds no Step-Audio-TTS-3B folder: neither "
        f"{tmp_path / 'config.json'} nor {tmp_path / 'Step-Audio-TTS-3B' / 'config.json'} exists; pass the folder "
        "that contains Step-Audio-TTS-3B/ (or --tts-path STEP_AUDIO_TTS_3B_DIR)"
    )
