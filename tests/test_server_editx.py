"""Step-Audio-EditX on the OpenAI-compatible server: cloning on ``/v1/audio/speech`` (the ``openai`` client) and
``POST /v1/audio/edits`` (httpx), against a live uvicorn server; the Edit tab of the Gradio demo (gradio_client).

The models are tiny random fixtures: what they say is noise, so the tests check the protocol -- status
codes, the library's one-line messages in OpenAI error bodies, audio that decodes at 24 kHz.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile
from server_helpers import (
    b64_file,
    decode,
    free_port,
    http_client,
    live_server,
    openai_client,
    serve_process,
    wav_bytes,
)

from stepaudio.assembly import ModelSettings, load_editx
from stepaudio.editx.edit_config import check_edit_request, check_language, check_n_edit_iter
from stepaudio.errors import InvalidArgumentError
from stepaudio.server import ServerSettings, create_app

CLONE_CLIP = "prompt_wav_yuqian.wav"
CLONE_TRANSCRIPT = "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。"
EDIT_CLIP = "BAC009S0764W0121.wav"
EDIT_TRANSCRIPT = "这是一段测试语音"
CHAT, TTS, EDITX = "step-audio-chat", "step-audio-tts-3b", "step-audio-editx"
MAX_BODY = 2 * 1024 * 1024
SETTINGS = {"max_body_bytes": MAX_BODY, "max_audio_seconds": 20.0, "max_queued_requests": 1}


@pytest.fixture(scope="module")
def editx(realtime_pipeline, tmp_path_factory):
    """A tiny Step-Audio-EditX built by the factory, sharing the pipeline's tokenizer (short outputs)."""
    from stepaudio.testing import build_tiny_editx_checkpoint

    folder = build_tiny_editx_checkpoint(tmp_path_factory.mktemp("editx") / "Step-Audio-EditX")
    settings = ModelSettings(device="cpu", editx_path=folder, max_speech_seconds=0.4)
    return load_editx(None, settings, tokenizer=realtime_pipeline.tokenizer)


@pytest.fixture(scope="module")
def server(realtime_pipeline, editx):
    """The API and the demo (ui=True) with EditX, served by uvicorn in a thread."""
    import uvicorn

    app = create_app(realtime_pipeline, ServerSettings(**SETTINGS), editx=editx, ui=True)
    gradio_app = next(route.app for route in app.routes if getattr(route, "path", None) == "/ui")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="editx-test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        # Gradio's session heartbeats stream until its stop event: end them, or uvicorn waits for them.
        server.servers[0].get_loop().call_soon_threadsafe(gradio_app.stop_event.set)
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai_client(server[0])


@pytest.fixture(scope="module")
def http(server):
    with http_client(server[0]) as session:
        yield session


@pytest.fixture(scope="module")
def clone_clip(shared_audio_dir: Path) -> Path:
    return shared_audio_dir / CLONE_CLIP


@pytest.fixture(scope="module")
def edit_clip(shared_audio_dir: Path) -> Path:
    return shared_audio_dir / EDIT_CLIP


def assert_error(response: httpx.Response, status: int, param: str | None, code: str | None) -> dict:
    """The response is an OpenAI error body with ``status``, ``param`` and ``code``; returns the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error = body["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert "\n" not in error["message"]
    return error


def library_message(call) -> str:
    with pytest.raises(InvalidArgumentError) as raised:
        call()
    return str(raised.value)


def clone_body(clip: Path, **fields) -> dict:
    return {"ref_audio": "data:audio/wav;base64," + b64_file(clip), "ref_text": CLONE_TRANSCRIPT, **fields}


# ------------------------------------------------------------------------------------------ models
def test_models_list_editx_when_loaded(client, http):
    assert [model.id for model in client.models.list()] == [CHAT, TTS, EDITX]
    assert client.models.retrieve(EDITX).id == EDITX
    assert http.get("/health").json()["models"] == [CHAT, TTS, EDITX]
    types = http.get("/v1/audio/edit_types").json()
    emotion = next(entry for entry in types["data"] if entry["id"] == "emotion")
    assert "happy" in emotion["edit_info"] and emotion["needs_audio_text"] and not emotion["needs_text"]
    assert types["languages"] == ["Sichuanese", "Cantonese", "Japanese", "Korean"]
    assert types["max_iterations"] == 10


# ------------------------------------------------------------------------------------------ speech (clone)
def test_clone_in_every_format_at_24k(client, clone_clip, editx):
    body = clone_body(clone_clip, language="Cantonese")
    for fmt in ("wav", "flac", "mp3", "opus"):
        response = client.audio.speech.create(
            model=EDITX, voice="unused", input="你好", response_format=fmt, extra_body=body
        )
        samples, rate = decode(response.content)
        assert rate == editx.sample_rate == 24000, fmt
        assert samples.size > 0 and np.isfinite(samples).all(), fmt
    pcm = client.audio.speech.create(model=EDITX, voice="unused", input="你好", response_format="pcm", extra_body=body)
    assert pcm.response.headers["x-sample-rate"] == "24000" and pcm.response.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) % 2 == 0 and len(pcm.content) > 0


def test_clone_from_an_upload_streamed_and_as_events(http, clone_clip):
    files = {"ref_audio": (clone_clip.name, clone_clip.read_bytes(), "audio/wav")}
    form = {"model": EDITX, "input": "你好", "ref_text": CLONE_TRANSCRIPT, "response_format": "wav"}
    streamed = http.post("/v1/audio/speech", data={**form, "stream_format": "audio"}, files=files)
    assert streamed.status_code == 200, streamed.text
    samples, rate = decode(streamed.content)
    assert rate == 24000 and samples.size > 0
    events = http.post("/v1/audio/speech", data={**form, "response_format": "pcm", "stream_format": "sse"}, files=files)
    assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
    parsed = [json.loads(line[6:]) for line in events.text.splitlines() if line.startswith("data: ")]
    assert [event["type"] for event in parsed] == ["speech.audio.delta", "speech.audio.done"]
    assert parsed[1]["bytes"] == len(base64.b64decode(parsed[0]["audio"])) > 0 and parsed[1]["sample_rate"] == 24000


def test_clone_errors(http, clone_clip):
    def speech(**fields):
        return http.post("/v1/audio/speech", json={"model": EDITX, "input": "你好", **fields})

    error = assert_error(speech(voice="Tingting"), 400, "ref_audio", "missing_required_parameter")
    assert "reference clip" in error["message"]
    body = clone_body(clone_clip)
    error = assert_error(speech(**body, language="Klingon"), 400, "language", "invalid_value")
    assert error["message"] == library_message(lambda: check_language("Klingon"))
    assert_error(speech(**body, instructions="happy"), 400, "instructions", "unsupported_parameter")
    assert_error(speech(**body, temperature=0.5), 400, "temperature", "unsupported_parameter")
    assert_error(speech(ref_audio=body["ref_audio"]), 400, "ref_text", "missing_required_parameter")
    for url in ("https://example.com/a.wav", "file:///etc/passwd"):
        assert_error(speech(ref_audio=url, ref_text="你好"), 400, "ref_audio", "invalid_base64")
    # language belongs to EditX: the TTS refuses it and names the model that takes it.
    tts = http.post("/v1/audio/speech", json={"model": TTS, "voice": "Tingting", "input": "你好", "language": "Korean"})
    assert EDITX in assert_error(tts, 400, "language", "unsupported_parameter")["message"]


# ------------------------------------------------------------------------------------------ edits
def test_edit_an_upload_twice(http, edit_clip):
    files = {"file": (edit_clip.name, edit_clip.read_bytes(), "audio/wav")}
    form = {"audio_text": EDIT_TRANSCRIPT, "edit_type": "emotion", "edit_info": "happy", "iterations": "2"}
    response = http.post("/v1/audio/edits", data=form, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"  # the default: lossless, editable again
    assert response.headers["x-edit-iterations"] == "2" and response.headers["x-sample-rate"] == "24000"
    samples, rate = decode(response.content)
    assert rate == 24000 and samples.size > 0 and np.isfinite(samples).all()


def test_edit_base64_json(http, edit_clip):
    body = {
        "model": EDITX,
        "audio": b64_file(edit_clip),
        "audio_text": EDIT_TRANSCRIPT,
        "edit_type": "paralinguistic",
        "text": f"{EDIT_TRANSCRIPT}[Laughter]",
        "response_format": "flac",
    }
    response = http.post("/v1/audio/edits", json=body)
    assert response.status_code == 200, response.text
    samples, rate = decode(response.content)
    assert rate == 24000 and samples.size > 0
    # denoise takes no transcript and no edit_info
    denoised = http.post("/v1/audio/edits", json={"audio": b64_file(edit_clip), "edit_type": "denoise"})
    assert denoised.status_code == 200, denoised.text


def test_edit_errors(http, edit_clip):
    clip = edit_clip.read_bytes()

    def edit(files=True, **fields):
        form = {"audio_text": EDIT_TRANSCRIPT, "edit_type": "emotion", "edit_info": "sad", **fields}
        upload = {"file": (edit_clip.name, clip, "audio/wav")} if files else None
        return http.post("/v1/audio/edits", data=form, files=upload)

    error = assert_error(edit(files=False), 400, "file", "missing_required_parameter")
    assert "file" in error["message"] and "audio" in error["message"]
    cases = [
        ({"edit_type": "shout"}, "edit_type", lambda: check_edit_request("shout", None, EDIT_TRANSCRIPT)),
        ({"edit_info": "joyful"}, "edit_info", lambda: check_edit_request("emotion", "joyful", EDIT_TRANSCRIPT)),
        ({"edit_info": ""}, "edit_info", lambda: check_edit_request("emotion", None, EDIT_TRANSCRIPT)),
        ({"iterations": "0"}, "iterations", lambda: check_n_edit_iter(0)),
        ({"iterations": "11"}, "iterations", lambda: check_n_edit_iter(11)),
        ({"text": "a [Uhm] b"}, "text", lambda: check_edit_request("emotion", "sad", EDIT_TRANSCRIPT, "a [Uhm] b")),
        ({"audio_text": " "}, "audio_text", lambda: check_edit_request("emotion", "sad", " ")),
    ]
    for fields, param, call in cases:
        error = assert_error(edit(**fields), 400, param, "invalid_value")
        assert error["message"] == library_message(call), fields
    assert "'emotion', 'style'" in library_message(cases[0][2])  # a bad edit_type lists the accepted ones
    assert_error(edit(iterations="two"), 400, "iterations", "invalid_type")
    assert_error(edit(language="Korean"), 400, "language", "unsupported_parameter")
    assert_error(edit(response_format="aac"), 400, "response_format", "unsupported_format")
    assert_error(edit(model=TTS), 400, "model", "model_not_supported")
    # Audio is never fetched or read from the server: a URL or a path is refused.
    form = {"edit_type": "denoise", "file": "https://example.com/a.wav"}
    assert_error(http.post("/v1/audio/edits", data=form), 400, "file", "invalid_type")
    for audio in ("https://example.com/a.wav", "/etc/passwd"):
        response = http.post("/v1/audio/edits", json={"edit_type": "denoise", "audio": audio})
        assert response.status_code == 400 and response.json()["error"]["param"] == "audio", response.text
    json_file = http.post("/v1/audio/edits", json={"edit_type": "denoise", "file": b64_file(edit_clip)})
    assert_error(json_file, 400, "file", "invalid_value")
    not_audio = {"file": ("x.wav", b"RIFF not really a wav" * 20, "audio/wav")}
    assert_error(http.post("/v1/audio/edits", data={"edit_type": "vad"}, files=not_audio), 400, "file", "invalid_audio")


def test_edit_limits(http, server):
    long_clip = wav_bytes(0.1 * np.sin(np.arange(16000 * 21) / 10.0).astype(np.float32), 16000)  # 21 s > 20 s
    response = http.post("/v1/audio/edits", data={"edit_type": "vad"}, files={"file": ("a.wav", long_clip)})
    assert_error(response, 400, "file", "audio_too_long")
    too_big = http.post("/v1/audio/edits", json={"edit_type": "vad", "audio": "A" * (MAX_BODY + 10)})
    assert_error(too_big, 413, None, "request_too_large")
    queue = server[1].state.stepaudio.work_queue
    release = threading.Event()
    held = [queue.submit(lambda cancel: release.wait(30)) for _ in range(queue.capacity)]
    try:
        short_clip = wav_bytes(0.1 * np.sin(np.arange(16000) / 10.0).astype(np.float32), 16000)
        busy = http.post("/v1/audio/edits", data={"edit_type": "vad"}, files={"file": ("a.wav", short_clip)})
        assert_error(busy, 429, None, "queue_full")
    finally:
        release.set()
        for future in held:
            future.result(timeout=30)


# ------------------------------------------------------------------------------------------ not loaded
def test_without_editx_its_requests_name_the_option(realtime_pipeline, clone_clip):
    app = create_app(realtime_pipeline, ServerSettings(**SETTINGS))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert [model["id"] for model in http.get("/v1/models").json()["data"]] == [CHAT, TTS]
        speech = http.post("/v1/audio/speech", json={"model": EDITX, "input": "你好", **clone_body(clone_clip)})
        assert "--editx" in assert_error(speech, 404, "model", "model_not_loaded")["message"]
        edit = http.post("/v1/audio/edits", json={"edit_type": "denoise", "audio": b64_file(clone_clip)})
        assert "--editx" in assert_error(edit, 404, "model", "model_not_loaded")["message"]
        assert_error(http.get(f"/v1/models/{EDITX}"), 404, "model", "model_not_loaded")
        assert_error(http.get("/v1/audio/edit_types"), 404, "model", "model_not_loaded")
    with pytest.raises(InvalidArgumentError, match="editx must be None or a StepAudioEditX"):
        create_app(realtime_pipeline, editx=realtime_pipeline.tts)


def test_serve_refuses_a_wrong_editx_path_in_one_line_before_loading(tiny_model_root, tmp_path):
    command = [sys.executable, "-m", "stepaudio", "serve", "--model-path", str(tiny_model_root)]
    done = subprocess.run(
        [*command, "--port", str(free_port()), "--editx-path", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("stepaudio serve: error: ") and "--editx-path" in lines[0], done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--editx-backend", "static"], "--editx-backend only applies with --editx (or --editx-path), got 'static'"),
        (
            ["--editx", "--editx-quantization", "awq-4bit"],
            "--editx-quantization must be one of int8, int4, got 'awq-4bit'; or None to load the unquantized weights",
        ),
        (
            ["--editx", "--editx-backend", "http://gpu:8000", "--editx-quantization", "int4"],
            "--editx-quantization does not apply to a remote server (http://gpu:8000/v1), got 'int4'; that model is "
            "loaded elsewhere (for a server: e.g. `vllm serve ... --quantization fp8`)",
        ),
    ],
)
def test_serve_checks_the_editx_backend_options_before_loading(tiny_model_root, capsys, options, message):
    from stepaudio.cli import main

    assert main(["serve", "--model-path", str(tiny_model_root), "--port", str(free_port()), *options]) == 2
    assert capsys.readouterr().err == f"stepaudio serve: error: {message}\n"


def test_editx_settings_reach_the_model(tiny_model_root):
    from stepaudio.assembly import ModelSettings, load_editx
    from stepaudio.llm.backends import StaticCacheBackend

    editx = load_editx(tiny_model_root, ModelSettings(device="cpu", editx_backend="static"))
    assert isinstance(editx.backend, StaticCacheBackend)


# ------------------------------------------------------------------------------------------ Gradio Edit tab
def test_gradio_edit_tab(server, edit_clip, editx):
    import gradio_client
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = gradio_client.Client(f"{server[0]}/ui/", verbose=False)
    try:
        endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {"/edit_audio", "/edit_info_choices"} <= set(endpoints)
        result = client.predict(
            handle_file(str(edit_clip)), EDIT_TRANSCRIPT, "style", "whisper", 2, "", api_name="/edit_audio"
        )
        info = soundfile.info(result)
        assert info.samplerate == 24000 and info.frames > 0
        with pytest.raises(AppError) as raised:
            client.predict(
                handle_file(str(edit_clip)), EDIT_TRANSCRIPT, "style", "joyful", 1, "", api_name="/edit_audio"
            )
        assert raised.value.message == library_message(lambda: check_edit_request("style", "joyful", EDIT_TRANSCRIPT))
    finally:
        client.close()


@pytest.mark.slow
def test_serve_command_with_editx_clones_and_edits(tiny_model_root, edit_clip, clone_clip):
    port = free_port()
    arguments = ["--model-path", str(tiny_model_root), "--port", str(port)]
    arguments += ["--editx", "--no-realtime", "--device", "cpu", "--max-speech-seconds", "0.4"]
    with serve_process(arguments) as lines:
        base = f"http://127.0.0.1:{port}"
        assert (
            f"Step-Audio-EditX: model {EDITX} on {base}/v1/audio/speech (with ref_audio) and {base}/v1/audio/edits\n"
            in lines
        ), "".join(lines)
        client = openai_client(base)
        assert [model.id for model in client.models.list()] == [CHAT, TTS, EDITX]
        speech = client.audio.speech.create(
            model=EDITX, voice="unused", input="你好", response_format="wav", extra_body=clone_body(clone_clip)
        )
        assert decode(speech.content)[1] == 24000
        body = {
            "audio": b64_file(edit_clip),
            "audio_text": EDIT_TRANSCRIPT,
            "edit_type": "speed",
            "edit_info": "faster",
        }
        edited = httpx.post(f"{base}/v1/audio/edits", json=body, timeout=120)
        assert edited.status_code == 200 and decode(edited.content)[1] == 24000, edited.text
