"""``stepaudio serve`` end to end: the command serves the API, the real-time page and the demo on one port."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile
from server_helpers import free_port, serve_process


@pytest.fixture(scope="module")
def model_root(tiny_model_root) -> Path:
    """The tiny official folders the served command loads."""
    return tiny_model_root


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.geturl(), response.read()


def test_serve_command_serves_api_realtime_page_and_demo_then_stops_on_ctrl_c(model_root):
    from openai import OpenAI

    port = free_port()
    arguments = ["--model-path", str(model_root), "--port", str(port), "--max-speech-seconds", "0.5", "--ui"]
    with serve_process(arguments) as lines:
        base = f"http://127.0.0.1:{port}"
        assert f"OpenAI-compatible API at {base}/v1\n" in lines
        status, _, body = _get(f"{base}/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, final_url, _ = _get(f"{base}/")  # the front page is the demo when --ui is given
        assert status == 200 and final_url == f"{base}/ui/"
        status, _, page = _get(f"{base}/realtime/")
        assert status == 200 and b"app.js" in page
        client = OpenAI(base_url=f"{base}/v1", api_key="unused")
        speech = client.audio.speech.create(model="tts-1", voice="Tingting", input="你好", response_format="wav")
        audio, rate = soundfile.read(io.BytesIO(speech.content))
        assert rate == 24000 and audio.shape[0] > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sample-rate", "1000"], "--sample-rate"),
        (["--max-queued-requests", "-1"], "--max-queued-requests"),
        (["--max-body-mb", "0"], "--max-body-mb must be a positive number of MiB, got 0.0"),
    ],
)
def test_serve_command_refuses_bad_options_in_one_line_before_loading(model_root, options, message):
    done = subprocess.run(
        [sys.executable, "-m", "stepaudio", "serve", "--model-path", str(model_root), "--port", str(free_port())]
        + options,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepaudio serve: error: ") and message in lines[0], done.stderr
    assert "loaded" not in done.stderr
