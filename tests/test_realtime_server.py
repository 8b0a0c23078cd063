"""The realtime WebSocket server over a real client: a spoken conversation, bad input, rate limits, disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile
from realtime_helpers import fixture_config, fixture_pipeline
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stepaudio.errors import RealtimeConfigError
from stepaudio.realtime.asgi import mount_realtime
from stepaudio.realtime.server import AsgiServer, InputRateLimiter, RealtimeServer, ServerConfig
from stepaudio.realtime.session import RealtimeSession

CHUNK_SAMPLES = 1600  # 100 ms of 16 kHz audio per message
START = json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"})


@pytest.fixture(scope="module")
def pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, tmp_path_factory):
    from stepaudio.testing import build_tiny_speakers_folder

    speakers = build_tiny_speakers_folder(tmp_path_factory.mktemp("speakers") / "speakers")
    return fixture_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, speakers)


def conversation_pcm16(shared_audio_dir, silence_s: float = 2.5) -> bytes:
    """Two AISHELL utterances, each followed by silence, as PCM16 16 kHz bytes."""
    pieces = [np.zeros(8000, np.float32)]
    for name in ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav"):
        audio, rate = soundfile.read(shared_audio_dir / name, dtype="float32")
        assert rate == 16000
        pieces += [audio, np.zeros(int(silence_s * 16000), np.float32)]
    return (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2").tobytes()


async def start_server(pipeline, config=None, session_factory=RealtimeSession, **limits) -> RealtimeServer:
    server = RealtimeServer(
        pipeline,
        config or fixture_config(end_of_turn_ms=600),
        ServerConfig(port=0, **limits),  # loopback only (the default host)
        session_factory=session_factory,
    )
    await server.start()
    assert server.server_config.host == "127.0.0.1"
    return server


class Received:
    """Everything a client got: JSON events in order and the binary audio messages."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.audio: list[bytes] = []

    def of(self, kind: str) -> list[dict]:
        return [event for event in self.events if event["type"] == kind]

    def errors(self, code: str | None = None) -> list[dict]:
        return [event for event in self.of("error") if code is None or event["code"] == code]


async def receive_all(client, received: Received) -> None:
    try:
        async for message in client:
            if isinstance(message, bytes):
                received.audio.append(message)
            else:
                received.events.append(json.loads(message))
    except ConnectionClosed:
        pass


async def send_paced(client, pcm: bytes, speed: float, stop=lambda: False) -> None:
    step = CHUNK_SAMPLES * 2
    start = time.perf_counter()
    for index, offset in enumerate(range(0, len(pcm), step)):
        if stop():
            return
        due = start + index * CHUNK_SAMPLES / 16000 / speed
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await client.send(pcm[offset : offset + step])


async def wait_until(predicate, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def next_reply(client, kinds=("error", "pong", "started")) -> dict:
    """The next JSON message of one of ``kinds`` (session events such as ``state`` are skipped)."""
    while True:
        message = await asyncio.wait_for(client.recv(), 20)
        if isinstance(message, str) and (event := json.loads(message))["type"] in kinds:
            return event


async def start_session(client, **config) -> dict:
    """Send ``start`` (with ``config`` overrides, if any) and return the reply (``started`` or an error)."""
    message = {"type": "start", "sample_rate": 16000, "format": "pcm16"}
    if config:
        message["config"] = config
    await client.send(json.dumps(message))
    return await next_reply(client)


async def converse(url: str, pcm: bytes, received: Received) -> None:
    """One client's whole spoken conversation: two utterances, then silence until both replies ended."""
    async with connect(url) as client:
        reader = asyncio.create_task(receive_all(client, received))
        await client.send(START)
        await send_paced(client, pcm, speed=1.5)
        # a live microphone keeps sending: silence until the second reply has been played
        silence = bytes(2 * CHUNK_SAMPLES * 300)
        await send_paced(client, silence, speed=1.0, stop=lambda: len(received.of("metrics")) >= 2)
        await client.close()
        await reader


def check_conversation(received: Received) -> None:
    assert received.events[0]["type"] == "ready" and received.events[0]["input_sample_rate"] == 16000
    assert received.events[1]["type"] == "started", received.events[:3]
    assert not received.of("error"), received.of("error")
    turns_replied = {event["turn"] for event in received.of("state") if event["state"] == "bot_replying"}
    assert turns_replied == {1, 2}, [e for e in received.of("state")]
    headers = received.of("audio")
    assert headers and len(headers) == len(received.audio)
    assert [len(chunk) for chunk in received.audio] == [2 * header["samples"] for header in headers]
    assert {header["sample_rate"] for header in headers} == {22050}
    assert received.of("reply_text")
    assert any(event["turn"] == 1 for event in received.of("transcript"))
    metrics = received.of("metrics")
    assert all(m["end_of_speech_to_first_audio_s"] is not None for m in metrics)


def test_spoken_conversation_end_to_end(pipeline, shared_audio_dir):
    pcm = conversation_pcm16(shared_audio_dir)

    async def scenario() -> Received:
        server = await start_server(pipeline)
        received = Received()
        try:
            await converse(f"ws://127.0.0.1:{server.port}/ws", pcm, received)
        finally:
            await server.stop()
        return received

    received = asyncio.run(scenario())
    ready, started = received.events[:2]
    assert ready["max_input_speed"] == 1.5 and ready["input_burst_s"] == 2.0 and "speaker" in ready["config_keys"]
    assert started["session"] == ready["session"] and started["config"]["speaker"] == "Tingting"
    check_conversation(received)


# (message, error code, a fragment the one-line message must hold); sent in order on one connection
BEFORE_START = [
    (b"", "bad_audio", "empty binary message"),
    (b"\x01\x02\x03", "bad_audio", "3 bytes"),
    (bytes(3200), "not_started", '"type": "start"'),
    (json.dumps({"type": "playback", "turn": 1, "played_s": 0.5}), "not_started", "start"),
    ("this is not json", "bad_json", "'this is not json'"),
    ("[" * 2000 + "]" * 2000, "bad_json", "nests 2000"),  # small but deep: refused before json.loads recurses
    ("1" + "0" * 5000, "bad_json", "digits"),  # Python refuses to read a 5001-digit integer
    (json.dumps([1, 2]), "bad_message", "an array [1, 2]"),
    (json.dumps("hello"), "bad_message", "a string 'hello'"),
    (json.dumps({"kind": "start"}), "bad_message", "got no type"),
    (json.dumps({"type": 5}), "bad_message", "type 5"),
    (json.dumps({"type": "dance"}), "unknown_type", "'dance'"),
    (json.dumps({"type": "ping", "id": 1}), "bad_message", "unknown field 'id'"),
    (json.dumps({"type": "start", "sampel_rate": 16000}), "bad_message", "'sampel_rate'"),
    (json.dumps({"type": "start", "sample_rate": 44100}), "bad_sample_rate", "sample_rate=44100"),
    (json.dumps({"type": "start", "sample_rate": "16000"}), "bad_sample_rate", "sample_rate='16000'"),
    (json.dumps({"type": "start", "format": "opus"}), "bad_format", "format='opus'"),
    (json.dumps({"type": "start", "config": [1]}), "bad_config", "an array [1]"),
    (json.dumps({"type": "start", "config": {"volume": 2}}), "bad_config", "'volume' is not a session setting"),
    (json.dumps({"type": "start", "config": {"vad_threshold": 0.1}}), "bad_config", "set by the server only"),
    (json.dumps({"type": "start", "config": {"max_new_tokens": "5"}}), "bad_config", "max_new_tokens must be"),
    (json.dumps({"type": "start", "config": {"max_new_tokens": 99}}), "bad_config", "limit of 10"),
    (json.dumps({"type": "start", "config": {"temperature": -1}}), "bad_config", "temperature must be"),
    (json.dumps({"type": "start", "config": {"speaker": "../x"}}), "bad_config", "speaker must be"),
    (bytes(8192 + 2), "message_too_large", "8194 bytes"),
    ("é" * 5000, "message_too_large", "10000 bytes"),  # 5000 characters, but 10000 bytes of UTF-8
]
AFTER_START = [
    (START, "already_started", "has already started"),
    (json.dumps({"type": "playback", "turn": "one", "played_s": -1}), "bad_message", "turn='one', played_s=-1"),
    ('{"type": "playback", "turn": 1, "played_s": NaN}', "bad_message", "played_s=nan"),
    (json.dumps({"type": "playback", "turn": True, "played_s": 1}), "bad_message", "turn=True"),
    (b"\x00" * 641, "bad_audio", "641 bytes"),
]


def test_every_malformed_message_gets_an_error_event_and_the_connection_survives(pipeline):
    async def scenario() -> tuple[list[tuple[dict, str, str]], dict, int | None]:
        server = await start_server(pipeline, max_message_bytes=8192)
        replies: list[tuple[dict, str, str]] = []
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as client:
                assert json.loads(await client.recv())["type"] == "ready"
                for message, code, fragment in BEFORE_START:
                    await client.send(message)
                    replies.append((await next_reply(client), code, fragment))
                assert not server.sessions, "a refused start created a session"
                started = await start_session(client, speaker="TingtingRAP", max_new_tokens=5)
                for message, code, fragment in AFTER_START:
                    await client.send(message)
                    replies.append((await next_reply(client), code, fragment))
                # a valid playback report is taken silently: the next reply is the pong
                await client.send(json.dumps({"type": "playback", "turn": 1, "played_s": 0.5}))
                await client.send(json.dumps({"type": "ping"}))
                assert await next_reply(client) == {"type": "pong"}
                await client.send(bytes(4 * 8192 + 2))  # beyond the hard limit: closed by the WebSocket layer
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(client.recv(), 10)
                close_code = client.close_code
            assert await wait_until(lambda: not server.sessions, timeout=10)
        finally:
            await server.stop()
        return replies, started, close_code

    replies, started, close_code = asyncio.run(scenario())
    for reply, code, fragment in replies:
        assert reply["type"] == "error" and reply["code"] == code, (reply, code)
        assert fragment in reply["message"], (reply, fragment)
        assert "\n" not in reply["message"] and len(reply["message"]) < 400, reply
    assert started["type"] == "started", started
    assert started["config"]["speaker"] == "TingtingRAP" and started["config"]["max_new_tokens"] == 5
    assert close_code == 1009


def test_unknown_speaker_in_start_is_a_bad_config_event_before_any_audio(pipeline):
    """Needs RealtimeSession's constructor to check the speaker against the TTS speakers folder."""

    async def scenario() -> tuple[dict, dict, dict, dict]:
        server = await start_server(pipeline)
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                assert json.loads(await client.recv())["type"] == "ready"
                refused = await start_session(client, speaker="Nobody")
                assert not server.sessions
                await client.send(bytes(3200))  # nothing is processed without a session
                not_started = await next_reply(client)
                await client.send(json.dumps({"type": "ping"}))
                assert await next_reply(client) == {"type": "pong"}  # the connection survived
                started = await start_session(client, speaker="Tingting")
                await client.send(json.dumps({"type": "stop"}))
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(client.recv(), 10)
                return refused, not_started, started, {"close_code": client.close_code}
        finally:
            await server.stop()

    refused, not_started, started, closed = asyncio.run(scenario())
    assert refused["type"] == "error" and refused["code"] == "bad_config", refused
    assert "'Nobody'" in refused["message"] and "Tingting" in refused["message"], refused
    assert "\n" not in refused["message"]
    assert not_started["code"] == "not_started"
    assert started["type"] == "started" and started["config"]["speaker"] == "Tingting"
    assert closed["close_code"] == 1000


def test_a_server_setting_that_does_not_fit_the_models_closes_the_connection_with_1011(pipeline):
    """Needs RealtimeSession's constructor to check the speaker against the TTS speakers folder."""

    async def scenario() -> tuple[list[dict], int | None, dict]:
        server = await start_server(pipeline, fixture_config(end_of_turn_ms=600, speaker="Nobody"))
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                received = Received()
                await client.send(START)
                await receive_all(client, received)
                close_code = client.close_code
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:  # a client may pick a voice that fits
                assert json.loads(await client.recv())["type"] == "ready"
                started = await start_session(client, speaker="Tingting")
        finally:
            await server.stop()
        return received.events, close_code, started

    events, close_code, started = asyncio.run(scenario())
    assert [event["type"] for event in events] == ["ready", "error"], events
    assert events[1]["code"] == "bad_config" and "'Nobody'" in events[1]["message"], events[1]
    assert close_code == 1011
    assert started["type"] == "started", started


def test_server_config_checks_the_rate_limit_settings():
    for name, value in [("max_input_speed", 0.5), ("max_input_speed", "fast"), ("input_burst_s", 0)]:
        with pytest.raises(RealtimeConfigError, match=f"^{name} must be") as caught:
            ServerConfig(**{name: value})
        assert caught.value.name == name and caught.value.value == value


def test_input_rate_limiter_is_a_token_bucket_over_seconds_of_audio():
    now = [100.0]
    limiter = InputRateLimiter(1.5, 2.0, clock=lambda: now[0])
    assert [limiter.admit(0.25) for _ in range(9)] == [True] * 8 + [False]  # the 2 s burst, then nothing
    assert limiter.report_due() == 0.25
    assert not limiter.admit(0.25)
    assert limiter.report_due() is None  # at most one report per second
    now[0] += 1.0  # refills 1.5 s of audio
    assert [limiter.admit(0.25) for _ in range(7)] == [True] * 6 + [False]
    assert limiter.report_due() == 0.5  # both drops since the last report
    now[0] += 1000.0
    assert limiter.available_s == 2.0  # the refill stops at the burst
    assert limiter.admit(3.0)  # a frame longer than the burst passes a full bucket ...
    assert not limiter.admit(0.25)  # ... and is paid back before anything else passes
    now[0] += 1.0
    assert limiter.available_s == 0.5
    assert (limiter.accepted_s, limiter.dropped_s) == (2.0 + 1.5 + 3.0, 0.25 * 4)

    # a flood at 10x real time for a minute: what passes is the limit plus the burst, to one frame
    now[0] = 0.0
    flood = InputRateLimiter(1.5, 2.0, clock=lambda: now[0])
    reports = 0
    for _ in range(6000):  # 0.1 s frames every 0.01 s
        flood.admit(0.1)
        reports += flood.report_due() is not None
        now[0] += 0.01
    elapsed = 5999 * 0.01  # from the first frame to the last
    assert 1.5 * elapsed + 2.0 - 0.1 - 1e-6 <= flood.accepted_s <= 1.5 * elapsed + 2.0 + 1e-6
    assert flood.accepted_s + flood.dropped_s == pytest.approx(600.0)
    assert 58 <= reports <= 60


class CountingSession(RealtimeSession):
    """A session that counts the audio bytes the server hands it."""

    instances: list[CountingSession] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pushed_bytes = 0
        CountingSession.instances.append(self)

    def push_audio(self, pcm, sample_rate) -> None:
        self.pushed_bytes += len(pcm)
        super().push_audio(pcm, sample_rate)


def test_a_flooding_client_is_rate_limited_and_the_other_session_completes(pipeline, shared_audio_dir):
    pcm = conversation_pcm16(shared_audio_dir)
    CountingSession.instances = []

    async def flood(url: str, done, received: Received) -> dict:
        async with connect(url) as client:
            reader = asyncio.create_task(receive_all(client, received))
            began = time.perf_counter()
            await client.send(START)
            assert await wait_until(lambda: received.of("started"), 20)
            frame, sent, flood_start = bytes(2 * CHUNK_SAMPLES), 0, time.perf_counter()
            while not done() and time.perf_counter() - flood_start < 120:
                due = flood_start + sent * CHUNK_SAMPLES / 16000 / 10.0  # 10x real time
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await client.send(frame)
                sent += 1
            flood_s = time.perf_counter() - flood_start
            await client.send(json.dumps({"type": "ping"}))  # every frame sent is handled before the pong
            assert await wait_until(lambda: received.of("pong"), 30)
            window_s = time.perf_counter() - began
            session = CountingSession.instances[0]
            accepted_s = session.pushed_bytes / 2 / 16000
            await client.close()
            await reader
            return {
                "sent_s": sent * CHUNK_SAMPLES / 16000,
                "flood_s": flood_s,
                "window_s": window_s,
                "accepted_s": accepted_s,
            }

    async def scenario() -> tuple[dict, Received, Received]:
        server = await start_server(pipeline, session_factory=CountingSession)
        url = f"ws://127.0.0.1:{server.port}/ws"
        flooder, talker = Received(), Received()
        try:
            flooding = asyncio.create_task(flood(url, lambda: len(talker.of("metrics")) >= 2, flooder))
            assert await wait_until(lambda: CountingSession.instances, 20)
            await converse(url, pcm, talker)
            counts = await flooding
        finally:
            await server.stop()
        return counts, flooder, talker

    counts, flooder, talker = asyncio.run(scenario())
    check_conversation(talker)  # the other session still completed its conversation
    assert counts["sent_s"] >= 5 * counts["flood_s"], counts  # the client really flooded
    # what reached the flooder's session: no more than the limit allows over the whole window, not much less
    assert counts["accepted_s"] <= 1.5 * counts["window_s"] + 2.0 + 0.1, counts
    assert counts["accepted_s"] >= 1.0 * counts["flood_s"], counts
    limited = flooder.errors("rate_limited")
    assert 1 <= len(limited) <= counts["window_s"] + 1, (len(limited), counts)  # at most one per second
    assert all(event["dropped_s"] > 0 and event["max_input_speed"] == 1.5 for event in limited)
    assert sum(event["dropped_s"] for event in limited) <= counts["sent_s"] - counts["accepted_s"] + 1e-3
    assert "1.5 s of audio per second" in limited[0]["message"] and "dropped" in limited[0]["message"]
    assert set(e["code"] for e in flooder.errors()) == {"rate_limited"}


def test_connections_beyond_max_sessions_are_refused_with_busy(pipeline):
    async def scenario() -> tuple[dict, int | None]:
        server = await start_server(pipeline, max_sessions=1)
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as first:
                assert json.loads(await first.recv())["type"] == "ready"
                async with connect(f"ws://127.0.0.1:{server.port}/ws") as second:
                    busy = json.loads(await asyncio.wait_for(second.recv(), 10))
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(second.recv(), 10)
                    return busy, second.close_code
        finally:
            await server.stop()

    busy, close_code = asyncio.run(scenario())
    assert busy["code"] == "busy" and close_code == 1013


def test_idle_connections_are_closed(pipeline):
    async def scenario() -> tuple[dict, int | None]:
        server = await start_server(pipeline, idle_timeout_s=0.5)
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                assert json.loads(await client.recv())["type"] == "ready"
                error = json.loads(await asyncio.wait_for(client.recv(), 10))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(client.recv(), 10)
                return error, client.close_code
        finally:
            await server.stop()

    error, close_code = asyncio.run(scenario())
    assert error["type"] == "error" and error["code"] == "idle_timeout"
    assert close_code == 1000


def test_abrupt_disconnect_mid_reply_leaks_nothing_and_the_next_session_works(pipeline, shared_audio_dir):
    pcm = conversation_pcm16(shared_audio_dir, silence_s=4.0)
    session_threads = lambda: [t for t in threading.enumerate() if t.name == "stepaudio-realtime-session"]  # noqa: E731

    async def scenario() -> tuple[Received, Received, bool]:
        server = await start_server(pipeline)
        first, second = Received(), Received()
        try:
            client = await connect(f"ws://127.0.0.1:{server.port}/ws")
            reader = asyncio.create_task(receive_all(client, first))
            await client.send(START)
            await send_paced(client, pcm, speed=1.5, stop=lambda: bool(first.audio))
            assert first.audio, "the server did not start replying"
            client.transport.abort()  # drop the TCP connection without a closing handshake
            await reader
            assert await wait_until(lambda: not server.sessions, timeout=10), "the session was not closed"
            assert await wait_until(lambda: server.workers.pending_jobs == 0, timeout=30), "a reply job leaked"
            assert await wait_until(lambda: not session_threads(), timeout=10), "a session thread leaked"

            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                reader = asyncio.create_task(receive_all(client, second))
                await client.send(START)
                await send_paced(client, pcm, speed=1.5, stop=lambda: bool(second.audio))
                await client.close()
                await reader
            all_closed = await wait_until(lambda: not server.sessions, timeout=10)
        finally:
            await server.stop()
        return first, second, all_closed

    first, second, all_closed = asyncio.run(scenario())
    assert second.events[0]["type"] == "ready" and second.events[0]["session"] == first.events[0]["session"] + 1
    assert second.audio, "the session after the disconnect did not reply"
    assert not second.of("error")
    assert all_closed


def http_get(url: str) -> tuple[int, str, str | None, str, bytes]:
    """Status, content type, cache control, final URL (after redirects) and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            headers = response.headers
            return (
                response.status,
                headers["Content-Type"],
                headers["Cache-Control"],
                response.geturl(),
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.headers["Cache-Control"], url, error.read()


def test_the_realtime_service_mounts_on_a_bigger_fastapi_app(pipeline, shared_audio_dir):
    """mount_realtime on an app with a route and a lifespan of its own, served by plain uvicorn settings: a
    conversation over /ws while /other answers; the page under /realtime/; the 4x size limit enforced by the
    service itself; at shutdown the open connection is closed, its session too, and the workers stop."""
    from fastapi import FastAPI

    pcm = conversation_pcm16(shared_audio_dir)
    lifespan_events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        lifespan_events.append("startup")
        yield
        lifespan_events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/other")
    async def other() -> dict:
        return {"other": True}

    config = fixture_config(end_of_turn_ms=600)
    service = mount_realtime(app, pipeline, config, ServerConfig(max_message_bytes=8192))
    seen: dict = {}

    async def scenario() -> Received:
        server: AsgiServer | None = AsgiServer(app, "127.0.0.1", 0)  # uvicorn's own frame limit: 16 MiB
        await server.start()
        base, url = f"http://127.0.0.1:{server.port}", f"ws://127.0.0.1:{server.port}/ws"
        received = Received()
        try:
            talking = asyncio.create_task(converse(url, pcm, received))
            others = []
            while not talking.done():  # the app's own route answers while the conversation goes on
                others.append(await asyncio.to_thread(http_get, f"{base}/other"))
                await asyncio.sleep(0.2)
            await talking
            seen["others"] = others
            seen["page"] = await asyncio.to_thread(http_get, f"{base}/realtime?autostart=1")
            seen["script"] = await asyncio.to_thread(http_get, f"{base}/realtime/static/app.js")
            seen["worklet"] = await asyncio.to_thread(http_get, f"{base}/realtime/static/capture-worklet.js")
            seen["root"] = await asyncio.to_thread(http_get, f"{base}/")
            assert await wait_until(lambda: not service.sessions, timeout=10)

            async with connect(url, max_size=None) as client:  # beyond 4x max_message_bytes: closed by the service
                assert json.loads(await client.recv())["type"] == "ready"
                assert (await start_session(client))["type"] == "started"
                await client.send(bytes(4 * 8192 + 2))
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(client.recv(), 10)
                seen["too_large_close"] = client.close_code
            assert await wait_until(lambda: not service.sessions, timeout=10)

            client = await connect(url)  # still open when the app shuts down
            assert json.loads(await client.recv())["type"] == "ready"
            assert (await start_session(client))["type"] == "started" and service.sessions
            await server.stop()
            server = None
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(client.recv(), 10)
            seen["shutdown_close"] = client.close_code
        finally:
            if server is not None:
                await server.stop()
        return received

    received = asyncio.run(scenario())
    check_conversation(received)
    others = seen["others"]
    assert len(others) >= 3 and all(status == 200 and body == b'{"other":true}' for status, *_, body in others)
    status, content_type, cache, final_url, body = seen["page"]
    assert (status, content_type, cache) == (200, "text/html; charset=utf-8", "no-store")
    assert final_url.endswith("/realtime/?autostart=1") and b'src="static/app.js"' in body
    for status, content_type, cache, _, body in (seen["script"], seen["worklet"]):
        assert (status, content_type, cache) == (200, "text/javascript; charset=utf-8", "no-store") and body
    assert seen["root"][0] == 404  # / stays the app's
    assert set(app.openapi()["paths"]) == {"/other"}  # the page's routes stay out of the app's API schema
    assert seen["too_large_close"] == 1009
    assert seen["shutdown_close"] == 1012  # uvicorn's "service restart" to connections open at shutdown
    assert not service.sessions and service.closed and service.workers.pending_jobs == 0
    assert lifespan_events == ["startup", "shutdown"]
