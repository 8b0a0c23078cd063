"""The Gradio demo (``stepaudio.server.ui``) mounted on a FastAPI app served by uvicorn: every handler called
through ``gradio_client`` over HTTP with real speech, the library's input errors reaching the client as
its one-line messages; in headless Chromium, a screenshot of the rendered page, an error pop-up with the
library's message, and a voice-chat turn recorded from Chromium's fake microphone.

The pipeline is the tiny-fixture ``StepAudio`` of ``conftest.realtime_pipeline`` (random weights): the
outputs are checked for what they are (22050 Hz wav with samples, a reply text), not for what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import gradio_client  # the dev extra
import pytest
import soundfile
from browser_helpers import DevTools, find_chromium
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from server_helpers import free_port

from stepaudio.errors import InvalidArgumentError, PromptError

CHAT_CLIP = "BAC009S0764W0121.wav"
CLONE_CLIP = "prompt_wav_yuqian.wav"
CLONE_TRANSCRIPT = "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。"
#: The fixture chat model never ends its turn: a few tokens keep every reply short.
CHAT_MAX_NEW_TOKENS = 6
SCREEN_SIZE = (1280, 900)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # Chromium refuses to run as root with its sandbox
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def shared_clip(shared_audio_dir: Path, name: str) -> Path:
    path = shared_audio_dir / name
    if not path.is_file():
        pytest.fail(f"the UI tests read {path} (shared/audio beside the project checkout); it is missing")
    return path


def wav_info(path: object):
    assert isinstance(path, str) and Path(path).is_file(), f"expected an audio file from the server, got {path!r}"
    return soundfile.info(path)


def library_message(call) -> str:
    """The one-line message the library raises for ``call()``, as the page shows it (HTML-escaped)."""
    with pytest.raises((PromptError, InvalidArgumentError)) as raised:
        call()
    return html.escape(str(raised.value), quote=False)


@pytest.fixture(scope="module")
def pipeline(realtime_pipeline):
    return realtime_pipeline


@pytest.fixture(scope="module")
def served(pipeline):
    """The demo at /ui of a FastAPI app (with a route of its own), served by uvicorn in a thread."""
    import fastapi
    import uvicorn

    from stepaudio.server.ui import mount_ui

    app = fastapi.FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    blocks = mount_ui(app, pipeline, max_new_tokens=CHAT_MAX_NEW_TOKENS)
    gradio_app = next(route.app for route in app.routes if getattr(route, "path", None) == "/ui")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    )
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="ui-test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start the app with the mounted demo within 60 s")
        time.sleep(0.05)
    try:
        yield blocks, f"http://127.0.0.1:{port}"
    finally:
        # Gradio's session heartbeats stream until its stop event: end them, or uvicorn waits for them.
        loops[0].call_soon_threadsafe(gradio_app.stop_event.set)
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"


@pytest.fixture(scope="module")
def client(served):
    _, base = served
    client = gradio_client.Client(f"{base}/ui/", verbose=False)
    yield client
    client.close()


def test_mounted_beside_the_app_with_every_handler_named_and_model_work_in_one_slot(served, client):
    blocks, base = served
    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{base}/ui/", timeout=10) as response:
        assert response.status == 200 and b"<html" in response.read().lower()

    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/voice_chat", "/clear_chat", "/tts", "/clone_voice"} <= set(endpoints)

    model_events = [fn for fn in blocks.fns.values() if fn.api_name in ("voice_chat", "tts", "clone_voice")]
    assert len(model_events) == 3
    assert {fn.concurrency_limit for fn in model_events} == {1}
    assert len({fn.concurrency_id for fn in model_events}) == 1, "the models are shared: one queue slot for all"
    assert all(fn.api_name for fn in blocks.fns.values()), "every event handler has an api_name"


def test_voice_chat_with_an_uploaded_clip_keeps_the_conversation(client, shared_audio_dir):
    clip = shared_clip(shared_audio_dir, CHAT_CLIP)
    started = time.monotonic()
    chat, reply, reply_audio = client.predict(handle_file(str(clip)), "", "Tingting", api_name="/voice_chat")
    print(f"voice chat turn (4.2 s clip): {time.monotonic() - started:.1f} s")
    assert isinstance(reply, str) and reply.strip(), f"expected a reply text, got {reply!r}"
    info = wav_info(reply_audio)
    assert info.samplerate == 22050 and info.frames > 0
    assert [message["role"] for message in chat] == ["user", "assistant"]
    assert any(part.get("type") == "file" for part in chat[0]["content"]), "the user's clip is shown in the chat"

    # A typed follow-up: the conversation so far stays in the session.
    chat, reply, _ = client.predict(None, "再说一遍", "Tingting", api_name="/voice_chat")
    assert isinstance(reply, str) and reply.strip()
    assert [message["role"] for message in chat] == ["user", "assistant", "user", "assistant"]

    cleared = client.predict(api_name="/clear_chat")
    assert cleared[0] == [] and cleared[1] == ""


def test_tts_with_a_tag_and_a_speed(client):
    started = time.monotonic()
    speech = client.predict("今天天气真不错，我们出去走走吧。", "Tingting", "高兴1", 1.5, 0.8, api_name="/tts")
    print(f"tts: {time.monotonic() - started:.1f} s")
    info = wav_info(speech)
    assert info.samplerate == 22050 and info.frames > 0 and info.channels == 1


def test_voice_cloning_from_an_upload_and_its_transcript(client, shared_audio_dir):
    clip = shared_clip(shared_audio_dir, CLONE_CLIP)
    started = time.monotonic()
    speech = client.predict(
        handle_file(str(clip)), CLONE_TRANSCRIPT, "你好，欢迎收听今天的节目。", 1.0, 1.0, api_name="/clone_voice"
    )
    print(f"clone: {time.monotonic() - started:.1f} s")
    info = wav_info(speech)
    assert info.samplerate == 22050 and info.frames > 0


def test_bad_input_shows_the_library_message_not_a_traceback(client, pipeline, shared_audio_dir, capfd):
    tts = pipeline.tts
    cases = [
        (("", "Tingting", "", 1.0, 1.0), lambda: tts.check_request("", "Tingting")),
        (("你好。", "Nobody", "", 1.0, 1.0), lambda: tts.check_request("你好。", "Nobody")),
        (("", "Tingting", "高兴1", 1.0, 1.0), lambda: tts.check_request("（高兴1）", "Tingting")),  # a tag alone
    ]
    for arguments, call in cases:
        expected = library_message(call)
        with pytest.raises(AppError) as raised:
            client.predict(*arguments, api_name="/tts")
        assert raised.value.message == expected

    # The same for a chat turn in a voice that is not registered, and a clone without its transcript.
    with pytest.raises(AppError) as raised:
        client.predict(None, "你好", "Nobody", api_name="/voice_chat")
    assert raised.value.message == library_message(lambda: tts.check_speaker("Nobody"))
    with pytest.raises(AppError, match="transcript"):
        client.predict(
            handle_file(str(shared_clip(shared_audio_dir, CLONE_CLIP))), " ", "你好", 1.0, 1.0, api_name="/clone_voice"
        )
    assert "Traceback" not in capfd.readouterr().err


def test_build_ui_checks_its_settings_and_needs_gradio(pipeline, monkeypatch):
    from stepaudio.server.ui import build_ui

    with pytest.raises(PromptError, match="unknown speaker 'Nobody'"):
        build_ui(pipeline, speakers=["Nobody"])
    with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
        build_ui(pipeline, max_new_tokens=0)
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)
    with pytest.raises(ImportError, match=r"pip install 'stepaudio\[ui\]'"):
        build_ui(pipeline)


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a page, with 20 s of virtual time for the client-side rendering to finish."""
    command = [
        find_chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={SCREEN_SIZE[0]},{SCREEN_SIZE[1]}",
        "--virtual-time-budget=20000",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def test_page_renders_in_headless_chromium(served, tmp_path):
    from PIL import Image

    _, base = served
    url = f"{base}/ui/"
    started = time.monotonic()
    dom = chromium(tmp_path, "--dump-dom", url)
    text = dom.stdout.decode(errors="replace")
    for label in ("Voice chat", "Text to speech", "Voice cloning", "Step-Audio"):
        assert label in text, f"the rendered page lacks {label!r}; Chromium stderr:\n{dom.stderr.decode()[-2000:]}"

    screenshot = tmp_path / "ui.png"
    shot = chromium(tmp_path, f"--screenshot={screenshot}", url)
    print(f"chromium dom + screenshot: {time.monotonic() - started:.1f} s")
    assert screenshot.is_file(), f"Chromium wrote no screenshot; stderr:\n{shot.stderr.decode()[-2000:]}"
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == SCREEN_SIZE
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 50, f"the screenshot looks blank ({len(colours)} colours)"


class Page(DevTools):
    """A Gradio page in headless Chromium: DevTools commands plus clicking a labelled button."""

    async def click(self, selector: str, label: str, what: str, timeout: float = 30.0) -> None:
        """Click the visible ``selector`` element whose text is ``label``, once there is one."""
        await self.until(CLICK_BUTTON % (json.dumps(selector), json.dumps(label)), what, timeout)


CLICK_BUTTON = """(() => {
    const button = [...document.querySelectorAll(%s)].find(
        b => b.textContent.trim() === %s && b.getClientRects().length > 0 && getComputedStyle(b).visibility !== 'hidden'
    );
    if (!button) return false;
    button.click();
    return true;
})()"""

TOASTS = "[...document.querySelectorAll('.toast-body')].map(t => t.innerText).join('\\n')"


@contextlib.asynccontextmanager
async def browser_page(url: str, profile: Path, *flags: str):
    """Headless Chromium showing ``url``; yields a :class:`Page`."""
    from websockets.asyncio.client import connect

    command = [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", *flags]
    browser = subprocess.Popen([*command, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if browser.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open DevTools: {browser.stderr.read().decode()[-2000:]}")
            await asyncio.sleep(0.1)
        devtools_port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10) as response:
            target = next(target for target in json.load(response) if target["type"] == "page")
        async with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
            page = Page(socket)
            await page.call("Page.navigate", url=url)
            yield page
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()


def test_the_page_shows_a_library_error_as_a_pop_up(served, pipeline, tmp_path):
    """In the browser: Text to speech tab, Speak with no text -> the library's message in Gradio's error pop-up."""
    _, base = served
    expected = library_message(lambda: pipeline.tts.check_request("", "Tingting"))

    async def scenario() -> str:
        async with browser_page(f"{base}/ui/", tmp_path / "chromium-profile") as page:
            await page.click("button[role=tab]", "Text to speech", "the Text to speech tab")
            await page.click("button", "Speak", "the Speak button")
            return await page.until(TOASTS, "an error pop-up")

    shown = asyncio.run(scenario())
    assert html.unescape(expected) in shown
    assert "Traceback" not in shown


def test_voice_chat_from_the_browser_microphone(served, shared_audio_dir, tmp_path):
    """Chromium's fake microphone plays a clip; Record, Stop, Send: the recording reaches the models, a reply comes."""
    _, base = served
    clip = shared_clip(shared_audio_dir, CHAT_CLIP)
    microphone = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clip}",
    ]

    async def scenario() -> tuple[str, str]:
        async with browser_page(f"{base}/ui/", tmp_path / "chromium-profile", *microphone) as page:
            await page.click("button", "Record", "the Record button")
            await asyncio.sleep(2.5)
            await page.click("button", "Stop", "the Stop button")
            await asyncio.sleep(1.0)  # the recording is encoded and uploaded
            await page.click("button", "Send", "the Send button")
            reply = await page.until(
                "(() => { const t = [...document.querySelectorAll('textarea')].find(e => e.disabled && e.value);"
                " return t ? t.value : ''; })()",
                "a reply",
                timeout=60,
            )
            return reply, await page.evaluate(TOASTS)

    reply, toasts = asyncio.run(scenario())
    assert reply.strip() and not toasts, (reply, toasts)
