"""``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/audio/voices``, ``GET /health`` and model name checks."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from .errors import APIError
from .settings import ServerSettings
from .state import ServerState, State

__all__ = ["EDITX_HINT", "editx_not_loaded", "resolve_model", "router"]

router = APIRouter()

Role = Literal["chat", "speech", "transcription", "edit"]
_ROLE_WORDS = {
    "chat": "chat completions",
    "speech": "speech (/v1/audio/speech)",
    "transcription": "transcriptions",
    "edit": "audio edits (/v1/audio/edits)",
}
#: How to serve Step-Audio-EditX, for the messages that refuse its requests when it is not loaded.
EDITX_HINT = "start the server with `stepaudio serve --editx` (or pass editx=load_editx(...) to create_app)"


def editx_not_loaded(settings: ServerSettings, what: str) -> APIError:
    """404 ``model_not_loaded``: ``what`` needs Step-Audio-EditX, which this server has not loaded."""
    return APIError(
        404,
        f"{what} needs Step-Audio-EditX ({settings.editx_model!r}), which this server has not loaded; {EDITX_HINT}",
        param="model",
        code="model_not_loaded",
    )


def _quoted(names: list[str]) -> str:
    return " or ".join(repr(name) for name in names)


def resolve_model(settings: ServerSettings, requested: object, role: Role, *, editx_loaded: bool = False) -> str:
    """The served model id for ``requested`` (aliases followed), checked to serve ``role``.

    Speech is served by the TTS and, when ``editx_loaded``, by EditX (which clones from ``ref_audio``);
    edits by EditX only; chat and transcriptions by the chat model.

    Raises:
        APIError: 400 when ``model`` is missing or not a string, or names a model that does not serve
            ``role``; 404 for an unknown model (``model_not_found``) or for EditX when it is not loaded
            (``model_not_loaded``, naming ``--editx``).
    """
    if not isinstance(requested, str) or not requested.strip():
        raise APIError(400, "model must be a model id (see GET /v1/models)", param="model", code="invalid_value")
    served = settings.model_aliases.get(requested, requested)
    if role == "speech":
        wanted = [settings.tts_model] + ([settings.editx_model] if editx_loaded else [])
    elif role == "edit":
        wanted = [settings.editx_model]
    else:
        wanted = [settings.chat_model]
    if served == settings.editx_model and not editx_loaded:
        raise editx_not_loaded(settings, f"the model {requested!r}")
    if served not in (settings.chat_model, settings.tts_model, settings.editx_model):
        raise APIError(
            404,
            f"the model {requested!r} does not exist on this server; use {_quoted(wanted)} for {_ROLE_WORDS[role]} "
            "(GET /v1/models lists the models)",
            param="model",
            code="model_not_found",
        )
    if served not in wanted:
        raise APIError(
            400,
            f"the model {requested!r} does not do {_ROLE_WORDS[role]}; use {_quoted(wanted)}",
            param="model",
            code="model_not_supported",
        )
    return served


def _model_card(settings: ServerSettings, model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "stepfun-ai"}


@router.get("/v1/models")
async def list_models(state: State) -> dict[str, Any]:
    settings = state.settings
    cards = [_model_card(settings, name, state.created) for name in state.served_models()]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: State) -> dict[str, Any]:
    settings = state.settings
    if model_id == settings.editx_model and state.editx is None:
        raise editx_not_loaded(settings, f"the model {model_id!r}")
    if model_id not in state.served_models():
        raise APIError(
            404, f"the model {model_id!r} does not exist on this server", param="model", code="model_not_found"
        )
    return _model_card(settings, model_id, state.created)


@router.get("/v1/audio/voices")
async def list_voices(state: State) -> dict[str, Any]:
    """The registered voices (``data``: id, RAP / humming styles; aliases) and their ids (``voices``)."""
    voices = state.voices()
    return {"object": "list", "data": voices, "voices": [voice["id"] for voice in voices]}


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """``{"status": "ok", "models": [...], "queue": {...}}`` (no API key needed)."""
    state: ServerState = request.app.state.stepaudio
    return {
        "status": "ok",
        "models": state.served_models(),
        "queue": state.work_queue.stats(),
    }
