"""The OpenAI-compatible API, driven by the official ``openai`` client against a live uvicorn server.

The models are the tiny random fixtures (``realtime_pipeline``): their words and voices are noise, so
the tests check the protocol -- status codes, shapes, audio that decodes at the promised rate -- not
the content.  The fixture chat model never ends a reply by itself, so every request caps its tokens.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from server_helpers import b64_file, decode, http_client, live_server, openai_client, wav_bytes

from stepaudio.server import ServerSettings, create_app, instruction_tag
from stepaudio.server.errors import APIError

CLONE_CLIP = "prompt_wav_yuqian.wav"
CLONE_TRANSCRIPT = "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。"
SPEECH_CLIP = "BAC009S0764W0121.wav"
TTS = "step-audio-tts-3b"
CHAT = "step-audio-chat"
MAX_BODY = 2 * 1024 * 1024
SETTINGS = {
    "max_body_bytes": MAX_BODY,
    "max_audio_seconds": 20.0,
    "default_max_tokens": 6,
    "max_completion_tokens": 32,
    "transcription_max_tokens": 5,
    "max_queued_requests": 2,
    "voice_aliases": {"alloy": "Tingting"},
}


@pytest.fixture(scope="module")
def server(realtime_pipeline, tmp_path_factory):
    realtime_pipeline.decoder.voice_prompts.cache_dir = tmp_path_factory.mktemp("voice-prompts")
    app = create_app(realtime_pipeline, ServerSettings(**SETTINGS))
    with live_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai_client(server[0])


@pytest.fixture(scope="module")
def http(server):
    with http_client(server[0]) as session:
        yield session


@pytest.fixture(scope="module")
def clip_b64(shared_audio_dir: Path) -> str:
    return b64_file(shared_audio_dir / SPEECH_CLIP)


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    """The response is an OpenAI error body with ``status`` (and ``param`` / ``code`` when given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else error["type"])
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def client_error(excinfo: pytest.ExceptionInfo, status: int, param: str | None = None, code: str | None = None):
    error = excinfo.value
    assert isinstance(error, openai.APIStatusError)
    return assert_error(error.response, status, param, code)


# ------------------------------------------------------------------------------------------ models
def test_models_voices_and_health(client, http):
    ids = [model.id for model in client.models.list()]
    assert ids == [CHAT, TTS]
    assert client.models.retrieve(TTS).id == TTS
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["queue"]["workers"] == 1
    voices = http.get("/v1/audio/voices").json()
    tingting = next(voice for voice in voices["data"] if voice["id"] == "Tingting")
    assert tingting["styles"] == sorted(["RAP", "哼唱"])
    assert "TingtingRAP" not in voices["voices"] and "alloy" in voices["voices"]
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.models.retrieve("gpt-5")
    client_error(excinfo, 404, "model", "model_not_found")


# ------------------------------------------------------------------------------------------ speech
@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_speech_formats_decode_at_24k(client, fmt):
    rate = 24000  # OpenAI's rate, which clients assume; the TTS's 22050 is resampled
    voice = {"id": "Tingting"} if fmt == "flac" else "Tingting"  # OpenAI's custom-voice form works too
    response = client.audio.speech.create(model=TTS, voice=voice, input="你好。", response_format=fmt)
    samples, sample_rate = decode(response.content)
    assert sample_rate == rate
    assert samples.size > 0.1 * rate and np.isfinite(samples).all()


def test_speech_pcm_is_24k_16bit(client, realtime_pipeline):
    response = client.audio.speech.create(model=TTS, voice="alloy", input="你好", response_format="pcm")
    assert response.response.headers["content-type"] == "audio/pcm"
    assert response.response.headers["x-sample-rate"] == "24000"
    data = response.content
    assert len(data) % 2 == 0
    seconds = len(data) / 2 / 24000
    # The fixture TTS is capped at max_speech_seconds; the vocoder adds at most a few frames.
    assert 0.1 < seconds <= realtime_pipeline.decoder.max_speech_seconds + 0.2


def test_speech_instructions_map_to_a_tag(client, http):
    response = client.audio.speech.create(
        model="tts-1", voice="Tingting", input="今天天气真好", instructions="Speak very happily", response_format="wav"
    )
    assert decode(response.content)[1] == 24000
    rap = client.audio.speech.create(
        model=TTS, voice="Tingting", input="说唱一段", instructions="rap", response_format="wav"
    )
    assert decode(rap.content)[0].size > 0
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Tingting", input="你好", instructions="like a pirate")
    error = client_error(excinfo, 400, "instructions", "unsupported_instructions")
    assert "高兴1" in error["message"] and "Cantonese" in error["message"]
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Tingting", input="你好", instructions="happy but slow")
    assert "one tag per request" in client_error(excinfo, 400, "instructions")["message"]


def test_instruction_mapping():
    assert instruction_tag(None) is None and instruction_tag("  ") is None
    assert instruction_tag("natural and conversational") is None
    assert instruction_tag("(高兴1)") == "高兴1" and instruction_tag("Rap") == "RAP"
    assert instruction_tag("cheerful") == "高兴1" and instruction_tag("extremely happy") == "高兴2"
    assert instruction_tag("furious") == "生气2" and instruction_tag("sadly") == "悲伤1"
    assert instruction_tag("用四川话说") == "四川话" and instruction_tag("in Cantonese") == "粤语"
    assert instruction_tag("please hum it") == "哼唱" and instruction_tag("很快乐") == "高兴2"
    assert instruction_tag("slowly and clearly") == "慢速1" and instruction_tag("very very fast") == "快速2"
    for refused in ("like a pirate", "not angry", "不要生气", "happy and in English"):
        with pytest.raises(APIError) as excinfo:
            instruction_tag(refused)
        assert excinfo.value.status == 400 and excinfo.value.param == "instructions"


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus"])
def test_speech_streamed_audio_chunks(client, fmt):
    rate = 24000
    with client.audio.speech.with_streaming_response.create(
        model=TTS, voice="Tingting", input="你好。今天天气真好。", response_format=fmt, stream_format="audio"
    ) as response:
        assert response.status_code == 200
        chunks = [chunk for chunk in response.iter_bytes() if chunk]
    data = b"".join(chunks)
    if fmt == "pcm":
        assert len(data) % 2 == 0 and len(data) > 0.1 * rate * 2
        return
    samples, sample_rate = decode(data)
    assert sample_rate == rate and samples.size > 0.1 * rate


def test_speech_streamed_sse_events(client):
    with client.audio.speech.with_streaming_response.create(
        model=TTS, voice="Tingting", input="你好。", response_format="wav", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[len("data: ") :]) for line in lines]
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and len(events) >= 2
    data = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    samples, rate = decode(data)
    assert rate == 24000 and samples.size > 0 and events[-1]["bytes"] == len(data)


@pytest.fixture(scope="module")
def clone_clip(shared_audio_dir: Path) -> Path:
    path = shared_audio_dir / CLONE_CLIP
    if not path.is_file():
        pytest.fail(f"the voice-cloning clip {path} is missing; check out shared/ beside the project")
    return path


def test_speech_clone_from_base64_ref_audio(client, clone_clip):
    response = client.audio.speech.create(
        model=TTS,
        voice="ignored-when-cloning",
        input="你好",
        response_format="wav",
        extra_body={"ref_audio": "data:audio/wav;base64," + b64_file(clone_clip), "ref_text": CLONE_TRANSCRIPT},
    )
    samples, rate = decode(response.content)
    assert rate == 24000 and samples.size > 0


def test_speech_clone_from_upload_streamed(http, clone_clip):
    files = {"ref_audio": (clone_clip.name, clone_clip.read_bytes(), "audio/wav")}
    form = {
        "model": TTS,
        "input": "你好",
        "ref_text": CLONE_TRANSCRIPT,
        "response_format": "pcm",
        "stream_format": "audio",
    }
    response = http.post("/v1/audio/speech", data=form, files=files)
    assert response.status_code == 200, response.text
    assert len(response.content) % 2 == 0 and len(response.content) > 0


def test_speech_clone_errors(client, http, clone_clip):
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="x", input="你好", extra_body={"ref_audio": b64_file(clone_clip)})
    client_error(excinfo, 400, "ref_text", "missing_required_parameter")
    # Never read or fetched: a path is (at best) base64 of garbage, a URL is refused as such.
    for ref_audio, code in [
        ("/etc/passwd", "invalid_audio"),
        ("file:///etc/passwd", "invalid_base64"),
        ("https://example.com/a.wav", "invalid_base64"),
        ("not base64!", "invalid_base64"),
    ]:
        with pytest.raises(openai.BadRequestError) as excinfo:
            client.audio.speech.create(
                model=TTS, voice="x", input="你好", extra_body={"ref_audio": ref_audio, "ref_text": "你好"}
            )
        client_error(excinfo, 400, "ref_audio", code)
    not_audio = base64.b64encode(b"RIFF but not really a wav file" * 10).decode()
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(
            model=TTS, voice="x", input="你好", extra_body={"ref_audio": not_audio, "ref_text": "a"}
        )
    client_error(excinfo, 400, "ref_audio", "invalid_audio")


# ------------------------------------------------------------------------------------------ chat
def audio_message(clip_b64: str, text: str = "请回答") -> list[dict]:
    content = [
        {"type": "text", "text": text},
        {"type": "input_audio", "input_audio": {"data": clip_b64, "format": "wav"}},
    ]
    return [
        {"role": "system", "content": "适配用户的语言，用简短口语化的文字回答"},
        {"role": "user", "content": content},
    ]


def test_chat_audio_in_audio_out(client, clip_b64):
    completion = client.chat.completions.create(
        model=CHAT,
        messages=audio_message(clip_b64),
        modalities=["text", "audio"],
        audio={"voice": "Tingting", "format": "wav"},
        max_completion_tokens=6,
    )
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and choice.finish_reason in ("stop", "length")
    audio = choice.message.audio
    assert audio.id.startswith("audio_") and audio.expires_at > 0 and isinstance(audio.transcript, str)
    assert choice.message.content is None
    samples, rate = decode(base64.b64decode(audio.data))
    assert rate == 24000
    assert completion.usage.prompt_tokens > 50  # the audio's tokens are in the prompt
    assert 0 < completion.usage.completion_tokens <= 6
    # The spoken reply can be referred to by its id in the next turn.
    follow_up = client.chat.completions.create(
        model=CHAT,
        messages=[
            *audio_message(clip_b64),
            {"role": "assistant", "audio": {"id": audio.id}},
            {"role": "user", "content": "再说一遍"},
        ],
        max_tokens=3,
    )
    assert isinstance(follow_up.choices[0].message.content, str)


def test_chat_text_stream_matches_greedy_reply(client):
    messages = [{"role": "user", "content": "你好"}]
    whole = client.chat.completions.create(model=CHAT, messages=messages, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(
        model=CHAT, messages=messages, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_stream_with_audio(client, clip_b64):
    stream = client.chat.completions.create(
        model=CHAT,
        messages=audio_message(clip_b64),
        modalities=["text", "audio"],
        audio={"voice": "Tingting", "format": "pcm16"},
        max_completion_tokens=12,
        stream=True,
    )
    transcript, data, ids, expiry = [], [], set(), []
    for chunk in stream:
        audio = chunk.choices[0].delta.audio if chunk.choices else None
        if audio is None:
            continue
        if audio.id:
            ids.add(audio.id)
        if audio.transcript:
            transcript.append(audio.transcript)
        if audio.data:
            data.append(base64.b64decode(audio.data))
        if audio.expires_at:
            expiry.append(audio.expires_at)
    assert len(expiry) == 1
    assert len(ids) == 1
    pcm = b"".join(data)
    assert len(pcm) % 2 == 0
    if any(text.strip() for text in transcript):  # random fixture text may hold nothing speakable
        assert len(pcm) > 0


def test_chat_raw_stream_ends_with_done(http):
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_chat_errors(client, clip_b64):
    bad_audio = [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}
    ]
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=CHAT, messages=bad_audio, max_tokens=2)
    client_error(excinfo, 400, "messages[0].content[0].input_audio.data", "invalid_base64")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}], modalities=["text", "audio"], max_tokens=2
        )
    client_error(excinfo, 400, "audio", "missing_required_parameter")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "hi"}],
            modalities=["text", "audio"],
            audio={"voice": "Nobody", "format": "wav"},
            max_tokens=2,
        )
    client_error(excinfo, 400, "audio.voice", "voice_not_found")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=1000)
    client_error(excinfo, 400, "max_tokens", "invalid_value")
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], tools=[tool])
    client_error(excinfo, 400, "tools", "unsupported_parameter")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=TTS, messages=[{"role": "user", "content": "hi"}])
    client_error(excinfo, 400, "model", "model_not_supported")
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    client_error(excinfo, 404, "model", "model_not_found")


# ------------------------------------------------------------------------------------------ transcription
def test_transcription_formats(client, shared_audio_dir):
    path = shared_audio_dir / SPEECH_CLIP
    as_json = client.audio.transcriptions.create(model=CHAT, file=path, response_format="json")
    as_text = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="text")
    verbose = client.audio.transcriptions.create(model=CHAT, file=path, response_format="verbose_json")
    assert isinstance(as_json.text, str) and as_json.text == as_text.strip()  # greedy: the same transcript
    assert verbose.text == as_json.text and verbose.duration == pytest.approx(4.2, abs=0.1)
    assert verbose.segments[0].end == pytest.approx(verbose.duration) and verbose.language


def test_transcription_errors(client, http):
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.transcriptions.create(model=CHAT, file=("notes.txt", b"not audio at all" * 20))
    client_error(excinfo, 400, "file", "invalid_audio")
    long_clip = wav_bytes(np.random.default_rng(0).normal(0, 0.1, 16000 * 25).astype(np.float32), 16000)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.transcriptions.create(model=CHAT, file=("long.wav", long_clip))
    client_error(excinfo, 400, "file", "audio_too_long")
    response = http.post("/v1/audio/transcriptions", data={"model": CHAT})
    assert_error(response, 400, "file", "missing_required_parameter")
    response = http.post("/v1/audio/transcriptions", json={"model": CHAT, "file": "abc"})
    assert_error(response, 415, code="unsupported_media_type")


# ------------------------------------------------------------------------------------------ errors
def test_speech_request_errors(client, http):
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Tingting", input="你好", response_format="aac")
    error = client_error(excinfo, 400, "response_format", "unsupported_format")
    assert "wav, pcm, flac, mp3, opus" in error["message"]
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Nobody", input="你好")
    assert "Tingting" in client_error(excinfo, 400, "voice", "voice_not_found")["message"]
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Tingting", input="好" * 5000)
    client_error(excinfo, 400, "input", "string_above_max_length")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(model=TTS, voice="Tingting", input="你好", speed=9)
    client_error(excinfo, 400, "speed", "invalid_value")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.audio.speech.create(
            model=TTS, voice="Tingting", input="你好", response_format="flac", stream_format="audio"
        )
    client_error(excinfo, 400, "response_format", "unsupported_format")
    assert_error(
        http.post("/v1/audio/speech", json={"model": TTS, "voice": "Tingting"}),
        400,
        "input",
        "missing_required_parameter",
    )
    assert_error(
        http.post("/v1/audio/speech", json={"model": TTS, "input": 5, "voice": "Tingting"}),
        400,
        "input",
        "invalid_type",
    )
    assert_error(
        http.post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        code="invalid_json",
    )
    assert_error(http.post("/v1/audio/speech", content=b"hello", headers={"content-type": "text/plain"}), 415)
    assert_error(http.get("/v1/nothing-here"), 404, code="not_found")
    assert_error(http.get("/v1/audio/speech"), 405, code="method_not_allowed")


def test_oversize_body_is_413(client, http):
    with pytest.raises(openai.APIStatusError) as excinfo:
        client.audio.speech.create(
            model=TTS, voice="Tingting", input="你好", extra_body={"ref_audio": "A" * (MAX_BODY + 10), "ref_text": "x"}
        )
    client_error(excinfo, 413, code="request_too_large")

    def chunked():  # no Content-Length: counted while it arrives
        for _ in range(3):
            yield b" " * (MAX_BODY // 2)

    response = http.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert_error(response, 413, code="request_too_large")


def test_queue_full_is_429(client, server):
    queue = server[1].state.stepaudio.work_queue
    release = threading.Event()
    held = [queue.submit(lambda cancel: release.wait(30)) for _ in range(queue.capacity)]
    try:
        with pytest.raises(openai.RateLimitError) as excinfo:
            client.audio.speech.create(model=TTS, voice="Tingting", input="你好")
        client_error(excinfo, 429, code="queue_full")
        assert excinfo.value.response.headers["retry-after"] == "1"
    finally:
        release.set()
        for future in held:
            future.result(timeout=30)


def test_model_failure_is_500(client, realtime_pipeline, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(realtime_pipeline.llm.model, "generate", broken)
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    error = client_error(excinfo, 500, code="model_error")
    assert "simulated" in error["message"]


def test_settings_checks(realtime_pipeline):
    from stepaudio.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="max_queued_requests"):
        ServerSettings(max_queued_requests=-1)
    with pytest.raises(InvalidArgumentError, match="model_aliases"):
        ServerSettings(model_aliases={"x": "unknown-model"})
    with pytest.raises(InvalidArgumentError, match="sample_rate"):
        ServerSettings(sample_rate=100)
    with pytest.raises(InvalidArgumentError, match="voice_aliases"):
        create_app(realtime_pipeline, ServerSettings(voice_aliases={"alloy": "Nobody"}))


def test_api_key_and_native_sample_rate(realtime_pipeline):
    app = create_app(realtime_pipeline, ServerSettings(api_key="secret", sample_rate=22050))
    with live_server(app) as url:
        with pytest.raises(openai.AuthenticationError) as excinfo:
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        client_error(excinfo, 401, code="invalid_api_key")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="secret", max_retries=0, timeout=120)
        assert [model.id for model in client.models.list()] == [CHAT, TTS]
        assert httpx.get(f"{url}/health").status_code == 200  # no key needed
        for fmt, rate in (("wav", 22050), ("opus", 24000)):  # Opus has no 22050 Hz
            response = client.audio.speech.create(model=TTS, voice="Tingting", input="你好", response_format=fmt)
            assert decode(response.content)[1] == rate


def test_realtime_and_ui_hooks_mount(realtime_pipeline):
    seen = []
    app = create_app(realtime_pipeline, realtime=True, ui=True, extra=seen.append)
    assert seen == [app]
    with live_server(app) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200
        assert httpx.get(f"{url}/realtime/", timeout=30).status_code == 200
        assert httpx.get(f"{url}/ui/", timeout=30).status_code == 200


def test_pcm16_input_audio(client):
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000)
    pcm = (tone * 32767).astype("<i2").tobytes()
    content = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(pcm).decode(), "format": "pcm16"}}]
    completion = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": content}], max_tokens=2
    )
    assert completion.usage.prompt_tokens > 20
