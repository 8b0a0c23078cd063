"""The OpenAI-compatible HTTP API of stepaudio (FastAPI): speech, chat completions with audio, transcriptions,
and with Step-Audio-EditX (``create_app(..., editx=...)``) zero-shot cloning and audio edits.

``create_app(pipeline, ServerSettings(...))`` builds the app over a loaded :class:`~stepaudio.StepAudio`;
serve it with any ASGI server (``uvicorn.run(app)``).  See :mod:`stepaudio.server.app` for the routes
and the hooks where the real-time WebSocket routes and the Gradio UI are mounted.
"""

from __future__ import annotations

from .app import create_app
from .errors import APIError
from .instructions import instruction_tag
from .settings import DEFAULT_MODEL_ALIASES, OPENAI_VOICES, ServerSettings
from .work_queue import WorkQueue

__all__ = [
    "APIError",
    "DEFAULT_MODEL_ALIASES",
    "OPENAI_VOICES",
    "ServerSettings",
    "WorkQueue",
    "create_app",
    "instruction_tag",
]
