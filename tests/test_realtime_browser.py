"""The browser page in real headless Chromium: a wav plays as the microphone, reply audio plays back.

Chromium comes from Debian (``apt-get install -y chromium``).  It is driven through the DevTools
protocol over a WebSocket (the ``websockets`` client the server tests use already), so no browser
automation package is needed.  Without Chromium the test fails with the install line; it never skips.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from realtime_helpers import fixture_config, fixture_pipeline
from websockets.asyncio.client import connect

from stepaudio.realtime.server import RealtimeServer, ServerConfig

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # Chromium refuses to run as root with its sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "the browser test needs Debian's Chromium and none was found on PATH; install it with "
        "`apt-get install -y --no-install-recommends chromium`"
    )


def microphone_wav(shared_audio_dir: Path, folder: Path) -> Path:
    """0.5 s silence + an AISHELL utterance + 3 s silence, 16 kHz PCM16 (Chromium loops it)."""
    audio, rate = soundfile.read(shared_audio_dir / "BAC009S0764W0121.wav", dtype="float32")
    silence = lambda seconds: np.zeros(int(seconds * rate), np.float32)  # noqa: E731
    path = folder / "microphone.wav"
    soundfile.write(path, np.concatenate([silence(0.5), audio, silence(3.0)]), rate, subtype="PCM_16")
    return path


def devtools_port(user_data_dir: Path, browser: subprocess.Popen, timeout: float = 30.0) -> int:
    port_file = user_data_dir / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            pytest.fail(
                f"Chromium exited with status {browser.returncode} before opening DevTools; stderr:\n"
                f"{browser.stderr.read().decode(errors='replace')[-3000:]}"
            )
        if port_file.is_file() and port_file.read_text().strip():
            return int(port_file.read_text().splitlines()[0])
        time.sleep(0.1)
    pytest.fail(f"Chromium did not start its DevTools endpoint within {timeout} s (no {port_file})")


class DevTools:
    """The smallest DevTools-protocol client: numbered commands over one page WebSocket."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.next_id = 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@pytest.fixture(scope="module")
def pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, tmp_path_factory):
    from stepaudio.testing import build_tiny_speakers_folder

    speakers = build_tiny_speakers_folder(tmp_path_factory.mktemp("speakers") / "speakers")
    return fixture_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, speakers)


def test_browser_page_captures_the_microphone_and_plays_the_reply(pipeline, shared_audio_dir, tmp_path):
    chromium = find_chromium()
    wav = microphone_wav(shared_audio_dir, tmp_path)
    user_data_dir = tmp_path / "chromium-profile"

    async def scenario() -> dict:
        server = RealtimeServer(pipeline, fixture_config(end_of_turn_ms=600), ServerConfig(port=0))
        await server.start()
        url = f"http://127.0.0.1:{server.port}/?autostart=1"
        browser = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", f"--use-file-for-fake-audio-capture={wav}"]
            + ["about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            port = await asyncio.to_thread(devtools_port, user_data_dir, browser)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [target for target in json.load(response) if target["type"] == "page"]
            async with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as socket:
                devtools = DevTools(socket)
                await devtools.call("Page.navigate", url=url)
                state: dict = {}
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    state = json.loads(await devtools.evaluate("JSON.stringify(window.realtime || {})") or "{}")
                    if state.get("chunksPlayed", 0) >= 1 or state.get("status") == "failed":
                        break
                    await asyncio.sleep(0.25)
                state["stateText"] = await devtools.evaluate("document.getElementById('state').textContent")
                return state
        finally:
            browser.terminate()
            try:
                await asyncio.to_thread(browser.wait, 10)
            except subprocess.TimeoutExpired:
                browser.kill()
            await server.stop()

    state = asyncio.run(scenario())
    assert state.get("status") == "running", state
    assert not state["errors"], state["errors"]
    assert state["framesSent"] > 50  # the fake microphone streamed through the AudioWorklet
    assert state["chunksReceived"] >= 1, state
    assert state["chunksPlayed"] >= 1 and state["secondsPlayed"] > 0, state
    assert state["replyText"]
