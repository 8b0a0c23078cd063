"""The realtime WebSocket server (``stepaudio serve-realtime``) and its static browser page.

One :class:`~stepaudio.realtime.RealtimeSession` per WebSocket connection, created when the client
sends ``start`` (with optional per-session settings); all sessions share one loaded
:class:`~stepaudio.StepAudio` and one :class:`~stepaudio.realtime.ModelWorkers` queue.  Each session's
audio input is rate limited (:class:`InputRateLimiter`) so one client cannot starve the others.  The
protocol is described in ``protocol.md`` next to this file.  Built on the ``websockets`` library
(asyncio API), which also serves the page and its scripts over plain HTTP from the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..errors import AudioInputError, InvalidArgumentError, RealtimeConfigError, RealtimeProtocolError
from ..tts.tts import SAMPLE_RATE as OUTPUT_SAMPLE_RATE
from ..validation import check_float, check_int, invalid_value
from .config import SAMPLE_RATE, RealtimeConfig
from .context import Transcriber
from .events import AudioChunk, RealtimeEvent
from .messages import SESSION_CONFIG_KEYS, error_json, parse_control_message, session_config
from .ratelimit import InputRateLimiter
from .session import RealtimeSession
from .vad import SileroVAD
from .workers import ModelWorkers

logger = logging.getLogger(__name__)

__all__ = [
    "ServerConfig",
    "RealtimeServer",
    "InputRateLimiter",
    "SESSION_CONFIG_KEYS",
    "WEBSOCKET_PATH",
    "STATIC_DIR",
    "parse_control_message",
    "session_config",
]

WEBSOCKET_PATH = "/ws"
STATIC_DIR = Path(__file__).with_name("static")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

#: Close code when the server's own session settings do not fit its models (the client cannot fix it).
CLOSE_SERVER_CONFIG = 1011


@dataclass
class ServerConfig:
    """Network settings of the realtime server.

    Attributes:
        host: interface to bind (default loopback only; use ``0.0.0.0`` deliberately to expose it).
        port: TCP port (0 picks a free one; see :attr:`RealtimeServer.port`).
        max_message_bytes: larger client messages (binary length, or a text message's UTF-8 length) are
            refused with an ``error`` event (up to 4x this size; beyond that the connection is closed
            with code 1009 by the WebSocket layer).
        idle_timeout_s: a connection that sends nothing for this long is closed.
        max_sessions: concurrent connections; more are refused with a ``busy`` error.
        workers: model jobs (replies, transcripts) that run at the same time across all sessions.
        max_input_speed: seconds of audio one session may send per second of wall time (a live
            microphone sends 1.0); audio beyond it is dropped and answered with ``rate_limited``.
        input_burst_s: seconds of audio a session may send at once above that speed (network jitter).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_bytes: int = 64 * 1024
    idle_timeout_s: float = 60.0
    max_sessions: int = 8
    workers: int = 1
    max_input_speed: float = 1.5
    input_burst_s: float = 2.0

    def __post_init__(self) -> None:
        try:
            if not isinstance(self.host, str) or not self.host.strip():
                raise invalid_value("host", "an interface name or address such as 127.0.0.1", self.host)
            check_int(self.port, "port", minimum=0, maximum=65535, hint="0 picks a free port")
            check_int(self.max_message_bytes, "max_message_bytes", minimum=1024, maximum=64 * 1024 * 1024)
            check_float(self.idle_timeout_s, "idle_timeout_s", minimum=0, exclusive_minimum=True)
            check_int(self.max_sessions, "max_sessions", minimum=1, maximum=10_000)
            check_int(self.workers, "workers", minimum=1, maximum=256)
            check_float(
                self.max_input_speed,
                "max_input_speed",
                minimum=1.0,
                maximum=1000.0,
                hint="seconds of audio per second; a live microphone sends 1.0, so leave room for network jitter",
            )
            check_float(
                self.input_burst_s,
                "input_burst_s",
                minimum=0.0,
                maximum=600.0,
                exclusive_minimum=True,
                hint="seconds of audio a client may send at once above max_input_speed",
            )
        except InvalidArgumentError as error:
            raise RealtimeConfigError(str(error), name=error.name, value=error.value) from None


def check_bindable(host: str, port: int, host_option: str = "host", port_option: str = "port") -> None:
    """Refuse, before anything is loaded, an address the server could not listen on.

    Binds a throw-away socket the way the server will (``SO_REUSEADDR``), so a port another program
    listens on, a privileged port, or an address that is not this machine's is reported up front.

    Raises:
        RealtimeConfigError: naming the host or port, why it cannot be used and what to pass instead.
    """
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise RealtimeConfigError(
            f"{host_option} {host!r} cannot be resolved ({error}); pass an address such as 127.0.0.1 or 0.0.0.0",
            name=host_option,
            value=host,
        ) from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                reason = "is already in use by another program; pick another with"
            elif error.errno == errno.EACCES:
                reason = "needs administrator rights (ports below 1024); pick one above 1024 with"
            else:
                raise RealtimeConfigError(
                    f"{host_option} {host!r} cannot be listened on ({error.strerror}); pass an address of this "
                    "machine such as 127.0.0.1 or 0.0.0.0",
                    name=host_option,
                    value=host,
                ) from None
            raise RealtimeConfigError(
                f"{port_option} {port} on {host} {reason} {port_option}", name=port_option, value=port
            ) from None


# ------------------------------------------------------------------------------------------- server
@dataclass
class _Client:
    """One WebSocket connection and, once it sent ``start``, its session."""

    id: int
    connection: ServerConnection
    send_lock: asyncio.Lock
    session: RealtimeSession | None = None
    limiter: InputRateLimiter | None = None
    sender: asyncio.Task | None = None


class _CloseConnection(Exception):
    """Raised by a message handler to end the connection after it has sent what it had to say."""


class RealtimeServer:
    """Serves realtime sessions over WebSocket at ``/ws`` and the browser page at ``/``.

    Args:
        pipeline: loaded models shared by every session.
        config: per-session settings (clients may change :data:`SESSION_CONFIG_KEYS` in ``start``).
        server_config: network settings.
        vad_factory: makes one VAD per session (default :class:`SileroVAD`).
        transcriber: transcriber shared by the sessions (default: the chat model, per session).
        clock: seconds, monotonic, for the input rate limits (tests pass a fake one).
        session_factory: makes the sessions; takes :class:`RealtimeSession`'s arguments.
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig | None = None,
        server_config: ServerConfig | None = None,
        vad_factory: Any = SileroVAD,
        transcriber: Transcriber | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[..., RealtimeSession] = RealtimeSession,
    ) -> None:
        self.pipeline = pipeline
        self.config = config if config is not None else RealtimeConfig()
        self.server_config = server_config if server_config is not None else ServerConfig()
        self.vad_factory = vad_factory
        self.transcriber = transcriber
        self.clock = clock
        self.session_factory = session_factory
        self.workers = ModelWorkers(self.server_config.workers)
        #: open sessions by id (a connection has one once its ``start`` was accepted)
        self.sessions: dict[int, RealtimeSession] = {}
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._static = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in _CONTENT_TYPES}

    # ------------------------------------------------------------------------------------------- HTTP
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WEBSOCKET_PATH:
            return None  # go on with the WebSocket handshake
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        file = self._static.get(name) if (path in ("/", "/index.html") or path.startswith("/static/")) else None
        if file is None:
            return connection.respond(404, f"not found: {path}\n")
        headers = Headers({"Content-Type": _CONTENT_TYPES[file.suffix], "Cache-Control": "no-store"})
        return Response(200, "OK", headers, file.read_bytes())

    # -------------------------------------------------------------------------------------- WebSocket
    @staticmethod
    async def _send(client: _Client, *messages: str | bytes) -> None:
        async with client.send_lock:  # an audio header and its samples are never split by another message
            for message in messages:
                await client.connection.send(message)

    async def _send_events(self, client: _Client, session: RealtimeSession) -> None:
        async for event in session.events():
            try:
                await self._send_event(client, event)
            except ConnectionClosed:
                raise
            except Exception:  # one event that cannot be sent must not silence the rest
                logger.exception("realtime session %d: sending a %s event failed", client.id, event.type)

    async def _send_event(self, client: _Client, event: RealtimeEvent) -> None:
        header = json.dumps(event.to_json(), ensure_ascii=False)
        if isinstance(event, AudioChunk):
            await self._send(client, header, event.pcm16())
        else:
            await self._send(client, header)

    async def _handle(self, connection: ServerConnection) -> None:
        limits = self.server_config
        if len(self._clients) >= limits.max_sessions:
            await connection.send(
                error_json("busy", f"the server holds {limits.max_sessions} sessions, its limit; retry later")
            )
            await connection.close(1013, "too many sessions")
            return
        client = _Client(next(self._ids), connection, asyncio.Lock())
        self._clients[client.id] = client
        logger.info("realtime connection %d opened from %s", client.id, connection.remote_address)
        try:
            ready = {
                "type": "ready",
                "session": client.id,
                "input_sample_rate": SAMPLE_RATE,
                "output_sample_rate": OUTPUT_SAMPLE_RATE,
                "max_message_bytes": limits.max_message_bytes,
                "idle_timeout_s": limits.idle_timeout_s,
                "max_input_speed": limits.max_input_speed,
                "input_burst_s": limits.input_burst_s,
                "config_keys": list(SESSION_CONFIG_KEYS),
            }
            await self._send(client, json.dumps(ready))
            await self._receive(client)
        except ConnectionClosed:
            pass
        finally:
            del self._clients[client.id]
            if client.session is not None:
                del self.sessions[client.id]
                await asyncio.to_thread(client.session.close)  # cancels its replies; joins its frame thread
            if client.sender is not None:
                with contextlib.suppress(ConnectionClosed):
                    await client.sender
            logger.info("realtime connection %d closed", client.id)

    async def _receive(self, client: _Client) -> None:
        limits = self.server_config
        while True:
            try:
                message = await asyncio.wait_for(client.connection.recv(), timeout=limits.idle_timeout_s)
            except TimeoutError:
                await self._send(
                    client,
                    error_json(
                        "idle_timeout",
                        f"nothing received for {limits.idle_timeout_s} s; keep sending audio (silence included) "
                        "or a ping to keep the connection",
                    ),
                )
                await client.connection.close(1000, "idle timeout")
                return
            try:
                await self._on_message(client, message)
            except RealtimeProtocolError as error:
                await self._send(client, error_json(error.code, str(error), **getattr(error, "fields", {})))
            except _CloseConnection:
                return
            except ConnectionClosed:
                raise
            except Exception as error:
                logger.exception("realtime connection %d: handling a message failed", client.id)
                await self._send(client, error_json("internal_error", f"handling the message failed: {error!r}"))

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        limit = self.server_config.max_message_bytes
        # a text message is bounded by its UTF-8 size (what went over the wire), not its character count
        size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))
        if size > limit:
            kind = "binary" if isinstance(message, bytes) else "text"
            raise RealtimeProtocolError(
                "message_too_large",
                f"a {kind} message of {size} bytes exceeds the limit of {limit} bytes (dropped); send audio in "
                f"frames of at most that size (20-100 ms of audio is 640-3200 bytes)",
            )
        if isinstance(message, bytes):
            self._on_audio(client, message)
            return
        control = parse_control_message(message)
        kind = control["type"]
        if kind == "start":
            await self._start_session(client, control.get("config"))
        elif kind == "playback":
            if client.session is None:
                raise RealtimeProtocolError(
                    "not_started", 'a playback report before the session started; send {"type": "start"} first'
                )
            client.session.report_playback(control["turn"], float(control["played_s"]))
        elif kind == "ping":
            await self._send(client, json.dumps({"type": "pong"}))
        elif kind == "stop":
            await client.connection.close(1000, "stopped by the client")
            raise _CloseConnection

    def _on_audio(self, client: _Client, message: bytes) -> None:
        if not message:
            raise RealtimeProtocolError(
                "bad_audio", "an empty binary message carries no audio; send PCM16 frames of 20-100 ms (640-3200 bytes)"
            )
        if len(message) % 2:
            raise RealtimeProtocolError(
                "bad_audio",
                f"a binary message of {len(message)} bytes (an odd count) is not whole PCM16 samples; send 2 bytes "
                "(16-bit little-endian) per sample",
            )
        if client.session is None or client.limiter is None:
            raise RealtimeProtocolError(
                "not_started",
                'audio before the session started (dropped); send {"type": "start", "sample_rate": 16000, '
                '"format": "pcm16"} first and wait for the "started" event',
            )
        seconds = len(message) / 2 / SAMPLE_RATE
        if not client.limiter.admit(seconds):
            dropped = client.limiter.report_due()
            if dropped is not None:
                limits = self.server_config
                error = RealtimeProtocolError(
                    "rate_limited",
                    f"{dropped:.2f} s of audio dropped: a session may send at most {limits.max_input_speed:g} s of "
                    f"audio per second (bursts of {limits.input_burst_s:g} s); send audio as it is recorded, "
                    "in real time",
                )
                error.fields = {  # type: ignore[attr-defined]
                    "dropped_s": round(dropped, 3),
                    "max_input_speed": limits.max_input_speed,
                    "input_burst_s": limits.input_burst_s,
                }
                raise error
            return
        try:
            client.session.push_audio(message, SAMPLE_RATE)
        except AudioInputError as error:
            raise RealtimeProtocolError("bad_audio", str(error)) from None

    async def _start_session(self, client: _Client, overrides: dict[str, Any] | None) -> None:
        if client.session is not None:
            raise RealtimeProtocolError(
                "already_started",
                f"session {client.id} has already started and a connection carries one session; send 'start' once "
                "(open a new connection for a new session)",
            )
        config = session_config(self.config, overrides)
        try:
            session = await self._create_session(config)
        except RealtimeConfigError as error:
            if overrides and error.name in overrides:  # the client's setting: it may send a corrected start
                raise RealtimeProtocolError("bad_config", str(error)) from None
            logger.error("realtime connection %d: the session settings do not fit the models: %s", client.id, error)
            await self._send(client, error_json("bad_config", str(error)))
            await client.connection.close(CLOSE_SERVER_CONFIG, "server session settings do not fit its models")
            raise _CloseConnection from None
        except Exception as error:
            logger.exception("realtime connection %d: creating the session failed", client.id)
            await self._send(client, error_json("internal_error", f"creating the session failed: {error!r}"))
            await client.connection.close(1011, "creating the session failed")
            raise _CloseConnection from None
        limits = self.server_config
        client.session = session
        client.limiter = InputRateLimiter(limits.max_input_speed, limits.input_burst_s, self.clock)
        self.sessions[client.id] = session
        client.sender = asyncio.create_task(self._send_events(client, session))
        started = {key: getattr(config, key) for key in SESSION_CONFIG_KEYS}
        await self._send(client, json.dumps({"type": "started", "session": client.id, "config": started}))
        logger.info("realtime session %d started", client.id)

    async def _create_session(self, config: RealtimeConfig) -> RealtimeSession:
        """Build the session off the event loop (its VAD and the settings' checks against the models take time)."""

        def build() -> RealtimeSession:
            return self.session_factory(
                self.pipeline, config, workers=self.workers, vad=self.vad_factory(), transcriber=self.transcriber
            )

        future = asyncio.get_running_loop().run_in_executor(None, build)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # the connection went away meanwhile: close the session once it exists

            def close_orphan(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is None:
                    done.result().close()

            future.add_done_callback(close_orphan)
            raise

    # ---------------------------------------------------------------------------------------- running
    async def start(self) -> Server:
        """Bind and start serving (returns the ``websockets`` server; see :attr:`port`)."""
        limits = self.server_config
        self._server = await serve(
            self._handle,
            limits.host,
            limits.port,
            process_request=self._process_request,
            max_size=4 * limits.max_message_bytes,
            ping_interval=20,
            ping_timeout=20,
        )
        logger.info("realtime server on http://%s:%d/ (WebSocket %s)", limits.host, self.port, WEBSOCKET_PATH)
        return self._server

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self._server is not None, "start() the server first"
        return next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (their sessions close) and stop the model workers."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.to_thread(self.workers.shutdown)

    async def serve_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()
