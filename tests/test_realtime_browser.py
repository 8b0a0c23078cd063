"""The browser page in real headless Chromium: a wav plays as the microphone, reply audio plays back;
the page shows its connection, reconnects after the server comes back and its log follows new lines.

Chromium comes from Debian (``apt-get install -y chromium``).  It is driven through the DevTools
protocol over a WebSocket (the ``websockets`` client the server tests use already), so no browser
automation package is needed.  Without Chromium the test fails with the install line; it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from browser_helpers import DevTools, find_chromium
from realtime_helpers import fixture_config, fixture_pipeline
from websockets.asyncio.client import connect

from stepaudio.realtime.asgi import mount_realtime
from stepaudio.realtime.server import AsgiServer, RealtimeServer, ServerConfig

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


@pytest.fixture(scope="module")
def pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, tmp_path_factory):
    from stepaudio.testing import build_tiny_speakers_folder

    speakers = build_tiny_speakers_folder(tmp_path_factory.mktemp("speakers") / "speakers")
    return fixture_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, speakers)


@contextlib.asynccontextmanager
async def chromium_page(chromium: str, wav: Path, user_data_dir: Path, url: str):
    """Headless Chromium with ``wav`` as its microphone, showing ``url``; yields a :class:`DevTools` client."""
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
            yield devtools
    finally:
        browser.terminate()
        try:
            await asyncio.to_thread(browser.wait, 10)
        except subprocess.TimeoutExpired:
            browser.kill()


PAGE_STATE = """JSON.stringify(Object.assign({}, window.realtime || {}, {
    stateText: document.getElementById('state').textContent,
    connectionText: document.getElementById('connection').textContent,
    startDisabled: document.getElementById('start').disabled,
    startText: document.getElementById('start').textContent,
    stopDisabled: document.getElementById('stop').disabled,
}))"""


async def page_state(devtools: DevTools) -> dict:
    return json.loads(await devtools.evaluate(PAGE_STATE) or "{}")


async def wait_for_page(devtools: DevTools, predicate, timeout: float, what: str) -> dict:
    """Poll the page until ``predicate(state)``; fails with the last state after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        state = await page_state(devtools)
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"the page did not reach: {what} within {timeout} s; its state: {state}")
        await asyncio.sleep(0.1)


def page_server(pipeline, where: str) -> tuple[RealtimeServer | AsgiServer, str]:
    """``serve-realtime``'s server (page at /), or a bigger FastAPI app with the service mounted (/realtime/)."""
    config = fixture_config(end_of_turn_ms=600)
    if where == "serve-realtime":
        return RealtimeServer(pipeline, config, ServerConfig(port=0)), "/"
    from fastapi import FastAPI

    app = FastAPI()
    app.get("/other")(lambda: {"other": True})
    mount_realtime(app, pipeline, config)
    return AsgiServer(app, "127.0.0.1", 0), "/realtime"  # redirected to /realtime/, the scripts relative to it


@pytest.mark.parametrize("where", ["serve-realtime", "mounted"])
def test_browser_page_captures_the_microphone_and_plays_the_reply(pipeline, shared_audio_dir, tmp_path, where):
    chromium = find_chromium()
    wav = microphone_wav(shared_audio_dir, tmp_path)

    async def scenario() -> dict:
        server, page = page_server(pipeline, where)
        await server.start()
        url = f"http://127.0.0.1:{server.port}{page}?autostart=1"
        try:
            async with chromium_page(chromium, wav, tmp_path / "chromium-profile", url) as devtools:
                state: dict = {}
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    state = await page_state(devtools)
                    if state.get("chunksPlayed", 0) >= 1 or state.get("status") == "failed":
                        break
                    await asyncio.sleep(0.25)
                return state
        finally:
            await server.stop()

    state = asyncio.run(scenario())
    assert state.get("status") == "running", state
    assert state["connection"] == "connected" and state["connectionText"] == "connected", state
    assert state["startDisabled"] and not state["stopDisabled"], state
    assert not state["errors"], state["errors"]
    assert state["framesSent"] > 50  # the fake microphone streamed through the AudioWorklet
    assert state["chunksReceived"] >= 1, state
    assert state["chunksPlayed"] >= 1 and state["secondsPlayed"] > 0, state
    assert state["replyText"]


def test_browser_page_survives_the_server_going_away_mid_reply_and_reconnects(pipeline, shared_audio_dir, tmp_path):
    chromium = find_chromium()
    wav = microphone_wav(shared_audio_dir, tmp_path)
    config = fixture_config(end_of_turn_ms=600)
    seen: dict[str, dict] = {}

    async def scenario() -> None:
        server = RealtimeServer(pipeline, config, ServerConfig(port=0))
        await server.start()
        port = server.port
        try:
            url = f"http://127.0.0.1:{port}/?autostart=1"
            async with chromium_page(chromium, wav, tmp_path / "chromium-profile", url) as devtools:
                seen["replying"] = await wait_for_page(
                    devtools,
                    lambda s: s.get("state") == "bot_replying" or s.get("status") == "failed",
                    90,
                    "a reply under way",
                )
                await server.stop()  # the server goes away while the bot replies
                server = None
                seen["lost"] = await wait_for_page(
                    devtools, lambda s: s["connection"] == "reconnecting", 15, "reconnecting"
                )
                # attempts go on while the server is down (the first retry comes after 1 s and fails)
                seen["retrying"] = await wait_for_page(
                    devtools, lambda s: s["reconnects"] >= 1 and s["connection"] == "reconnecting", 15, "a failed retry"
                )
                server = RealtimeServer(pipeline, config, ServerConfig(port=port))  # back on the same port
                await server.start()
                seen["back"] = await wait_for_page(
                    devtools, lambda s: s["connection"] == "connected" and s["connects"] == 2, 30, "reconnected"
                )

                # the log keeps the newest 500 lines and follows them unless the user scrolled up
                await devtools.evaluate("for (let i = 0; i < 600; i++) realtime.log('line ' + i, 'info'); 0")
                seen["log"] = json.loads(
                    await devtools.evaluate(
                        "(() => { const log = document.getElementById('log'); return JSON.stringify({"
                        "lines: log.childElementCount, last: log.lastElementChild.textContent,"
                        "gap: log.scrollHeight - log.scrollTop - log.clientHeight}); })()"
                    )
                )
                await devtools.evaluate("document.getElementById('log').scrollTop = 0")
                await wait_for_page(devtools, lambda s: not s["logFollowing"], 5, "the log no longer following")
                await devtools.evaluate("realtime.log('while scrolled up', 'info')")
                seen["scrolled_up"] = {"top": await devtools.evaluate("document.getElementById('log').scrollTop")}

                await devtools.evaluate("document.getElementById('stop').click()")
                seen["stopped"] = await wait_for_page(
                    devtools, lambda s: s["connection"] == "disconnected", 10, "disconnected after Stop"
                )
                await asyncio.sleep(2.5)  # Stop cancels reconnecting: nothing happens any more
                seen["after_stop"] = await page_state(devtools)
        finally:
            if server is not None:
                await server.stop()

    asyncio.run(scenario())
    replying, lost, retrying, back = seen["replying"], seen["lost"], seen["retrying"], seen["back"]
    assert replying["connection"] == "connected" and replying["connects"] == 1, replying
    # mid-reply loss: playback stopped, the conversation indicator reset, the connection state shown,
    # Stop usable and Start offering to retry at once
    assert lost["state"] == "idle" and lost["stateText"] == "idle", lost
    assert lost["connectionText"].startswith("reconnecting in "), lost
    assert lost["lastClose"]["code"] == 1001, lost
    assert not lost["stopDisabled"] and not lost["startDisabled"] and lost["startText"] == "Reconnect now", lost
    assert retrying["status"] == "reconnecting", retrying
    assert back["reconnects"] >= 1 and back["startDisabled"] and not back["stopDisabled"], back
    assert back["connectionText"] == "connected" and back["startText"] == "Start", back
    assert not back["errors"], back["errors"]
    log = seen["log"]
    assert log["lines"] == 500 and log["last"] == "line 599" and log["gap"] < 8, log
    assert seen["scrolled_up"]["top"] == 0
    stopped, after_stop = seen["stopped"], seen["after_stop"]
    assert stopped["stopDisabled"] and not stopped["startDisabled"] and stopped["startText"] == "Start", stopped
    assert after_stop["connection"] == "disconnected" and after_stop["reconnects"] == stopped["reconnects"]
    assert after_stop["connects"] == 2 and after_stop["status"] == "closed", after_stop
