"""``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/audio/voices``, ``GET /health`` and model name checks."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from .errors import APIError
from .settings import ServerSettings
from .state import ServerState, State

__all__ = ["resolve_model", "router"]

router = APIRouter()

Role = Literal["chat", "speech", "transcription"]
_ROLE_WORDS = {"chat": "chat completions", "speech": "speech (/v1/audio/speech)", "transcription": "transcriptions"}


def resolve_model(settings: ServerSettings, requested: object, role: Role) -> str:
    """The served model id for ``requested`` (aliases followed), checked to serve ``role``.

    Raises:
        APIError: 400 when ``model`` is missing or not a string, or names the other model; 404 for an
            unknown model (``model_not_found``).
    """
    if not isinstance(requested, str) or not requested.strip():
        raise APIError(400, "model must be a model id (see GET /v1/models)", param="model", code="invalid_value")
    served = settings.model_aliases.get(requested, requested)
    wanted = settings.tts_model if role == "speech" else settings.chat_model
    if served not in (settings.chat_model, settings.tts_model):
        raise APIError(
            404,
            f"the model {requested!r} does not exist on this server; use {wanted!r} for {_ROLE_WORDS[role]} "
            "(GET /v1/models lists the models)",
            param="model",
            code="model_not_found",
        )
    if served != wanted:
        raise APIError(
            400,
            f"the model {requested!r} does not do {_ROLE_WORDS[role]}; use {wanted!r}",
            param="model",
            code="model_not_supported",
        )
    return served


def _model_card(settings: ServerSettings, model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "stepfun-ai"}


@router.get("/v1/models")
async def list_models(state: State) -> dict[str, Any]:
    settings = state.settings
    cards = [_model_card(settings, name, state.created) for name in (settings.chat_model, settings.tts_model)]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: State) -> dict[str, Any]:
    settings = state.settings
    if model_id not in (settings.chat_model, settings.tts_model):
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
        "models": [state.settings.chat_model, state.settings.tts_model],
        "queue": state.work_queue.stats(),
    }
