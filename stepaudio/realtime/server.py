"""``stepaudio serve-realtime``: the realtime service on a FastAPI app of its own, served by uvicorn.

:class:`RealtimeServer` is a FastAPI app holding only the realtime service (:func:`~stepaudio.realtime.asgi.
mount_realtime`: the WebSocket at ``/ws``, the browser page at ``/`` and its scripts at ``/static/*``),
served by :class:`AsgiServer` (uvicorn, its WebSocket implementation ``websockets-sansio``) on one port.
The protocol is described in ``protocol.md`` next to this file.  :class:`AsgiServer` serves any ASGI app
the same way (bind first, so the address can be printed once it is listened on; port 0 works).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from ..errors import RealtimeConfigError
from .asgi import (
    STATIC_DIR,
    WEBSOCKET_PATH,
    RealtimeService,
    ServerConfig,
    mount_realtime,
)
from .config import RealtimeConfig
from .context import Transcriber
from .messages import SESSION_CONFIG_KEYS, parse_control_message, session_config
from .ratelimit import InputRateLimiter
from .session import RealtimeSession
from .vad import SileroVAD
from .workers import ModelWorkers

logger = logging.getLogger(__name__)

__all__ = [
    "ServerConfig",
    "RealtimeServer",
    "AsgiServer",
    "check_bindable",
    "InputRateLimiter",
    "SESSION_CONFIG_KEYS",
    "WEBSOCKET_PATH",
    "STATIC_DIR",
    "UVICORN_WS",
    "parse_control_message",
    "session_config",
]

#: uvicorn's WebSocket implementation: the sans-I/O protocol of the ``websockets`` library (its legacy one
#: is deprecated by both projects and warns with websockets >= 14).
UVICORN_WS = "websockets-sansio"
#: seconds between keepalive pings, and to wait for their pong (as the ``websockets`` server had)
KEEPALIVE_S = 20.0


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


def _bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening-ready sockets on every address of ``host`` (one port for all, also when ``port`` is 0).

    The first address must bind (its :class:`OSError` is raised); a further one that does not (e.g. IPv6
    switched off for ``localhost``) is left out.
    """
    addresses = []
    for family, kind, protocol, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if (family, address[:2]) not in [(f, a[:2]) for f, _, _, a in addresses]:
            addresses.append((family, kind, protocol, address))
    sockets: list[socket.socket] = []
    try:
        for index, (family, kind, protocol, address) in enumerate(addresses):
            sock = socket.socket(family, kind, protocol)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # the IPv4 address, if any, has its own socket
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if index > 0:
                    address = (address[0], sockets[0].getsockname()[1], *address[2:])
                sock.bind(address)
                sock.setblocking(False)
            except OSError:
                sock.close()
                if index == 0:
                    raise
                logger.debug("not listening on %s too (it cannot be bound)", address[0])
                continue
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the caller's ``asyncio.run`` turns Ctrl-C into a
    cancellation, and :meth:`AsgiServer.stop` ends the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AsgiServer:
    """Serves an ASGI app with uvicorn inside the running event loop, from :meth:`start` until :meth:`stop`.

    The sockets are bound before serving (so errors are exceptions here, and the address can be printed
    once it is listened on).  Stopping runs uvicorn's shutdown: open connections are closed (WebSockets with
    1012), then the app's lifespan shutdown runs.

    Args:
        app: the ASGI app (e.g. a FastAPI app).
        host, port: where to listen; port 0 picks a free one (see :attr:`port`).
        ws_max_size: WebSocket messages larger than this close the connection with 1009.
        graceful_timeout_s: how long shutdown waits for open connections before cancelling their handlers.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ws_max_size: int = 16 * 1024 * 1024,
        graceful_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.ws_max_size = ws_max_size
        self.graceful_timeout_s = graceful_timeout_s
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None
        self._port: int | None = None

    async def start(self) -> None:
        """Bind, start serving and return once requests are taken (the app's lifespan has started)."""
        if self._task is not None:
            raise RuntimeError("the server is already started; stop() it first")
        sockets = _bind_sockets(self.host, self.requested_port)
        self._port = sockets[0].getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self._port,
            ws=UVICORN_WS,
            ws_max_size=self.ws_max_size,
            ws_ping_interval=KEEPALIVE_S,
            ws_ping_timeout=KEEPALIVE_S,
            lifespan="on",
            log_config=None,  # the process's logging stays the caller's
            timeout_graceful_shutdown=self.graceful_timeout_s,
        )
        server = _Uvicorn(config)

        async def serve() -> None:
            try:
                await server.serve(sockets=sockets)
            except SystemExit as exit:  # uvicorn exits the process when the app's lifespan fails to start
                raise RuntimeError(f"the app failed to start (uvicorn exit status {exit.code}); see the log") from None

        self._server, self._task = server, asyncio.create_task(serve())
        while not server.started:
            if self._task.done():
                task, self._task, self._server = self._task, None, None
                for sock in sockets:
                    sock.close()
                task.result()  # raises what stopped it
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)
        logger.info("serving http://%s:%d/", self.host, self._port)

    @property
    def port(self) -> int:
        """The bound TCP port (also after :meth:`stop`)."""
        assert self._port is not None, "start() the server first"
        return self._port

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._task is not None

    async def stop(self) -> None:
        """Stop listening, close the open connections, run the app's lifespan shutdown; returns when done."""
        if self._task is None or self._server is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._task = self._server = None


class RealtimeServer:
    """Serves realtime sessions over WebSocket at ``/ws`` and the browser page at ``/`` (one FastAPI app).

    Args:
        pipeline: loaded models shared by every session.
        config: per-session settings (clients may change :data:`SESSION_CONFIG_KEYS` in ``start``).
        server_config: network settings and limits.
        vad_factory: makes one VAD per session (default :class:`SileroVAD`).
        transcriber: transcriber shared by the sessions (default: the chat model, per session).
        clock: seconds, monotonic, for the input rate limits (tests pass a fake one).
        session_factory: makes the sessions; takes :class:`RealtimeSession`'s arguments.

    Attributes:
        app: the FastAPI app (the realtime service mounted with its page at ``/``).
        service: the :class:`~stepaudio.realtime.asgi.RealtimeService` (sessions, model workers).
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
        self.app = FastAPI(title="Step-Audio realtime", docs_url=None, redoc_url=None, openapi_url=None)
        self.service: RealtimeService = mount_realtime(
            self.app,
            pipeline,
            config,
            server_config,
            vad_factory=vad_factory,
            transcriber=transcriber,
            clock=clock,
            session_factory=session_factory,
            page_path="/",
        )
        self._server: AsgiServer | None = None

    @property
    def pipeline(self) -> Any:
        return self.service.pipeline

    @property
    def config(self) -> RealtimeConfig:
        return self.service.config

    @property
    def server_config(self) -> ServerConfig:
        return self.service.server_config

    @property
    def workers(self) -> ModelWorkers:
        """The model workers every session shares."""
        return self.service.workers

    @property
    def sessions(self) -> dict[int, RealtimeSession]:
        """Open sessions by id (a connection has one once its ``start`` was accepted)."""
        return self.service.sessions

    async def start(self) -> AsgiServer:
        """Bind and start serving (returns the :class:`AsgiServer`; see :attr:`port`)."""
        limits = self.server_config
        self._server = AsgiServer(self.app, limits.host, limits.port, ws_max_size=4 * limits.max_message_bytes)
        await self._server.start()
        logger.info("realtime server on http://%s:%d/ (WebSocket %s)", limits.host, self.port, WEBSOCKET_PATH)
        return self._server

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self._server is not None, "start() the server first"
        return self._server.port

    async def stop(self) -> None:
        """Close every connection (1001; their sessions close), stop the model workers and the server."""
        await self.service.aclose()  # first, so that clients see 1001 (going away) rather than uvicorn's 1012
        if self._server is not None:
            await self._server.stop()

    async def serve_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()


def serve_until_interrupted(server: Any, announce: Callable[[int], None]) -> None:
    """Run ``server`` (an :class:`AsgiServer` or :class:`RealtimeServer`) until Ctrl-C, then stop it cleanly.

    ``announce(port)`` is called once the address is listened on (so what it prints can be opened at once).
    """

    async def serve() -> None:
        await server.start()
        announce(server.port)
        try:
            await asyncio.Future()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
