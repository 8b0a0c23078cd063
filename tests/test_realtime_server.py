"""The realtime WebSocket server over a real client: a spoken conversation, bad input, disconnects."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import soundfile
from realtime_helpers import fixture_config, fixture_pipeline
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stepaudio.realtime.server import RealtimeServer, ServerConfig

CHUNK_SAMPLES = 1600  # 100 ms of 16 kHz audio per message


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


async def start_server(pipeline, **limits) -> RealtimeServer:
    server = RealtimeServer(
        pipeline, fixture_config(end_of_turn_ms=600), ServerConfig(port=0, **limits)
    )  # loopback only (the default host)
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


def test_spoken_conversation_end_to_end(pipeline, shared_audio_dir):
    pcm = conversation_pcm16(shared_audio_dir)

    async def scenario() -> Received:
        server = await start_server(pipeline)
        received = Received()
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                reader = asyncio.create_task(receive_all(client, received))
                await client.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "pcm16"}))
                await send_paced(client, pcm, speed=1.5)
                # a live microphone keeps sending: silence until the second reply has been played
                silence = bytes(2 * CHUNK_SAMPLES * 300)
                await send_paced(client, silence, speed=1.0, stop=lambda: len(received.of("metrics")) >= 2)
                await client.close()
                await reader
        finally:
            await server.stop()
        return received

    received = asyncio.run(scenario())
    assert received.events[0]["type"] == "ready" and received.events[0]["input_sample_rate"] == 16000
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


def test_bad_protocol_input_gets_error_events_and_the_connection_survives(pipeline):
    async def scenario() -> tuple[list[str], int | None]:
        server = await start_server(pipeline, max_message_bytes=4096)
        codes: list[str] = []
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as client:
                assert json.loads(await client.recv())["type"] == "ready"
                bad_messages = [
                    b"\x01\x02\x03",  # binary garbage: not whole PCM16 samples
                    "this is not json",
                    "[" * 2000 + "]" * 2000,  # small but deeply nested: refused before json.loads recurses
                    json.dumps([1, 2]),
                    json.dumps({"type": "start", "sample_rate": 44100}),
                    json.dumps({"type": "start", "sample_rate": 16000, "format": "opus"}),
                    json.dumps({"type": "dance"}),
                    json.dumps({"type": "playback", "turn": "one", "played_s": -1}),
                    bytes(4096 + 2),  # oversized frame
                    "x" * 5000,  # oversized text
                ]
                for message in bad_messages:
                    await client.send(message)
                    reply = json.loads(await asyncio.wait_for(client.recv(), 10))
                    assert reply["type"] == "error" and reply["message"]
                    codes.append(reply["code"])
                # a valid playback report is taken silently: the next reply is the pong
                await client.send(json.dumps({"type": "playback", "turn": 1, "played_s": 0.5}))
                await client.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(client.recv(), 10)) == {"type": "pong"}
                await client.send(bytes(4 * 4096 + 2))  # beyond the hard limit: closed by the WebSocket layer
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(client.recv(), 10)
                close_code = client.close_code
            assert await wait_until(lambda: not server.sessions, timeout=10)
        finally:
            await server.stop()
        return codes, close_code

    codes, close_code = asyncio.run(scenario())
    assert codes == [
        "bad_audio",
        "bad_json",
        "bad_json",
        "bad_message",
        "bad_sample_rate",
        "bad_format",
        "unknown_type",
        "bad_message",
        "message_too_large",
        "message_too_large",
    ]
    assert close_code == 1009


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
            await send_paced(client, pcm, speed=1.5, stop=lambda: bool(first.audio))
            assert first.audio, "the server did not start replying"
            client.transport.abort()  # drop the TCP connection without a closing handshake
            await reader
            assert await wait_until(lambda: not server.sessions, timeout=10), "the session was not closed"
            assert await wait_until(lambda: server.workers.pending_jobs == 0, timeout=30), "a reply job leaked"
            assert await wait_until(lambda: not session_threads(), timeout=10), "a session thread leaked"

            async with connect(f"ws://127.0.0.1:{server.port}/ws") as client:
                reader = asyncio.create_task(receive_all(client, second))
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
