"""Generation backends: the transformers reference equals direct ``generate``; the factory, settings and CLI checks."""

from __future__ import annotations

import importlib.util
import threading

import pytest
import torch
from transformers import LogitsProcessorList

from stepaudio import StepAudioChat
from stepaudio.assembly import ModelSettings
from stepaudio.cli import build_parser, main
from stepaudio.errors import InvalidArgumentError
from stepaudio.llm import Step1ForCausalLM
from stepaudio.llm.backends import (
    RemoteCompletionsBackend,
    SamplingSettings,
    TransformersBackend,
    check_backend_spec,
    make_backend,
)
from stepaudio.llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES
from stepaudio.tts.sampling import RepetitionAwareLogitsProcessor
from stepaudio.tts.tts import AudioTokensOnlyLogitsProcessor

MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]
SPEC_REQUIREMENT = (
    "must be 'transformers', 'static', 'compiled', 'vllm', the http(s):// URL of a vLLM server "
    "(e.g. http://gpu-host:8000/v1) or a GenerationBackend"
)
URL_REQUIREMENT = "must be an http:// or https:// URL of an OpenAI-compatible server such as http://gpu-host:8000/v1"


@pytest.fixture(scope="module")
def chat(tiny_model_root) -> StepAudioChat:
    return StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu")


@pytest.fixture(scope="module")
def tts_lm(tiny_model_root) -> TransformersBackend:
    model = Step1ForCausalLM.from_pretrained(tiny_model_root / "Step-Audio-TTS-3B").eval()
    return TransformersBackend(model, pad_token_id=0, thread_name="test-tts-generate")


def _direct(model, prompt: list[int], **kwargs) -> list[int]:
    """What the callers did before backends: ``model.generate`` on a [1, L] prompt, new ids only."""
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    return output[0, len(prompt) :].tolist()


def _no_thread(name: str) -> bool:
    return not any(thread.name == name for thread in threading.enumerate())


# ----------------------------------------------------------------------------------------------- transformers
def test_default_backend_is_transformers_over_the_loaded_model(chat):
    assert isinstance(chat.backend, TransformersBackend) and chat.backend.name == "transformers"
    assert chat.model is chat.backend.model and isinstance(chat.model, Step1ForCausalLM)
    assert chat.max_seq_len == chat.backend.max_seq_len == chat.model.config.max_seq_len == 2048
    assert chat.backend.thread_name == "stepaudio-chat-generate"


def test_greedy_ids_equal_direct_generate(chat):
    prompt = chat.encode_messages(MESSAGES)
    settings = SamplingSettings(max_new_tokens=12, do_sample=False)
    expected = _direct(chat.model, prompt, max_new_tokens=12, do_sample=False, eos_token_id=EOT_ID, pad_token_id=0)
    assert len(expected) == 12
    assert chat.backend.generate_ids(prompt, settings) == expected
    assert list(chat.backend.stream_ids(prompt, settings)) == expected


def test_seeded_sampling_ids_equal_direct_generate(chat):
    prompt = chat.encode_messages(MESSAGES)
    sampling = {"temperature": 0.8, "top_k": 20, "top_p": 0.9}
    settings = SamplingSettings(max_new_tokens=16, **sampling)
    torch.manual_seed(3)
    expected = _direct(
        chat.model, prompt, max_new_tokens=16, do_sample=True, eos_token_id=EOT_ID, pad_token_id=0, **sampling
    )
    torch.manual_seed(3)
    assert chat.backend.generate_ids(prompt, settings) == expected
    torch.manual_seed(3)
    assert list(chat.backend.stream_ids(prompt, settings)) == expected  # the worker thread samples the same
    # A per-request seed gives the same ids and leaves the global random state as it was.
    torch.manual_seed(99)
    state = torch.get_rng_state()
    seeded = SamplingSettings(max_new_tokens=16, seed=3, **sampling)
    assert chat.backend.generate_ids(prompt, seeded) == expected
    assert list(chat.backend.stream_ids(prompt, seeded)) == expected
    assert torch.equal(torch.get_rng_state(), state)


def test_tts_rules_equal_the_logits_processors_of_before(tts_lm):
    prompt = [1, 4, 300, 301, 302, 3, 4, 65536 + 7, 66560 + 9]
    torch.manual_seed(1)
    processors = [AudioTokensOnlyLogitsProcessor(tts_lm.model.config.vocab_size), RepetitionAwareLogitsProcessor()]
    expected = _direct(
        tts_lm.model,
        prompt,
        max_new_tokens=40,
        do_sample=True,
        temperature=0.7,
        top_k=50,
        top_p=1.0,
        eos_token_id=EOT_ID,
        pad_token_id=0,
        logits_processor=LogitsProcessorList(processors),
    )
    settings = SamplingSettings(
        max_new_tokens=40, temperature=0.7, top_k=50, audio_tokens_only=True, repetition_window=10, seed=1
    )
    assert tts_lm.generate_ids(prompt, settings) == expected
    assert list(tts_lm.stream_ids(prompt, settings)) == expected
    assert all(
        token == EOT_ID or AUDIO_TOKEN_OFFSET <= token < AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES for token in expected
    )
    triples = zip(expected, expected[1:], expected[2:], strict=False)
    assert all(a != b or b != c for a, b, c in triples)  # never one id three times in a row


def test_sampling_settings_become_generate_kwargs_in_one_place(tts_lm):
    greedy = tts_lm.generate_kwargs(SamplingSettings(max_new_tokens=5, do_sample=False, temperature=0.3))
    assert greedy == {"max_new_tokens": 5, "do_sample": False, "eos_token_id": EOT_ID, "pad_token_id": 0}
    sampled = tts_lm.generate_kwargs(SamplingSettings(max_new_tokens=5, top_k=7, top_p=0.5, stop_token_ids=(3, 9)))
    assert sampled == {
        "max_new_tokens": 5,
        "do_sample": True,
        "eos_token_id": [3, 9],
        "pad_token_id": 0,
        "temperature": 1.0,
        "top_k": 7,
        "top_p": 0.5,
    }
    rules = tts_lm.generate_kwargs(SamplingSettings(max_new_tokens=5, audio_tokens_only=True, repetition_window=4))
    first, second = rules["logits_processor"]
    assert isinstance(first, AudioTokensOnlyLogitsProcessor) and (second.window, second.max_ratio) == (4, 0.1)


def test_cancel_stops_within_a_token_and_closing_joins_the_worker(chat):
    prompt = chat.encode_messages(MESSAGES)
    settings = SamplingSettings(max_new_tokens=500, do_sample=False, stop_token_ids=())
    cancel = threading.Event()
    received = []
    for token in chat.backend.stream_ids(prompt, settings, cancel):
        received.append(token)
        if len(received) == 3:
            cancel.set()
    assert 3 <= len(received) <= 5 and _no_thread("stepaudio-chat-generate")
    ids = chat.backend.stream_ids(prompt, settings)
    next(ids)
    ids.close()
    assert _no_thread("stepaudio-chat-generate")
    untouched = threading.Event()  # the caller's event is only read, never set by the backend
    assert len(list(chat.backend.stream_ids(prompt, SamplingSettings(max_new_tokens=2), untouched))) == 2
    assert not untouched.is_set()


def test_a_generation_error_is_raised_not_swallowed(chat):
    prompt = chat.encode_messages(MESSAGES)
    broken = SamplingSettings(max_new_tokens=4, top_k=-1)  # transformers refuses a negative top-k
    with pytest.raises(ValueError, match="top_k"):
        chat.backend.generate_ids(prompt, broken)
    with pytest.raises(ValueError, match="top_k"):
        list(chat.backend.stream_ids(prompt, broken))
    assert _no_thread("stepaudio-chat-generate")


def test_chat_and_tts_accept_a_ready_backend(chat, tiny_model_root):
    other = StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu", backend=chat.backend)
    assert other.backend is chat.backend and other.model is chat.model
    assert other(MESSAGES, max_new_tokens=6, do_sample=False) == chat(MESSAGES, max_new_tokens=6, do_sample=False)


# ----------------------------------------------------------------------------------------------- factory
def test_factory_checks_the_spec(chat, tiny_model_root):
    folder = tiny_model_root / "Step-Audio-Chat"
    with pytest.raises(InvalidArgumentError) as caught:
        make_backend("vlm", folder, role="chat", name="--chat-backend")
    assert str(caught.value) == f"--chat-backend {SPEC_REQUIREMENT}, got 'vlm'"
    with pytest.raises(InvalidArgumentError) as caught:
        make_backend("transformers", folder, role="asr")
    assert str(caught.value) == "role must be one of chat, tts, got 'asr'"
    with pytest.raises(InvalidArgumentError) as caught:
        make_backend("http://gpu:8000", folder, role="chat", device_map="auto")
    assert str(caught.value) == "device_map 'auto' only applies to the 'transformers' backend, not 'http://gpu:8000/v1'"
    assert make_backend(chat.backend, folder, role="chat") is chat.backend
    remote = make_backend(" https://Gpu-Host:8443/serving/ ", folder, role="chat")
    assert isinstance(remote, RemoteCompletionsBackend) and remote.base_url == "https://Gpu-Host:8443/serving/v1"
    assert check_backend_spec(None) == "transformers" and check_backend_spec(" Transformers ") == "transformers"
    assert check_backend_spec("http://h:1/v1/") == "http://h:1/v1"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (5, f"backend {SPEC_REQUIREMENT}, got 5"),
        ("", f"backend {SPEC_REQUIREMENT}, got ''"),
        ("ftp://host", f"backend {URL_REQUIREMENT}, got 'ftp://host': it does not start with http:// or https://"),
        ("http://", f"backend {URL_REQUIREMENT}, got 'http://': it has no host"),
        (
            "http://h:70000",
            f"backend {URL_REQUIREMENT}, got 'http://h:70000': its port is not a number from 1 to 65535",
        ),
        (
            "http://h:8000/v1?x=1",
            f"backend {URL_REQUIREMENT}, got 'http://h:8000/v1?x=1': it has a query or fragment (pass only the "
            "server's address)",
        ),
    ],
)
def test_a_bad_spec_is_refused_before_anything_loads(tmp_path, spec, message):
    # tmp_path holds no model: the spec is refused first.
    with pytest.raises(InvalidArgumentError) as caught:
        StepAudioChat(tmp_path, device="cpu", backend=spec)
    assert str(caught.value) == message and caught.value.name == "backend"


def test_vllm_needs_its_package():
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(InvalidArgumentError) as caught:
            check_backend_spec("vllm", "tts_backend")
        assert str(caught.value) == (
            "tts_backend 'vllm' needs the vllm package (pip install vllm, on a CUDA machine); or run `vllm serve` "
            "elsewhere and pass its URL"
        )
    else:
        assert check_backend_spec("VLLM", "tts_backend") == "vllm"


def test_device_map_is_refused_with_another_backend(tmp_path):
    with pytest.raises(InvalidArgumentError) as caught:
        StepAudioChat(tmp_path, device="cpu", device_map="auto", backend="http://gpu:8000")
    assert str(caught.value) == (
        "device_map only applies to the 'transformers' backend, got 'auto' with 'http://gpu:8000/v1'"
    )


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"chat_backend": "vlm"}, f"chat_backend {SPEC_REQUIREMENT}, got 'vlm'"),
        ({"tts_backend": 3}, f"tts_backend {SPEC_REQUIREMENT}, got 3"),
        (
            {"tts_backend": "ws://x"},
            f"tts_backend {URL_REQUIREMENT}, got 'ws://x': it does not start with http:// or https://",
        ),
        (
            {"tensor_parallel_size": 2},
            "tensor_parallel_size only applies to an in-process vLLM engine, got 2 with chat_backend='transformers' "
            "and tts_backend='transformers'; pass chat_backend='vllm' or tts_backend='vllm', or drop it (a vllm serve "
            "server takes it on its own command line)",
        ),
        (
            {"gpu_memory_utilization": 0.5, "chat_backend": "http://h:8000"},
            "gpu_memory_utilization only applies to an in-process vLLM engine, got 0.5 with "
            "chat_backend='http://h:8000/v1' and tts_backend='transformers'; pass chat_backend='vllm' or "
            "tts_backend='vllm', or drop it (a vllm serve server takes it on its own command line)",
        ),
        ({"pipeline_parallel_size": 0}, "pipeline_parallel_size must be a positive whole number, got 0; None means 1"),
        (
            {"gpu_memory_utilization": 1.5},
            "gpu_memory_utilization must be a number above 0 and at most 1, got 1.5; the share of each GPU a vLLM "
            "engine reserves, e.g. 0.9",
        ),
        (
            {"llm_device_map": "auto", "chat_backend": "http://h:8000"},
            "llm_device_map only applies to chat_backend='transformers', got 'auto' with "
            "chat_backend='http://h:8000/v1'; drop llm_device_map (a vLLM engine uses tensor_parallel_size)",
        ),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_backend_settings_are_checked_when_made(settings, message):
    with pytest.raises(InvalidArgumentError) as caught:
        ModelSettings(**settings)
    assert str(caught.value) == message
    assert caught.value.name in settings


def test_backend_settings_are_normalised():
    settings = ModelSettings(chat_backend="http://gpu:8000/", tts_backend=" Transformers")
    assert (settings.chat_backend, settings.tts_backend) == ("http://gpu:8000/v1", "transformers")
    assert ModelSettings() == ModelSettings(chat_backend="transformers", tts_backend=None)


# ----------------------------------------------------------------------------------------------- command line
def test_commands_turn_backend_options_into_settings():
    from stepaudio import pipeline_cli
    from stepaudio.realtime import cli as realtime_cli
    from stepaudio.tts import cli as tts_cli

    args = build_parser().parse_args(
        [
            "chat",
            "--model-path",
            "R",
            "--text",
            "hi",
            "--chat-backend",
            "http://gpu:8000",
            "--tts-backend",
            "transformers",
        ]
    )
    expected = ModelSettings(chat_backend="http://gpu:8000/v1", allow_unknown_tags=True)
    assert pipeline_cli.model_settings(args) == expected
    args = build_parser().parse_args(["tts", "--model-path", "R", "--output-path", "o", "--tts-backend", "https://t:1"])
    assert tts_cli.model_settings(args) == ModelSettings(tts_backend="https://t:1/v1", allow_unknown_tags=False)
    assert not hasattr(args, "chat_backend")  # the tts command has no chat model
    args = build_parser().parse_args(["serve", "--model-path", "R", "--tts-backend", "http://t:2/v1"])
    assert realtime_cli.model_settings(args) == ModelSettings(tts_backend="http://t:2/v1", allow_unknown_tags=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--chat-backend", "vlm"], f"--chat-backend {SPEC_REQUIREMENT}, got 'vlm'"),
        (
            ["--tts-backend", "gpu-host:8000"],
            f"--tts-backend {SPEC_REQUIREMENT}, got 'gpu-host:8000'",
        ),
        (
            ["--tensor-parallel-size", "2"],
            "--tensor-parallel-size only applies to an in-process vLLM engine, got 2 with "
            "--chat-backend='transformers' and --tts-backend='transformers'; pass --chat-backend='vllm' or "
            "--tts-backend='vllm', or drop it (a vllm serve server takes it on its own command line)",
        ),
    ],
)
def test_bad_backend_options_are_one_line_usage_errors(tiny_model_root, tmp_path, capsys, options, message):
    argv = ["chat", "--model-path", str(tiny_model_root), "--text", "hi", "--device", "cpu", *options]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"stepaudio chat: error: {message}\n"


# ------------------------------------------------------------------------------------ static / compiled, quantized
def test_static_and_compiled_specs_build_the_static_cache_backend(chat, tiny_model_root):
    from stepaudio.llm.backends import StaticCacheBackend

    folder = tiny_model_root / "Step-Audio-Chat"
    static = make_backend("static", folder, role="chat", device=torch.device("cpu"))
    compiled = make_backend("compiled", folder, role="chat", device=torch.device("cpu"))
    assert isinstance(static, StaticCacheBackend) and isinstance(compiled, StaticCacheBackend)
    prompt = chat.encode_messages(MESSAGES)
    greedy = SamplingSettings(max_new_tokens=12, do_sample=False)
    assert static.generate_ids(prompt, greedy) == chat.backend.generate_ids(prompt, greedy)


def test_chat_with_the_static_backend_answers_like_transformers(chat, tiny_model_root):
    static_chat = StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu", backend="static")
    assert static_chat.model is not None  # the local model the static cache runs
    reply = static_chat(MESSAGES, max_new_tokens=12, do_sample=False)
    assert reply == chat(MESSAGES, max_new_tokens=12, do_sample=False)
    assert "".join(static_chat.stream(MESSAGES, max_new_tokens=12, do_sample=False)) == reply


def test_chat_loads_quantized_through_its_backend(tiny_model_root):
    import bitsandbytes as bnb

    quantized = StepAudioChat(tiny_model_root / "Step-Audio-Chat", device="cpu", quantization="int8")
    layers = [module for module in quantized.model.modules() if isinstance(module, bnb.nn.Linear8bitLt)]
    assert len(layers) == 7 * quantized.model.config.num_hidden_layers
    assert isinstance(quantized(MESSAGES, max_new_tokens=4, do_sample=False), str)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"chat_quantization": "int3"},
            "chat_quantization must be one of int8, int4, got 'int3'; or None to load the unquantized weights",
        ),
        (
            {"tts_quantization": "int4", "tts_backend": "http://gpu:8000"},
            "tts_quantization does not apply to a remote server (http://gpu:8000/v1), got 'int4'; that model is "
            "loaded elsewhere (for a server: e.g. `vllm serve ... --quantization fp8`)",
        ),
        (
            {"chat_quantization": "", "chat_backend": "vllm"},
            "chat_quantization must be vLLM's name of a quantization method (e.g. 'fp8'), got ''",
        ),
    ],
)
def test_quantization_settings_are_checked_when_made(settings, message):
    if settings.get("chat_backend") == "vllm" and importlib.util.find_spec("vllm") is None:
        settings = {**settings, "chat_backend": "transformers"}
        message = "chat_quantization must be one of int8, int4, got ''; or None to load the unquantized weights"
    with pytest.raises(InvalidArgumentError) as caught:
        ModelSettings(**settings)
    assert str(caught.value) == message


def test_quantization_options_reach_the_settings_and_speak_in_options(tiny_model_root, capsys):
    from stepaudio import pipeline_cli

    args = build_parser().parse_args(
        ["chat", "--model-path", "R", "--text", "hi", "--chat-quantization", "int4", "--tts-quantization", "int8"]
    )
    settings = pipeline_cli.model_settings(args)
    assert (settings.chat_quantization, settings.tts_quantization) == ("int4", "int8")
    argv = ["chat", "--model-path", str(tiny_model_root), "--text", "hi", "--device", "cpu"]
    assert main([*argv, "--chat-quantization", "int2"]) == 2
    assert capsys.readouterr().err == (
        "stepaudio chat: error: --chat-quantization must be one of int8, int4, got 'int2'; or None to load the "
        "unquantized weights\n"
    )
