"""A small server speaking vLLM 0.33's OpenAI completions protocol, generating with stepaudio backends.

It follows what ``vllm serve`` accepts and answers (``vllm/entrypoints/openai/completion/protocol.py``
and ``serving.py`` of vLLM 0.33):

* ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "owned_by": "vllm",
  "max_model_len"}]}``;
* ``POST /v1/completions`` with ``prompt`` a list of token ids, ``max_tokens``, ``temperature`` (0:
  greedy), ``top_k`` (0: off), ``top_p``, ``seed``, ``stop_token_ids``, ``ignore_eos``,
  ``return_token_ids``, ``stream`` and ``vllm_xargs`` (values: strings, numbers or lists of them);
  the TTS rules come as ``vllm_xargs["stepaudio_tts"]``, a JSON string;
* streamed answers are server-sent events ``data: {CompletionStreamResponse}`` whose choice carries the
  chunk's ``token_ids`` (and ``prompt_token_ids`` in the first), the last one a ``finish_reason``, then
  ``data: [DONE]``; a failure during generation is an event ``data: {"error": {...}}`` then ``[DONE]``;
* refused requests are HTTP 400 ``{"error": {"message", "type", "param", "code"}}``, a failure before
  the first token HTTP 500 in the same shape; a wrong API key HTTP 401; an unknown model HTTP 404.

Each model is served by a :class:`~stepaudio.llm.backends.GenerationBackend` (the tests use
``TransformersBackend``), so answers can be compared with local generation id for id.  Every request is
recorded in ``app.state.requests`` (its body, the ids sent, whether the client went away).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stepaudio.llm.backends import GenerationBackend, SamplingSettings
from stepaudio.llm.backends.remote import TTS_RULES_ARG

_END = object()


class CompletionRequest(BaseModel):
    """The fields of vLLM's ``CompletionRequest`` this server uses (others are accepted and ignored, as vLLM does)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: list[Annotated[int, Field(ge=0)]] | str
    max_tokens: int | None = 16
    n: int = 1
    seed: int | None = None
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_token_ids: list[int] | None = []
    ignore_eos: bool = False
    return_token_ids: bool | None = None
    vllm_xargs: dict[str, str | int | float | list[str | int | float]] | None = None


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body generator when the client goes away (so the backend stops now, in the server's loop)."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def create_completions_app(
    backends: dict[str, GenerationBackend], eos_token_id: int | None = None, api_key: str | None = None
) -> FastAPI:
    """The app serving ``backends`` (served model name -> backend).

    ``eos_token_id`` stops generation unless the request says ``ignore_eos`` (as vLLM's engine adds the
    tokenizer's EOS); ``api_key`` makes ``Authorization: Bearer KEY`` required.
    """
    app = FastAPI()
    app.state.requests = []

    @app.exception_handler(RequestValidationError)
    async def refused(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(400, "; ".join(str(item.get("msg")) for item in error.errors()), "BadRequestError")

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Unauthorized", "Unauthorized")
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        cards = [
            {"id": name, "object": "model", "owned_by": "vllm", "max_model_len": backend.max_seq_len}
            for name, backend in backends.items()
        ]
        return {"object": "list", "data": cards}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        name = body.model if body.model is not None else next(iter(backends))
        if name not in backends:
            return _error(404, f"The model `{name}` does not exist.", "NotFoundError")
        backend = backends[name]
        if isinstance(body.prompt, str):
            return _error(400, "this test server takes token-id prompts only", "BadRequestError")
        limit = backend.max_seq_len
        if len(body.prompt) >= limit:
            return _error(
                400,
                f"This model's maximum context length is {limit} tokens. However, your request has "
                f"{len(body.prompt)} input tokens. Please reduce the length of the input messages.",
                "BadRequestError",
            )
        try:
            settings = _settings(body, limit, eos_token_id)
        except ValueError as error:
            return _error(400, str(error), "BadRequestError")
        if not body.stream:
            return _error(400, "this test server streams only (stream: true)", "BadRequestError")
        record: dict[str, Any] = {
            "body": body.model_dump(exclude_unset=True),
            "ids": [],
            "client_left": False,
            "done": False,
        }
        app.state.requests.append(record)
        cancel = threading.Event()
        ids = backend.stream_ids(body.prompt, settings, cancel)
        try:  # the first token before answering, so that an immediate failure is an HTTP error, as in vLLM
            first = await run_in_threadpool(next, ids, _END)
        except Exception as error:
            ids.close()
            return _error(500, f"{type(error).__name__}: {error}", "InternalServerError")
        request_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        stops = set(settings.stop_token_ids)

        def chunk(token_ids: list[int], finish: str | None, prompt: bool) -> str:
            choice: dict[str, Any] = {"index": 0, "text": "", "finish_reason": finish, "token_ids": token_ids}
            if finish == "stop" and token_ids:
                choice["stop_reason"] = token_ids[-1]
            if prompt:
                choice["prompt_token_ids"] = list(body.prompt)
            data = {"id": request_id, "object": "text_completion", "created": created, "model": name}
            return f"data: {json.dumps({**data, 'choices': [choice]})}\n\n"

        async def events():
            token = first
            try:
                while token is not _END:
                    record["ids"].append(token)
                    full = len(record["ids"]) >= settings.max_new_tokens
                    finish = "stop" if token in stops else "length" if full else None
                    yield chunk([token], finish, prompt=len(record["ids"]) == 1)
                    token = await run_in_threadpool(next, ids, _END)
                record["done"] = True
                yield "data: [DONE]\n\n"
            except Exception as error:  # mid-stream failure: an error event, as vLLM sends
                record["done"] = True
                message = json.dumps({"error": {"message": f"{type(error).__name__}: {error}", "code": 500}})
                yield f"data: {message}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not record["done"]:
                    record["client_left"] = True
                cancel.set()
                ids.close()  # stops the backend within a token (and waits for it)

        return _ClosingStreamingResponse(events(), media_type="text/event-stream")

    return app


def _settings(body: CompletionRequest, limit: int, eos_token_id: int | None) -> SamplingSettings:
    """The request's sampling settings, read as vLLM 0.33 reads them (``ValueError`` for a refused value)."""
    if body.n != 1:
        raise ValueError("n must be 1")
    temperature = 1.0 if body.temperature is None else body.temperature
    greedy = temperature < 1e-5
    top_k = 0 if body.top_k in (None, -1) else body.top_k
    if top_k < 0:
        raise ValueError(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
    stops = list(body.stop_token_ids or [])
    if not body.ignore_eos and eos_token_id is not None and eos_token_id not in stops:
        stops.append(eos_token_id)
    rules: dict[str, Any] = {}
    if body.vllm_xargs and TTS_RULES_ARG in body.vllm_xargs:
        raw = body.vllm_xargs[TTS_RULES_ARG]
        if not isinstance(raw, str):
            raise ValueError(f"vllm_xargs[{TTS_RULES_ARG!r}] must be a JSON string")
        rules = json.loads(raw)
    max_tokens = body.max_tokens if body.max_tokens is not None else 16
    return SamplingSettings(
        max_new_tokens=min(max_tokens, limit - len(body.prompt)),
        do_sample=not greedy,
        temperature=temperature if not greedy else 1.0,
        top_k=top_k if not greedy else 0,
        top_p=(1.0 if body.top_p is None else body.top_p) if not greedy else 1.0,
        stop_token_ids=tuple(stops),
        audio_tokens_only=bool(rules.get("audio_tokens_only", False)),
        repetition_window=rules.get("repetition_window"),
        repetition_max_ratio=float(rules.get("repetition_max_ratio", 0.1)),
        seed=body.seed,
    )
