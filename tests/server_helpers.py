"""Helpers of the OpenAI-compatible server tests: a live uvicorn server on a free loopback port, clients of it,
the ``stepaudio serve`` command run as a process, audio decoding."""

from __future__ import annotations

import base64
import io
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import soundfile


@contextmanager
def live_server(app, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of an audio file's bytes (any format libsndfile reads), read block by block.

    Block reading also works for streamed files whose header gives no length.
    """
    with soundfile.SoundFile(io.BytesIO(data)) as handle:
        blocks = list(handle.blocks(blocksize=4096, dtype="float32", always_2d=True))
        rate = handle.samplerate
    samples = np.concatenate(blocks)[:, 0] if blocks else np.zeros(0, np.float32)
    return samples, rate


def b64_file(path) -> str:
    """A file's bytes as base64 text."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit WAV bytes of float samples."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server started by its port number)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def openai_client(base_url: str):
    """The official ``openai`` client of the server at ``base_url`` (no retries, generous timeout)."""
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@contextmanager
def http_client(base_url: str) -> Iterator:
    """An ``httpx`` client of the server at ``base_url``, closed on exit."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session


@contextmanager
def serve_process(arguments: list[str], start_timeout: float = 180.0) -> Iterator[list[str]]:
    """Run ``python -m stepaudio serve ARGUMENTS`` until it prints "Ctrl-C to stop"; yields its output lines so far.

    On leaving the block the process gets Ctrl-C and must exit with 0 and no traceback (checked only when
    the block itself passed).
    """
    command = [sys.executable, "-m", "stepaudio", "serve", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert any("Ctrl-C to stop" in line for line in lines), "".join(lines)
        yield lines
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
    assert process.returncode == 0, "".join(lines) + rest
    assert "Traceback" not in rest
