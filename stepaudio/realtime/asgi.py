"""The realtime service on any FastAPI app: :func:`mount_realtime` adds the WebSocket ``/ws`` and the browser page.

One :class:`~stepaudio.realtime.RealtimeSession` per WebSocket connection, created when the client sends
``start`` (with optional per-session settings); all sessions share one loaded :class:`~stepaudio.StepAudio`
and the service's one :class:`~stepaudio.realtime.ModelWorkers` queue.  Each session's audio input is rate
limited (:class:`InputRateLimiter`) so one client cannot starve the others.  The protocol is described in
``protocol.md`` next to this file.

``stepaudio serve-realtime`` serves an app with only this service (:class:`~stepaudio.realtime.server.
RealtimeServer`, page at ``/``); a bigger app (the OpenAI-style API) mounts it beside its own routes (page
at ``/realtime/`` by default, so that ``/`` stays the app's).  The service's model workers stop when the
app shuts down (its lifespan), or at :meth:`RealtimeService.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import PlainTextResponse, RedirectResponse
from starlette.websockets import WebSocketDisconnect

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
    "RealtimeService",
    "mount_realtime",
    "WEBSOCKET_PATH",
    "DEFAULT_PAGE_PATH",
    "STATIC_DIR",
]

WEBSOCKET_PATH = "/ws"
#: where :func:`mount_realtime` puts the browser page unless told otherwise (``/`` stays the app's)
DEFAULT_PAGE_PATH = "/realtime"
STATIC_DIR = Path(__file__).with_name("static")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

#: Close code when the server's own session settings do not fit its models (the client cannot fix it).
CLOSE_SERVER_CONFIG = 1011
#: Close code for a message over 4x ``max_message_bytes``.
CLOSE_TOO_LARGE = 1009
#: Close code when the service shuts down.
CLOSE_GOING_AWAY = 1001
#: Seconds a close waits for an audio header and its samples being sent to finish (they are never split).
_CLOSE_LOCK_WAIT_S = 5.0


@dataclass
class ServerConfig:
    """Network settings of the realtime service.

    Attributes:
        host: interface to bind (default loopback only; use ``0.0.0.0`` deliberately to expose it).  Used by
            :class:`~stepaudio.realtime.server.RealtimeServer`; a mounted service is served wherever its app is.
        port: TCP port (0 picks a free one; see :attr:`RealtimeServer.port`); like ``host``.
        max_message_bytes: larger client messages (binary length, or a text message's UTF-8 length) are
            refused with an ``error`` event (up to 4x this size; beyond that the connection is closed
            with code 1009).
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


# ------------------------------------------------------------------------------------------ service
@dataclass
class _Client:
    """One WebSocket connection and, once it sent ``start``, its session."""

    id: int
    websocket: WebSocket
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: RealtimeSession | None = None
    limiter: InputRateLimiter | None = None
    sender: asyncio.Task | None = None
    #: the connection is gone or a close was sent: nothing more goes out
    closed: bool = False
    #: set once the connection's handler has finished (its session closed)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Disconnected(Exception):
    """The client's connection is gone (or the service closed it): nothing can be sent any more."""


class _CloseConnection(Exception):
    """Raised by a message handler to end the connection after it has sent what it had to say."""


class RealtimeService:
    """The realtime WebSocket sessions of one app (made by :func:`mount_realtime`).

    Attributes:
        pipeline, config, server_config: what the sessions are made of (see :func:`mount_realtime`).
        workers: the model workers every session shares; stopped by :meth:`aclose`.
        sessions: open sessions by id (a connection has one once its ``start`` was accepted).
        page_path: where the browser page is (``None``: no page); the WebSocket is at :data:`WEBSOCKET_PATH`.
    """

    def __init__(
        self,
        pipeline: Any,
        config: RealtimeConfig | None = None,
        server_config: ServerConfig | None = None,
        *,
        vad_factory: Any = SileroVAD,
        transcriber: Transcriber | None = None,
        clock: Callable[[], float] = time.monotonic,
        session_factory: Callable[..., RealtimeSession] = RealtimeSession,
        page_path: str | None = DEFAULT_PAGE_PATH,
    ) -> None:
        self.pipeline = pipeline
        self.config = config if config is not None else RealtimeConfig()
        self.server_config = server_config if server_config is not None else ServerConfig()
        self.vad_factory = vad_factory
        self.transcriber = transcriber
        self.clock = clock
        self.session_factory = session_factory
        self.page_path = page_path
        self.workers = ModelWorkers(self.server_config.workers)
        self.sessions: dict[int, RealtimeSession] = {}
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._closed = False
        self._static = {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in _CONTENT_TYPES}

    @property
    def connections(self) -> int:
        """Open WebSocket connections (with or without a started session)."""
        return len(self._clients)

    @property
    def closed(self) -> bool:
        """:meth:`aclose` has finished: no connection is taken and the model workers are stopped."""
        return self._closed

    # ------------------------------------------------------------------------------------------- page
    def static_response(self, name: str) -> Response:
        """One file of the page (``index.html``, ``app.js``, ``capture-worklet.js``), never cached."""
        file = self._static.get(name)
        if file is None:
            return PlainTextResponse(f"not found: {name}\n", status_code=404, headers={"Cache-Control": "no-store"})
        return Response(
            file.read_bytes(), media_type=_CONTENT_TYPES[file.suffix], headers={"Cache-Control": "no-store"}
        )

    # ---------------------------------------------------------------------------------------- sending
    @staticmethod
    async def _send(client: _Client, *messages: str | bytes) -> None:
        async with client.send_lock:  # an audio header and its samples are never split by another message
            for message in messages:
                if client.closed:
                    raise _Disconnected
                try:
                    if isinstance(message, bytes):
                        await client.websocket.send_bytes(message)
                    else:
                        await client.websocket.send_text(message)
                except (WebSocketDisconnect, RuntimeError, OSError) as error:
                    # gone meanwhile (Starlette / the server refuse a send after a close or a lost connection)
                    client.closed = True
                    raise _Disconnected from error

    @staticmethod
    async def _close(client: _Client, code: int, reason: str = "") -> None:
        """Send a close frame (once); waits, a bounded time, for an audio header and its samples to go out."""
        if client.closed:
            return
        locked = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.send_lock.acquire(), _CLOSE_LOCK_WAIT_S)
            locked = True
        try:
            if client.closed:
                return
            client.closed = True
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await client.websocket.close(code, reason)
        finally:
            if locked:
                client.send_lock.release()

    async def _send_events(self, client: _Client, session: RealtimeSession) -> None:
        async for event in session.events():
            try:
                await self._send_event(client, event)
            except _Disconnected:
                return  # the session is being closed; its events() ends soon after
            except Exception:  # one event that cannot be sent must not silence the rest
                logger.exception("realtime session %d: sending a %s event failed", client.id, event.type)

    async def _send_event(self, client: _Client, event: RealtimeEvent) -> None:
        header = json.dumps(event.to_json(), ensure_ascii=False)
        if isinstance(event, AudioChunk):
            await self._send(client, header, event.pcm16())
        else:
            await self._send(client, header)

    # ------------------------------------------------------------------------------------- connection
    async def handle(self, websocket: WebSocket) -> None:
        """Serve one WebSocket connection until it closes (the ``/ws`` endpoint)."""
        limits = self.server_config
        try:
            await websocket.accept()
        except (WebSocketDisconnect, RuntimeError, OSError):  # gone during the handshake
            return
        if self._closing:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        if len(self._clients) >= limits.max_sessions:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await websocket.send_text(
                    error_json("busy", f"the server holds {limits.max_sessions} sessions, its limit; retry later")
                )
                await websocket.close(1013, "too many sessions")
            return
        client = _Client(next(self._ids), websocket)
        self._clients[client.id] = client
        peer = websocket.client
        logger.info("realtime connection %d opened from %s", client.id, f"{peer.host}:{peer.port}" if peer else "?")
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
        except _Disconnected:
            pass
        finally:
            try:
                await self._close(client, 1000)  # a handler that ends always closes its connection
                del self._clients[client.id]
                if client.session is not None:
                    del self.sessions[client.id]
                    await asyncio.to_thread(client.session.close)  # cancels its replies; joins its frame thread
                if client.sender is not None:
                    await client.sender
            finally:
                client.done.set()
            logger.info("realtime connection %d closed", client.id)

    async def _receive(self, client: _Client) -> None:
        limits = self.server_config
        while True:
            try:
                message = await asyncio.wait_for(client.websocket.receive(), timeout=limits.idle_timeout_s)
            except TimeoutError:
                await self._send(
                    client,
                    error_json(
                        "idle_timeout",
                        f"nothing received for {limits.idle_timeout_s} s; keep sending audio (silence included) "
                        "or a ping to keep the connection",
                    ),
                )
                await self._close(client, 1000, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                client.closed = True
                return
            data: str | bytes
            if message.get("bytes") is not None:
                data = message["bytes"]
            elif message.get("text") is not None:
                data = message["text"]
            else:  # an empty ASGI receive event: nothing to handle
                continue
            try:
                await self._on_message(client, data)
            except RealtimeProtocolError as error:
                await self._send(client, error_json(error.code, str(error), **getattr(error, "fields", {})))
            except _CloseConnection:
                return
            except _Disconnected:
                raise
            except Exception as error:
                logger.exception("realtime connection %d: handling a message failed", client.id)
                await self._send(client, error_json("internal_error", f"handling the message failed: {error!r}"))

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        limit = self.server_config.max_message_bytes
        # a text message is bounded by its UTF-8 size (what went over the wire), not its character count
        size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))
        if size > 4 * limit:  # what the WebSocket layer of a server of its own refuses (ASGI has no frame limit)
            logger.info("realtime connection %d: a message of %d bytes; closing (1009)", client.id, size)
            await self._close(client, CLOSE_TOO_LARGE, "message too big")
            raise _CloseConnection
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
            await self._close(client, 1000, "stopped by the client")
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
            await self._close(client, CLOSE_SERVER_CONFIG, "server session settings do not fit its models")
            raise _CloseConnection from None
        except Exception as error:
            logger.exception("realtime connection %d: creating the session failed", client.id)
            await self._send(client, error_json("internal_error", f"creating the session failed: {error!r}"))
            await self._close(client, 1011, "creating the session failed")
            raise _CloseConnection from None
        if client.closed:  # the connection went away while the session was being made
            session.close()
            raise _Disconnected
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

    # ---------------------------------------------------------------------------------------- closing
    async def close_connections(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down", timeout: float = 10.0
    ) -> None:
        """Close every open connection with ``code`` and wait (up to ``timeout`` s) until their sessions closed."""
        clients = list(self._clients.values())
        if not clients:
            return
        await asyncio.gather(*(self._close(client, code, reason) for client in clients))
        waits = [asyncio.ensure_future(client.done.wait()) for client in clients]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for wait in pending:
            wait.cancel()
        if pending:
            logger.warning("realtime: %d connection(s) did not finish within %g s of closing", len(pending), timeout)

    async def aclose(self) -> None:
        """Refuse new connections, close the open ones (1001) and stop the model workers; idempotent."""
        self._closing = True
        await self.close_connections()
        if not self._closed:
            await asyncio.to_thread(self.workers.shutdown)
            self._closed = True


# -------------------------------------------------------------------------------------------- mount
def _check_page_path(page_path: str | None) -> None:
    if page_path is None or page_path == "/":
        return
    if not isinstance(page_path, str) or not page_path.startswith("/") or page_path.endswith("/"):
        raise ValueError(
            f"page_path must be '/', a path such as '/realtime' (no trailing slash) or None; got {page_path!r}"
        )
    if page_path == WEBSOCKET_PATH:
        raise ValueError(f"page_path {page_path!r} is the WebSocket's path; pick another, such as '/realtime'")


def mount_realtime(
    app: FastAPI,
    pipeline: Any,
    config: RealtimeConfig | None = None,
    server_config: ServerConfig | None = None,
    *,
    vad_factory: Any = SileroVAD,
    transcriber: Transcriber | None = None,
    clock: Callable[[], float] = time.monotonic,
    session_factory: Callable[..., RealtimeSession] = RealtimeSession,
    page_path: str | None = DEFAULT_PAGE_PATH,
) -> RealtimeService:
    """Add the realtime service to ``app``: the WebSocket at ``/ws`` and the browser page.

    The page is at ``page_path + "/"`` (``page_path`` itself redirects there) with its scripts under
    ``page_path + "/static/"``; ``page_path="/"`` puts it at ``/`` and ``/static/*`` (what
    ``stepaudio serve-realtime`` serves), ``None`` leaves it out.  The routes are left out of the app's
    OpenAPI schema.  The service's model workers stop when the app shuts down: its lifespan is wrapped, so
    the app's own lifespan (and other services mounted the same way) still run, this one closing first.

    Args:
        app: the app to add the routes to.
        pipeline: loaded models shared by every session.
        config: per-session settings (clients may change :data:`SESSION_CONFIG_KEYS` in ``start``).
        server_config: the limits (message size, idle timeout, sessions, workers, input rate); ``host`` and
            ``port`` are not used here (the app is served wherever its server listens).
        vad_factory: makes one VAD per session (default :class:`SileroVAD`).
        transcriber: transcriber shared by the sessions (default: the chat model, per session).
        clock: seconds, monotonic, for the input rate limits (tests pass a fake one).
        session_factory: makes the sessions; takes :class:`RealtimeSession`'s arguments.
        page_path: where the browser page goes (see above).

    Returns:
        The service: its ``sessions``, ``workers``, and :meth:`RealtimeService.aclose`.
    """
    _check_page_path(page_path)
    service = RealtimeService(
        pipeline,
        config,
        server_config,
        vad_factory=vad_factory,
        transcriber=transcriber,
        clock=clock,
        session_factory=session_factory,
        page_path=page_path,
    )

    async def realtime_websocket(websocket: WebSocket) -> None:
        await service.handle(websocket)

    app.add_api_websocket_route(WEBSOCKET_PATH, realtime_websocket, name="realtime_websocket")

    if page_path is not None:
        prefix = "" if page_path == "/" else page_path

        async def realtime_page() -> Response:
            return service.static_response("index.html")

        async def realtime_static(name: str) -> Response:
            return service.static_response(name)

        for path in (f"{prefix}/", f"{prefix}/index.html"):
            app.add_api_route(path, realtime_page, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"{prefix}/static/{{name}}", realtime_static, methods=["GET"], include_in_schema=False)
        if prefix:
            last = prefix.rsplit("/", 1)[1]

            async def realtime_page_slash(request: Request) -> Response:
                # the page's scripts are relative to it: /realtime -> /realtime/ (relative, so a root_path holds)
                query = request.url.query
                return RedirectResponse(f"{last}/" + (f"?{query}" if query else ""), status_code=307)

            app.add_api_route(prefix, realtime_page_slash, methods=["GET"], include_in_schema=False)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        async with inner(asgi_app) as state:
            try:
                yield state
            finally:
                await service.aclose()

    app.router.lifespan_context = lifespan
    return service
