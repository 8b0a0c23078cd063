"""Helpers of the OpenAI-compatible server tests: a live uvicorn server on a free loopback port, audio decoding."""

from __future__ import annotations

import base64
import io
import socket
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
