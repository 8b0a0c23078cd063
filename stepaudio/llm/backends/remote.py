"""A backend that generates on a remote OpenAI-compatible completions server (``vllm serve``).

The prompt is sent as token ids to ``POST {base}/v1/completions`` with ``stream: true`` and
``return_token_ids: true``; the server answers with server-sent events (``data: {json}`` lines, then
``data: [DONE]``) whose ``choices[0].token_ids`` carry the generated ids of each chunk (vLLM >= 0.10).
Only the token ids are used: the text the server detokenises is ignored, so the same prompts and the
same detokenisation as with a local model are used on this side.

Sampling maps onto the request as vLLM 0.33 reads it: greedy decoding is ``temperature: 0``;
``top_k: 0`` and ``top_p: 1`` switch those filters off; ``stop_token_ids`` with ``ignore_eos: true``
stop on exactly the ids asked for (the stop id is the last id returned); ``seed`` seeds the request's
sampler.  The TTS rules travel in ``vllm_xargs`` under :data:`TTS_RULES_ARG` as a JSON string
(``vllm_xargs`` values must be strings, numbers or lists of them), read on the server by the stepaudio
logits processor (``stepaudio.llm.backends.vllm_engine``).

Only the standard library is used (``urllib``), so no dependency is added.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from ...errors import InvalidArgumentError, RemoteBackendError
from ...validation import check_float, check_int, check_text, describe_value
from .base import GenerationBackend, SamplingSettings

logger = logging.getLogger(__name__)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_TIMEOUT",
    "TTS_RULES_ARG",
    "RemoteBackendError",
    "RemoteCompletionsBackend",
    "normalize_base_url",
]

#: Key of ``vllm_xargs`` (``SamplingParams.extra_args`` on the server) holding the TTS rules, a JSON string
#: ``{"audio_tokens_only": bool, "repetition_window": int, "repetition_max_ratio": float}`` (written by
#: :meth:`stepaudio.vllm.tts_rules.TTSRules.to_extra_args`; the same key as ``tts_rules.EXTRA_ARGS_KEY``).
TTS_RULES_ARG = "stepaudio_tts"
#: Environment variable the backend factory reads the server's API key from (``vllm serve --api-key``).
API_KEY_ENV = "STEPAUDIO_BACKEND_API_KEY"
#: Seconds to wait for the server to connect, to answer, and between two streamed chunks.
DEFAULT_TIMEOUT = 600.0
_START_HINT = "start it (e.g. `vllm serve MODEL_FOLDER --port 8000`, see the README) or fix the URL"
_MAX_SERVER_MESSAGE = 300


def normalize_base_url(value: object, name: str = "base_url") -> str:
    """``http(s)://host[:port][/prefix]`` ending in ``/v1`` (added when missing), without a trailing slash.

    Raises:
        InvalidArgumentError: not a string, not http/https, no host, a bad port, or a query/fragment.
    """
    requirement = "an http:// or https:// URL of an OpenAI-compatible server such as http://gpu-host:8000/v1"
    if not isinstance(value, str):
        raise InvalidArgumentError.about(name, f"must be {requirement}, got {describe_value(value)}", value)
    text = check_text(value, name).strip()
    parts = urllib.parse.urlsplit(text)
    problem = None
    if parts.scheme.lower() not in ("http", "https"):
        problem = "it does not start with http:// or https://"
    elif not parts.hostname:
        problem = "it has no host"
    elif parts.query or parts.fragment:
        problem = "it has a query or fragment (pass only the server's address)"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
        except ValueError:
            problem = "its port is not a number from 1 to 65535"
    if problem is not None:
        raise InvalidArgumentError.about(name, f"must be {requirement}, got {describe_value(value)}: {problem}", value)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_SERVER_MESSAGE else text[: _MAX_SERVER_MESSAGE - 3] + "..."


def _server_message(body: bytes) -> str:
    """The error text of a server's answer: vLLM's ``{"error": {"message"}}``, FastAPI's ``{"detail"}``, or the body."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text) or "no message"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _one_line(error["message"])
        if isinstance(error, str):
            return _one_line(error)
        if "detail" in data:
            return _one_line(json.dumps(data["detail"]) if not isinstance(data["detail"], str) else data["detail"])
        if "message" in data:
            return _one_line(data["message"])
    return _one_line(text)


class RemoteCompletionsBackend(GenerationBackend):
    """Generates on a vLLM OpenAI-compatible server through ``/v1/completions`` (token-id prompts, streamed).

    Args:
        base_url: the server's address, ``http://HOST:PORT`` or ``http://HOST:PORT/v1``.
        model: the served model's name (``vllm serve --served-model-name``); default: the one model the
            server lists in ``/v1/models`` (asked once, on first use).
        api_key: sent as ``Authorization: Bearer`` (the server's ``--api-key``), if given.
        timeout: seconds to wait for a connection, for the answer to start, and between two chunks.
        max_seq_len: the local folder's ``max_seq_len`` (config.json): :attr:`max_seq_len` is the
            smaller of it and the server's ``max_model_len`` (this value alone if the server does not
            report one).

    Nothing is sent until the first request or the first read of :attr:`max_seq_len`.  Every failure
    is a one-line :class:`RemoteBackendError` naming the URL and what to do.  Closing the iterator of
    :meth:`stream_ids` (or setting its ``cancel`` event, checked at every chunk) closes the connection,
    which makes vLLM abort the request.
    """

    name = "remote"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_seq_len: int | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.model = None if model is None else check_text(model, "model")
        self.api_key = None if api_key is None else check_text(api_key, "api_key")
        self.timeout = check_float(timeout, "timeout", minimum=0, exclusive_minimum=True, hint="seconds, e.g. 600")
        self._local_max_seq_len = None if max_seq_len is None else check_int(max_seq_len, "max_seq_len", minimum=2)
        self._lock = threading.Lock()
        self._served: tuple[str, int | None] | None = None

    def __repr__(self) -> str:
        return f"RemoteCompletionsBackend({self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------------------------------------ HTTP
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _open(self, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        """The open HTTP response of ``GET``/``POST {base_url}/{endpoint}`` (raises :class:`RemoteBackendError`)."""
        url = f"{self.base_url}/{endpoint}"
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - the scheme is checked
        except urllib.error.HTTPError as error:
            with error:
                message = _server_message(error.read())
            raise self._http_error(url, error.code, message) from None
        except TimeoutError:
            raise self._timeout_error(url) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise self._timeout_error(url) from None
            reason = (
                error.reason.strerror if isinstance(error.reason, OSError) and error.reason.strerror else error.reason
            )
            raise RemoteBackendError(
                f"cannot reach the generation server at {url} ({_one_line(str(reason))}); {_START_HINT}", url=url
            ) from None
        except OSError as error:  # connection reset while sending, and the like
            raise RemoteBackendError(
                f"cannot reach the generation server at {url} ({_one_line(str(error))}); {_START_HINT}", url=url
            ) from None

    def _timeout_error(self, url: str) -> RemoteBackendError:
        return RemoteBackendError(
            f"the generation server at {url} did not answer within {self.timeout:g} s; check that it is running "
            "and not overloaded, or pass a longer timeout",
            url=url,
        )

    @staticmethod
    def _http_error(url: str, status: int, message: str) -> RemoteBackendError:
        if status in (401, 403):
            fix = f"pass the server's API key (api_key=..., or the {API_KEY_ENV} environment variable)"
            what = "refused the request"
        elif status == 404:
            fix = (
                "check the URL (the server's address, e.g. http://HOST:8000/v1, of an OpenAI-compatible server "
                "such as `vllm serve`) and the model name"
            )
            what = "has no such endpoint or model"
        elif status < 500:
            fix = "check that it serves this Step-1 model with vLLM >= 0.10 (token-id prompts, return_token_ids)"
            what = "rejected the request"
        else:
            fix = "see the server's log"
            what = "failed"
        return RemoteBackendError(
            f"the generation server at {url} {what} (HTTP {status}: {message}); {fix}", url=url, status=status
        )

    # ------------------------------------------------------------------------------------------ model
    def served_model(self) -> tuple[str, int | None]:
        """``(model name, max_model_len or None)`` from ``/v1/models`` (asked once, then remembered)."""
        with self._lock:
            if self._served is None:
                self._served = self._ask_models()
            return self._served

    def _ask_models(self) -> tuple[str, int | None]:
        url = f"{self.base_url}/models"
        with self._open("models") as response:
            raw = response.read()
        try:
            cards = json.loads(raw)["data"]
            models = {str(card["id"]): card.get("max_model_len") for card in cards}
        except (ValueError, KeyError, TypeError):
            raise RemoteBackendError(
                f"the server at {url} did not answer with an OpenAI model list "
                f"({_one_line(raw.decode('utf-8', 'replace'))}); "
                "pass the address of an OpenAI-compatible server such as `vllm serve`",
                url=url,
            ) from None
        if self.model is not None:
            if self.model not in models:
                raise RemoteBackendError(
                    f"the server at {url} does not serve model {self.model!r} (it serves "
                    f"{', '.join(map(repr, models)) or 'no model'}); pass one of those names",
                    url=url,
                )
            name = self.model
        elif len(models) == 1:
            (name,) = models
        else:
            raise RemoteBackendError(
                f"the server at {url} serves {len(models)} models ({', '.join(map(repr, models)) or 'none'}); "
                "pass model=NAME to RemoteCompletionsBackend to pick one",
                url=url,
            )
        limit = models[name]
        return name, int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None

    @property
    def max_seq_len(self) -> int:
        """The server's ``max_model_len`` (capped by the local config's ``max_seq_len`` when given)."""
        _, served = self.served_model()
        limits = [limit for limit in (served, self._local_max_seq_len) if limit is not None]
        if not limits:
            url = f"{self.base_url}/models"
            raise RemoteBackendError(
                f"the server at {url} does not report max_model_len; pass max_seq_len= (the model's context length)",
                url=url,
            )
        return min(limits)

    # ------------------------------------------------------------------------------------------ generation
    def request_body(self, prompt_ids: Sequence[int], settings: SamplingSettings) -> dict[str, Any]:
        """The ``/v1/completions`` request of a prompt and its sampling settings (streamed, ids returned)."""
        model, _ = self.served_model()
        body: dict[str, Any] = {
            "model": model,
            "prompt": [int(token) for token in prompt_ids],
            "max_tokens": settings.max_new_tokens,
            "stream": True,
            "return_token_ids": True,
            "stop_token_ids": [int(token) for token in settings.stop_token_ids],
            "ignore_eos": True,  # stop on exactly stop_token_ids, as the local backends do
            "n": 1,
        }
        if settings.do_sample:
            body.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        else:
            body.update(temperature=0.0, top_k=0, top_p=1.0)
        if settings.seed is not None:
            body["seed"] = settings.seed
        from ...vllm.tts_rules import TTSRules  # the one canonical form, read by the server's logits processor

        rules = TTSRules.from_settings(settings).to_extra_args()
        if rules:
            body["vllm_xargs"] = rules
        return body

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Yield the generated ids as the server streams them; the request is sent on the first ``next``."""
        return self._stream(list(prompt_ids), settings, cancel)

    def _stream(
        self, prompt_ids: list[int], settings: SamplingSettings, cancel: threading.Event | None
    ) -> Iterator[int]:
        body = self.request_body(prompt_ids, settings)
        url = f"{self.base_url}/completions"
        response = self._open("completions", body)
        try:
            for data in self._events(response, url):
                if cancel is not None and cancel.is_set():
                    return
                if data == "[DONE]":
                    return
                yield from self._chunk_ids(data, url)
            raise RemoteBackendError(
                f"the generation server at {url} ended the stream without 'data: [DONE]' (it stopped mid-reply); "
                "see the server's log",
                url=url,
            )
        finally:
            response.close()  # on a normal end, an error, cancel or the consumer leaving: the server aborts

    def _events(self, response: Any, url: str) -> Iterator[str]:
        """The ``data`` of each server-sent event."""
        lines: list[str] = []
        while True:
            try:
                raw = response.readline()
            except TimeoutError:
                raise self._timeout_error(url) from None
            except OSError as error:
                raise RemoteBackendError(
                    f"the connection to the generation server at {url} broke mid-reply ({_one_line(str(error))}); "
                    "see the server's log",
                    url=url,
                ) from None
            if not raw:
                if lines:
                    yield "\n".join(lines)
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if lines:
                    yield "\n".join(lines)
                    lines = []
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))

    @staticmethod
    def _chunk_ids(data: str, url: str) -> list[int]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise RemoteBackendError(
                f"the generation server at {url} sent an event that is not JSON ({_one_line(data)}); it is not an "
                "OpenAI-compatible completions server",
                url=url,
            ) from None
        if isinstance(chunk, dict) and "error" in chunk:
            error = chunk["error"]
            message = _one_line(error.get("message", error) if isinstance(error, dict) else error)
            status = error.get("code") if isinstance(error, dict) and isinstance(error.get("code"), int) else None
            raise RemoteBackendError(
                f"the generation server at {url} failed mid-reply ({message}); see the server's log",
                url=url,
                status=status,
            )
        ids: list[int] = []
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices or []:
            token_ids = choice.get("token_ids")
            if token_ids is None:
                if choice.get("text"):
                    raise RemoteBackendError(
                        f"the generation server at {url} streams no token_ids; it must honour return_token_ids "
                        "(vLLM >= 0.10)",
                        url=url,
                    )
                continue
            ids.extend(int(token) for token in token_ids)
        return ids
