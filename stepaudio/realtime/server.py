"""The realtime WebSocket server (``stepaudio serve-realtime``) and its static browser page.

One :class:`~stepaudio.realtime.RealtimeSession` per WebSocket connection; all sessions share one
loaded :class:`~stepaudio.StepAudio` and one :class:`~stepaudio.realtime.ModelWorkers` queue.  The
protocol is described in ``protocol.md`` next to this file.  Built on the ``websockets`` library
(asyncio API), which also serves the page and its scripts over plain HTTP from the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
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
from .events import AudioChunk, ErrorEvent, RealtimeEvent
from .session import RealtimeSession
from .vad import SileroVAD
from .workers import ModelWorkers

logger = logging.getLogger(__name__)

__all__ = ["ServerConfig", "RealtimeServer", "WEBSOCKET_PATH", "STATIC_DIR"]

WEBSOCKET_PATH = "/ws"
STATIC_DIR = Path(__file__).with_name("static")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass
class ServerConfig:
    """Network settings of the realtime server.

    Attributes:
        host: interface to bind (default loopback only; use ``0.0.0.0`` deliberately to expose it).
        port: TCP port (0 picks a free one; see :attr:`RealtimeServer.port`).
        max_message_bytes: larger client messages are refused with an ``error`` event (up to 4x this
            size; beyond that the connection is closed with code 1009 by the WebSocket layer).
        idle_timeout_s: a connection that sends nothing for this long is closed.
        max_sessions: concurrent connections; more are refused with a ``busy`` error.
        workers: model jobs (replies, transcripts) that run at the same time across all sessions.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    max_message_bytes: int = 64 * 1024
    idle_timeout_s: float = 60.0
    max_sessions: int = 8
    workers: int = 1

    def __post_init__(self) -> None:
        try:
            if not isinstance(self.host, str) or not self.host.strip():
                raise invalid_value("host", "an interface name or address such as 127.0.0.1", self.host)
            check_int(self.port, "port", minimum=0, maximum=65535, hint="0 picks a free port")
            check_int(self.max_message_bytes, "max_message_bytes", minimum=1024, maximum=64 * 1024 * 1024)
            check_float(self.idle_timeout_s, "idle_timeout_s", minimum=0, exclusive_minimum=True)
            check_int(self.max_sessions, "max_sessions", minimum=1, maximum=10_000)
            check_int(self.workers, "workers", minimum=1, maximum=256)
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


def _error_json(code: str, message: str) -> str:
    return json.dumps(ErrorEvent(code=code, message=message).to_json(), ensure_ascii=False)


#: Deepest nesting of objects/arrays accepted in a control message (the protocol needs 1).
MAX_JSON_DEPTH = 8


def json_nesting_depth(text: str) -> int:
    """Deepest ``{``/``[`` nesting of a JSON text, counted without parsing it (brackets in strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def parse_control_message(text: str) -> dict[str, Any]:
    """A client's JSON control message, checked; raises :class:`RealtimeProtocolError` naming the problem."""
    depth = json_nesting_depth(text)
    if depth > MAX_JSON_DEPTH:  # json.loads would recurse once per level: refuse before parsing
        raise RealtimeProtocolError(
            "bad_json",
            f"a control message may nest objects and arrays at most {MAX_JSON_DEPTH} deep; this one nests {depth}",
        )
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise RealtimeProtocolError(
            "bad_json", f"a text message must be a JSON object; could not parse it: {error}"
        ) from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise RealtimeProtocolError("bad_message", 'a control message must be a JSON object with a string "type"')
    kind = message["type"]
    if kind == "start":
        rate = message.get("sample_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise RealtimeProtocolError(
                "bad_sample_rate",
                f"the server takes PCM16 mono at {SAMPLE_RATE} Hz; the start message declared {rate!r}. "
                f"Resample on the client (an AudioContext at {SAMPLE_RATE} Hz does it) and declare {SAMPLE_RATE}",
            )
        if message.get("format", "pcm16") != "pcm16":
            raise RealtimeProtocolError(
                "bad_format", f"only format 'pcm16' is supported; got {message.get('format')!r}"
            )
    elif kind == "playback":
        turn, played = message.get("turn"), message.get("played_s")
        valid_number = isinstance(played, (int, float)) and not isinstance(played, bool) and 0 <= played < 1e6
        if not isinstance(turn, int) or isinstance(turn, bool) or not valid_number:
            raise RealtimeProtocolError(
                "bad_message",
                'a playback message needs an integer "turn" and a non-negative number "played_s"; '
                f"got turn={turn!r}, played_s={played!r}",
            )
    elif kind not in ("stop", "ping"):
        raise RealtimeProtocolError(
            "unknown_type", f"unknown message type {kind!r}; use 'start', 'playback', 'stop' or 'ping'"
        )
    return message


class RealtimeServer:
    """Serves realtime sessions over WebSocket at ``/ws`` and the browser page at ``/``.

    Args:
        pipeline: loaded models shared by every session.
        config: per-session settings.
        server_config: network settings.
        vad_factory: makes one VAD per session (default :class:`SileroVAD`).
        transcriber: transcriber shared by the sessions (default: the chat model, per session).
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig | None = None,
        server_config: ServerConfig | None = None,
        vad_factory: Any = SileroVAD,
        transcriber: Transcriber | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = config if config is not None else RealtimeConfig()
        self.server_config = server_config if server_config is not None else ServerConfig()
        self.vad_factory = vad_factory
        self.transcriber = transcriber
        self.workers = ModelWorkers(self.server_config.workers)
        self.sessions: dict[int, RealtimeSession] = {}
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
    async def _send_events(self, connection: ServerConnection, session: RealtimeSession) -> None:
        async for event in session.events():
            await self._send_event(connection, event)

    @staticmethod
    async def _send_event(connection: ServerConnection, event: RealtimeEvent) -> None:
        await connection.send(json.dumps(event.to_json(), ensure_ascii=False))
        if isinstance(event, AudioChunk):
            await connection.send(event.pcm16())

    async def _handle(self, connection: ServerConnection) -> None:
        limits = self.server_config
        if len(self.sessions) >= limits.max_sessions:
            await connection.send(_error_json("busy", f"the server holds {limits.max_sessions} sessions; retry later"))
            await connection.close(1013, "too many sessions")
            return
        session_id = next(self._ids)
        session = RealtimeSession(
            self.pipeline, self.config, workers=self.workers, vad=self.vad_factory(), transcriber=self.transcriber
        )
        self.sessions[session_id] = session
        sender = asyncio.create_task(self._send_events(connection, session))
        logger.info("realtime session %d opened from %s", session_id, connection.remote_address)
        try:
            await connection.send(
                json.dumps(
                    {
                        "type": "ready",
                        "session": session_id,
                        "input_sample_rate": SAMPLE_RATE,
                        "output_sample_rate": OUTPUT_SAMPLE_RATE,
                        "max_message_bytes": limits.max_message_bytes,
                        "idle_timeout_s": limits.idle_timeout_s,
                    }
                )
            )
            await self._receive(connection, session)
        except ConnectionClosed:
            pass
        finally:
            del self.sessions[session_id]
            await asyncio.to_thread(session.close)  # cancels its replies; joins its frame thread
            with contextlib.suppress(ConnectionClosed):
                await sender
            logger.info("realtime session %d closed", session_id)

    async def _receive(self, connection: ServerConnection, session: RealtimeSession) -> None:
        limits = self.server_config
        while True:
            try:
                message = await asyncio.wait_for(connection.recv(), timeout=limits.idle_timeout_s)
            except TimeoutError:
                await connection.send(_error_json("idle_timeout", f"nothing received for {limits.idle_timeout_s} s"))
                await connection.close(1000, "idle timeout")
                return
            if len(message) > limits.max_message_bytes:
                await connection.send(
                    _error_json(
                        "message_too_large",
                        f"a message of {len(message)} bytes exceeds the limit of {limits.max_message_bytes}; "
                        "send audio in frames of at most that size (e.g. 20-100 ms)",
                    )
                )
                continue
            try:
                if isinstance(message, bytes):
                    session.push_audio(message, SAMPLE_RATE)
                    continue
                control = parse_control_message(message)
            except RealtimeProtocolError as error:
                await connection.send(_error_json(error.code, str(error)))
                continue
            except AudioInputError as error:
                await connection.send(_error_json("bad_audio", str(error)))
                continue
            if control["type"] == "playback":
                session.report_playback(control["turn"], float(control["played_s"]))
            elif control["type"] == "ping":
                await connection.send(json.dumps({"type": "pong"}))
            elif control["type"] == "stop":
                await connection.close(1000, "stopped by the client")
                return

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
