"""``create_app``: the OpenAI-compatible FastAPI app over one loaded :class:`~stepaudio.StepAudio`.

Routes: ``POST /v1/audio/speech``, ``POST /v1/chat/completions``, ``POST /v1/audio/transcriptions``,
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/audio/voices``, ``GET /health``; with an EditX model
(``editx=``) also ``POST /v1/audio/edits``, ``GET /v1/audio/edit_types`` and cloning by
``model: "step-audio-editx"`` on ``/v1/audio/speech`` (:mod:`stepaudio.server.editx`).  Every error is
an OpenAI error body (:mod:`stepaudio.server.errors`); model work goes through one bounded
:class:`~stepaudio.server.work_queue.WorkQueue` (``app.state.stepaudio.work_queue``).

Extension points, in this order, after the API routes:

* ``realtime=True`` mounts the real-time WebSocket routes with
  ``stepaudio.realtime.asgi.mount_realtime(app, pipeline, **realtime_options)``;
* ``ui=True`` mounts the Gradio demo with ``stepaudio.server.ui.mount_ui(app, pipeline, path=ui_path, **ui_options)``
  (and ``editx=editx`` when the app has one: the demo then has an Edit tab);
* ``extra(app)`` is called last, for anything else (more routes, middleware, mounts).

Both modules are imported only when their flag is set.  Mounted apps and routes share ``app`` and may
use ``app.state.stepaudio`` (:class:`~stepaudio.server.state.ServerState`: the pipeline, settings and
work queue) to queue their model work behind the same limits.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI

from ..errors import InvalidArgumentError
from ..validation import describe_value
from . import chat, models, speech, transcription
from . import editx as editx_routes
from .errors import APIError, install_error_handlers
from .settings import ServerSettings
from .state import AudioTranscripts, ServerState
from .work_queue import WorkQueue

logger = logging.getLogger(__name__)

__all__ = ["BodySizeLimit", "create_app"]


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, by header or while reading.

    A ``Content-Length`` above the limit is answered at once; a body sent without one (chunked) is
    counted as it arrives and refused when it passes the limit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than this server's limit of {self.max_bytes} bytes; send less audio "
            "(or a compressed format)",
            code="request_too_large",
        )

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._error().response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited_receive, send)


def _import_hook(module: str, name: str, flag: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"{flag}=True needs {module}.{name}, which cannot be imported: {error}") from error


def create_app(
    pipeline: Any,
    settings: ServerSettings | None = None,
    *,
    editx: Any | None = None,
    realtime: bool = False,
    realtime_options: Mapping[str, Any] | None = None,
    ui: bool = False,
    ui_path: str = "/ui",
    ui_options: Mapping[str, Any] | None = None,
    extra: Callable[[FastAPI], None] | None = None,
    title: str = "Step-Audio (OpenAI-compatible)",
) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a loaded :class:`~stepaudio.StepAudio`).

    Args:
        pipeline: anything with ``llm`` (Step-Audio-Chat), ``encoder`` (the audio tokenizer) and
            ``decoder`` (Step-Audio-TTS-3B with its speakers folder) like ``StepAudio``.
        settings: names, limits and queue sizes (default :class:`ServerSettings`).
        editx: a loaded :class:`~stepaudio.editx.StepAudioEditX` (``stepaudio.assembly.load_editx``, best
            with the pipeline's tokenizer) to serve as ``settings.editx_model``: zero-shot cloning on
            ``/v1/audio/speech`` and ``POST /v1/audio/edits``; ``None`` (default): those answer 404.
        realtime: mount the real-time WebSocket routes (``stepaudio.realtime.asgi.mount_realtime``);
            ``realtime_options`` are passed to it as keyword arguments.
        ui: mount the Gradio UI at ``ui_path`` (``stepaudio.server.ui.mount_ui``); ``ui_options`` are passed
            to it as keyword arguments.
        extra: called with the app last, to add routes, middleware or mounts.

    Raises:
        InvalidArgumentError: a ``voice_aliases`` target that the speakers folder does not list; an ``editx``
            that is not an EditX model.
        ImportError: ``realtime`` / ``ui`` requested but its module is not available.
    """
    settings = settings if settings is not None else ServerSettings()
    if not isinstance(settings, ServerSettings):
        detail = f"must be a ServerSettings, got {type(settings).__name__}"
        raise InvalidArgumentError.about("settings", detail, settings)
    if editx is not None and not all(callable(getattr(editx, name, None)) for name in ("clone", "edit_steps")):
        detail = f"must be None or a StepAudioEditX (stepaudio.assembly.load_editx), got {describe_value(editx)}"
        raise InvalidArgumentError.about("editx", detail, editx)
    state = ServerState(
        pipeline=pipeline,
        settings=settings,
        work_queue=WorkQueue(settings.workers, settings.max_queued_requests),
        transcripts=AudioTranscripts(settings.audio_ttl_s, settings.max_stored_transcripts),
        editx=editx,
    )
    registered = set(state.speaker_ids())
    for alias, target in settings.voice_aliases.items():
        if target not in registered:
            listed = ", ".join(sorted(registered)) or "no voices"
            detail = f"maps {alias!r} to {target!r}, which the speakers folder does not list ({listed})"
            raise InvalidArgumentError.about("voice_aliases", detail, dict(settings.voice_aliases))
    mount_realtime = _import_hook("stepaudio.realtime.asgi", "mount_realtime", "realtime") if realtime else None
    mount_ui = _import_hook("stepaudio.server.ui", "mount_ui", "ui") if ui else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.work_queue.close()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.stepaudio = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for module in (models, speech, chat, transcription, editx_routes):
        app.include_router(module.router)

    # ---- extension hook: realtime WebSocket routes, Gradio UI, then the caller's own additions ----
    if mount_realtime is not None:
        mount_realtime(app, pipeline, **dict(realtime_options or {}))
    if mount_ui is not None:
        options = dict(ui_options or {})
        if editx is not None:
            options.setdefault("editx", editx)
        mount_ui(app, pipeline, path=ui_path, **options)
    if extra is not None:
        extra(app)
    logger.info(
        "OpenAI-compatible API: models %s; %d worker(s), %d queued at most",
        ", ".join(state.served_models()),
        settings.workers,
        settings.max_queued_requests,
    )
    return app
