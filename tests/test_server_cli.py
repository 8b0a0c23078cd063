"""``stepaudio serve`` end to end: the command serves the API, the real-time page and the demo on one port."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_root(tiny_model_root) -> Path:
    """The tiny official folders the served command loads."""
    return tiny_model_root


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.geturl(), response.read()


def test_serve_command_serves_api_realtime_page_and_demo_then_stops_on_ctrl_c(model_root):
    from openai import OpenAI

    port = _free_port()
    command = [sys.executable, "-m", "stepaudio", "serve", "--model-path", str(model_root), "--port", str(port)]
    command += ["--max-speech-seconds", "0.5", "--ui"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("Ctrl-C to stop" in line for line in lines), "".join(lines)
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
    finally:
        server.send_signal(signal.SIGINT)
        try:
            rest, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            rest, _ = server.communicate()
    assert server.returncode == 0, "".join(lines) + rest
    assert "Traceback" not in rest


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
        [sys.executable, "-m", "stepaudio", "serve", "--model-path", str(model_root), "--port", str(_free_port())]
        + options,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepaudio serve: error: ") and message in lines[0], done.stderr
    assert "loaded" not in done.stderr
