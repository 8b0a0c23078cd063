"""The remote backend against a live vLLM-protocol completions server (tests/completions_server.py).

The server generates with the same ``TransformersBackend`` as the local models, so a remote chat or
TTS must give exactly the local ids (greedy, or sampled with the same per-request seed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import torch
from completions_server import create_completions_app
from server_helpers import free_port, live_server

from stepaudio import StepAudioChat
from stepaudio.cli import main
from stepaudio.llm.backends import GenerationBackend, RemoteBackendError, RemoteCompletionsBackend, SamplingSettings
from stepaudio.llm.backends.remote import TTS_RULES_ARG
from stepaudio.llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID
from stepaudio.tokenizer import StepAudioTokenizer
from stepaudio.tts.tts import StepAudioTTS
from stepaudio.vllm.tts_rules import EXTRA_ARGS_KEY

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello, how are you?"}]
START_HINT = "start it (e.g. `vllm serve MODEL_FOLDER --port 8000`, see the README) or fix the URL"


class _FailingBackend(GenerationBackend):
    """A backend of the contract that yields ``good`` ids, then fails (a model error on the server)."""

    name = "failing"

    def __init__(self, good: int) -> None:
        self.good = good

    @property
    def max_seq_len(self) -> int:
        return 2048

    def stream_ids(
        self, prompt_ids: Sequence[int], settings: SamplingSettings, cancel: threading.Event | None = None
    ) -> Iterator[int]:
        yield from range(100, 100 + self.good)
        raise RuntimeError("CUDA out of memory (simulated)")


class _EndlessAudioBackend(GenerationBackend):
    """A backend of the contract whose TTS turn never ends: audio ids, one per 5 ms, until closed or at the budget."""

    name = "endless"

    def __init__(self) -> None:
        self.closed = threading.Event()

    @property
    def max_seq_len(self) -> int:
        return 8192

    def stream_ids(
        self, prompt_ids: Sequence[int], settings: SamplingSettings, cancel: threading.Event | None = None
    ) -> Iterator[int]:
        try:
            for step in range(settings.max_new_tokens):
                if cancel is not None and cancel.is_set():
                    return
                time.sleep(0.005)
                yield AUDIO_TOKEN_OFFSET + 1024 + step % 4096
        finally:
            self.closed.set()


def _records(app) -> list[dict]:
    return app.state.requests


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def local_chat(tiny_model_root) -> StepAudioChat:
    return StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu")


@pytest.fixture(scope="module")
def chat_server(local_chat):
    app = create_completions_app({"step-audio-chat": local_chat.backend}, eos_token_id=EOT_ID)
    with live_server(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def remote_chat(tiny_model_root, chat_server) -> StepAudioChat:
    return StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu", backend=chat_server[1])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_root) -> StepAudioTokenizer:
    return StepAudioTokenizer(tiny_model_root / "Step-Audio-Tokenizer", device="cpu")


def _tts(root, tokenizer, cache, backend=None) -> StepAudioTTS:
    return StepAudioTTS(
        root / "Step-Audio-TTS-3B",
        tokenizer,
        speakers_dir=root / "speakers",
        device="cpu",
        cache_dir=cache,
        max_speech_seconds=1.0,  # random LM weights rarely end a turn: keep each segment short
        backend=backend,
    )


@pytest.fixture(scope="module")
def tts_pair(tiny_model_root, tokenizer, tmp_path_factory):
    """(local TTS, remote TTS on a server generating with the local TTS's backend, the server app)."""
    cache = tmp_path_factory.mktemp("voice-cache")
    local = _tts(tiny_model_root, tokenizer, cache)
    app = create_completions_app({"step-audio-tts": local.backend}, eos_token_id=EOT_ID)
    with live_server(app) as url:
        yield local, _tts(tiny_model_root, tokenizer, cache, backend=url), app


# ----------------------------------------------------------------------------------------------- chat
def test_remote_chat_loads_no_weights_and_takes_the_servers_context(remote_chat, chat_server):
    assert remote_chat.model is None and isinstance(remote_chat.backend, RemoteCompletionsBackend)
    assert remote_chat.backend.base_url == chat_server[1] + "/v1"
    assert remote_chat.backend.served_model() == ("step-audio-chat", 2048) and remote_chat.max_seq_len == 2048


def test_remote_chat_replies_as_the_local_model(local_chat, remote_chat, chat_server):
    app, _ = chat_server
    expected = local_chat(MESSAGES, max_new_tokens=10, do_sample=False)
    assert expected and remote_chat(MESSAGES, max_new_tokens=10, do_sample=False) == expected
    body = _records(app)[-1]["body"]
    assert body["prompt"] == local_chat.encode_messages(MESSAGES)
    assert (body["stream"], body["return_token_ids"], body["ignore_eos"]) == (True, True, True)
    assert (body["max_tokens"], body["temperature"], body["top_k"], body["top_p"]) == (10, 0.0, 0, 1.0)
    assert body["stop_token_ids"] == [EOT_ID] and body["model"] == "step-audio-chat" and "vllm_xargs" not in body
    pieces = list(remote_chat.stream(MESSAGES, max_new_tokens=10, do_sample=False))
    assert len(pieces) > 1 and "".join(pieces) == expected


def test_remote_chat_stops_at_the_end_of_turn_the_server_sends(local_chat, remote_chat):
    # Sampling: the server process is this process, so the global seed reaches it; the reply must be
    # the local one, including where <|EOT|> ends it.
    for seed in range(3):
        torch.manual_seed(seed)
        expected = local_chat(MESSAGES, max_new_tokens=30, temperature=1.5, top_k=0, top_p=1.0)
        torch.manual_seed(seed)
        assert remote_chat(MESSAGES, max_new_tokens=30, temperature=1.5, top_k=0, top_p=1.0) == expected


def test_command_line_chat_with_a_remote_backend(tiny_model_root, local_chat, chat_server, capsys):
    expected = local_chat([{"role": "user", "content": "hi"}], max_new_tokens=4, do_sample=False)
    argv = ["chat", "--model-path", str(tiny_model_root), "--text", "hi", "--max-new-tokens", "4", "--greedy"]
    assert main([*argv, "--device", "cpu", "--chat-backend", chat_server[1]]) == 0
    assert f"assistant: {expected}\n" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- TTS
@pytest.mark.slow  # the voice prompt of the first TTS request is computed here
def test_remote_tts_samples_the_local_codes_for_the_same_seed(tts_pair):
    local, remote, app = tts_pair
    assert remote.model is None and remote.max_length == local.max_length
    text = "今天天气真好。"
    (segment,) = local._segments(text, "Tingting", None)
    expected = local.generate_audio_codes(segment.prompt_ids, text, seed=11)
    assert expected and all(0 <= code < 5120 for code in expected)
    assert remote.generate_audio_codes(segment.prompt_ids, text, seed=11) == expected
    torch.manual_seed(11)  # the seed path is the global-seed path of before
    assert local.generate_audio_codes(segment.prompt_ids, text) == expected
    body = _records(app)[-1]["body"]
    rules = '{"audio_tokens_only":true,"repetition_window":10,"repetition_max_ratio":0.1}'
    assert (
        body["vllm_xargs"] == {EXTRA_ARGS_KEY: rules} and TTS_RULES_ARG == EXTRA_ARGS_KEY
    )  # what vLLM's processor reads
    assert (body["seed"], body["temperature"], body["top_k"], body["top_p"]) == (11, 0.7, 50, 1.0)


def test_remote_tts_streams_speech_and_stops_the_server_when_left(tts_pair):
    _, remote, app = tts_pair
    torch.manual_seed(0)
    chunks = list(remote.stream("流式合成。", "Tingting"))
    assert chunks and all(torch.isfinite(chunk).all() for chunk in chunks) and sum(c.shape[1] for c in chunks) > 0
    assert _records(app)[-1]["done"]
    # A server whose LM never ends a turn: leaving the stream must end the request there.
    endless = _EndlessAudioBackend()
    endless_app = create_completions_app({"endless": endless})
    with live_server(endless_app) as url:
        real, remote.backend = remote.backend, RemoteCompletionsBackend(url)
        remote.max_speech_seconds = None  # a budget of ~750 tokens, ~4 s at the server's pace
        try:
            stream = remote.stream("一段很长的文字。", "Tingting")
            assert next(stream).numel() > 0
            stream.close()
        finally:
            remote.backend, remote.max_speech_seconds = real, 1.0
        assert _wait_for(lambda: _records(endless_app)[-1]["client_left"]), "the server did not see the client leave"
        assert _wait_for(endless.closed.is_set), "the server's generation was not stopped"
        record = _records(endless_app)[-1]
        assert len(record["ids"]) < record["body"]["max_tokens"]


# ----------------------------------------------------------------------------------------------- cancellation
def test_cancel_and_close_end_the_request_on_the_server(local_chat, chat_server):
    app, url = chat_server
    backend = RemoteCompletionsBackend(url)
    prompt = local_chat.encode_messages(MESSAGES)
    endless = SamplingSettings(max_new_tokens=1000, do_sample=False, stop_token_ids=())
    cancel = threading.Event()
    received = []
    for token in backend.stream_ids(prompt, endless, cancel):
        received.append(token)
        if len(received) == 2:
            cancel.set()
    assert len(received) == 2
    assert _wait_for(lambda: _records(app)[-1]["client_left"]), "cancel did not close the connection"
    ids = backend.stream_ids(prompt, endless)
    next(ids)
    ids.close()
    assert _wait_for(lambda: _records(app)[-1]["client_left"]), "closing did not close the connection"
    assert len(_records(app)[-1]["ids"]) < 1000
    assert _wait_for(lambda: not any(t.name == "stepaudio-chat-generate" for t in threading.enumerate()))


# ----------------------------------------------------------------------------------------------- errors
def test_an_unreachable_server_is_one_line_at_load_time(tiny_model_root):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteBackendError) as caught:
        StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu", backend=url)
    assert (
        str(caught.value) == f"cannot reach the generation server at {url}/v1/models (Connection refused); {START_HINT}"
    )
    assert caught.value.url == f"{url}/v1/models" and caught.value.status is None


def test_server_errors_are_one_line(local_chat, chat_server):
    _, url = chat_server
    backend = RemoteCompletionsBackend(url)
    endpoint = f"{url}/v1/completions"
    with pytest.raises(RemoteBackendError) as caught:
        backend.generate_ids(list(range(5, 2100)), SamplingSettings(max_new_tokens=4))
    assert str(caught.value) == (
        f"the generation server at {endpoint} rejected the request (HTTP 400: This model's maximum context length is "
        "2048 tokens. However, your request has 2095 input tokens. Please reduce the length of the input messages.); "
        "check that it serves this Step-1 model with vLLM >= 0.10 (token-id prompts, return_token_ids)"
    )
    assert caught.value.status == 400
    with pytest.raises(RemoteBackendError) as caught:
        RemoteCompletionsBackend(url, model="step-audio-tts").max_seq_len  # noqa: B018 - asks the server
    assert str(caught.value) == (
        f"the server at {url}/v1/models does not serve model 'step-audio-tts' (it serves 'step-audio-chat'); "
        "pass one of those names"
    )


def test_model_failures_are_one_line():
    app = create_completions_app({"at-once": _FailingBackend(0), "mid-reply": _FailingBackend(3)})
    with live_server(app) as url:
        endpoint = f"{url}/v1/completions"
        settings = SamplingSettings(max_new_tokens=8)
        with pytest.raises(RemoteBackendError) as caught:
            RemoteCompletionsBackend(url, model="at-once").generate_ids([1, 2, 3], settings)
        assert str(caught.value) == (
            f"the generation server at {endpoint} failed (HTTP 500: RuntimeError: CUDA out of memory (simulated)); "
            "see the server's log"
        )
        assert caught.value.status == 500
        received = []
        with pytest.raises(RemoteBackendError) as caught:
            for token in RemoteCompletionsBackend(url, model="mid-reply").stream_ids([1, 2, 3], settings):
                received.append(token)
        assert received == [100, 101, 102]
        assert str(caught.value) == (
            f"the generation server at {endpoint} failed mid-reply (RuntimeError: CUDA out of memory (simulated)); "
            "see the server's log"
        )
        with pytest.raises(RemoteBackendError) as caught:
            RemoteCompletionsBackend(url).max_seq_len  # noqa: B018 - asks the server
        assert str(caught.value) == (
            f"the server at {url}/v1/models serves 2 models ('at-once', 'mid-reply'); pass model=NAME to "
            "RemoteCompletionsBackend to pick one"
        )


def test_a_wrong_api_key_is_one_line(local_chat):
    app = create_completions_app({"chat": local_chat.backend}, api_key="secret")
    with live_server(app) as url:
        assert RemoteCompletionsBackend(url, api_key="secret").max_seq_len == 2048
        with pytest.raises(RemoteBackendError) as caught:
            RemoteCompletionsBackend(url, api_key="wrong").max_seq_len  # noqa: B018 - asks the server
        assert str(caught.value) == (
            f"the generation server at {url}/v1/models refused the request (HTTP 401: Unauthorized); pass the "
            "server's API key (api_key=..., or the STEPAUDIO_BACKEND_API_KEY environment variable)"
        )
        assert caught.value.status == 401
