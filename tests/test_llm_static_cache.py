"""The static-KV-cache backend: fixed-shape decode steps equal the growing-cache path, same ids as generate."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers.cache_utils import DynamicCache

from stepaudio.errors import InvalidArgumentError
from stepaudio.llm import Step1ForCausalLM
from stepaudio.llm.backends.base import TTS_REPETITION_WINDOW, SamplingSettings
from stepaudio.llm.backends.static_cache import StaticCacheBackend, default_windows
from stepaudio.llm.backends.transformers import TransformersBackend
from stepaudio.llm.static_cache import StaticKVCache
from stepaudio.llm.text_tokenizer import AUDIO_TOKEN_OFFSET, EOT_ID, NUM_AUDIO_CODES

TTS = {"audio_tokens_only": True, "repetition_window": TTS_REPETITION_WINDOW}


def _load(root) -> Step1ForCausalLM:
    return Step1ForCausalLM.from_pretrained(root / "Step-Audio-TTS-3B", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tts_lm(tiny_model_root) -> Step1ForCausalLM:
    """The tiny Step-Audio-TTS-3B language model in float32 (shared: not modified by the tests)."""
    return _load(tiny_model_root)


def _prompt(length: int, seed: int = 0) -> list[int]:
    return torch.randint(5, 70000, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_default_windows_double_up_to_max_len():
    assert default_windows(8192) == (256, 512, 1024, 2048, 4096, 8192)
    assert default_windows(32768) == (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    assert default_windows(1000) == (500, 1000)
    assert default_windows(100) == (100,)


def test_fixed_shape_bias_equals_the_decode_row(tts_lm):
    alibi = tts_lm.model.alibi
    for dtype in (torch.float32, torch.bfloat16):
        for position in (0, 7, 63):
            fixed = alibi.bias_at(torch.tensor([position]), 64, dtype=dtype)
            row = alibi.bias(position, position + 1, position + 1, device="cpu", dtype=dtype)
            assert fixed.shape == (1, tts_lm.config.num_attention_heads, 1, 64)
            assert torch.equal(fixed[..., : position + 1], row)
            assert bool((fixed[..., position + 1 :] == torch.finfo(dtype).min).all())


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
def test_static_cache_logits_equal_the_dynamic_cache_at_every_step(tts_lm, backend):
    ids = torch.tensor([_prompt(70, seed=1)])
    tts_lm.set_attention_backend(backend)
    try:
        with torch.inference_mode():
            dynamic = DynamicCache(config=tts_lm.config)
            expected = [tts_lm(ids[:, :20], past_key_values=dynamic, use_cache=True).logits[:, -1]]
            for position in range(20, 70):
                step = tts_lm(ids[:, position : position + 1], past_key_values=dynamic, use_cache=True)
                expected.append(step.logits[:, -1])

            cache = StaticKVCache(tts_lm.config, 96, device=torch.device("cpu"), dtype=torch.float32)
            got = [tts_lm(ids[:, :20], past_key_values=cache).logits[:, -1]]
            cache.advance(20)
            for position in range(20, 70):
                cache.window = 32 if position < 32 else 96  # crosses from one fixed shape to the next
                got.append(tts_lm(ids[:, position : position + 1], past_key_values=cache).logits[:, -1])
                cache.window = None
                cache.advance(1)
    finally:
        tts_lm.set_attention_backend("sdpa")
    assert cache.length == 70 and cache.position.tolist() == [70]
    for step, (ours, reference) in enumerate(zip(got, expected, strict=True)):
        assert (ours - reference).abs().max().item() < 1e-5, step


def test_greedy_ids_equal_generate(tts_lm):
    prompt = _prompt(40, seed=2)
    settings = SamplingSettings(max_new_tokens=60, do_sample=False, stop_token_ids=(EOT_ID,))
    reference = TransformersBackend(tts_lm).generate_ids(prompt, settings)
    with torch.inference_mode():
        generated = tts_lm.generate(
            torch.tensor([prompt]), max_new_tokens=60, do_sample=False, eos_token_id=EOT_ID, pad_token_id=EOT_ID
        )
    assert generated[0, 40:].tolist() == reference
    backend = StaticCacheBackend(tts_lm, max_len=128, windows=[48, 64])
    assert backend.generate_ids(prompt, settings) == reference
    assert list(backend.stream_ids(prompt, settings)) == reference  # the cache is reused from the start


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(max_new_tokens=30, temperature=0.7, top_k=50, seed=11),
        SamplingSettings(max_new_tokens=30, temperature=0.8, top_k=0, top_p=0.9, seed=12),
        SamplingSettings(max_new_tokens=30, temperature=0.7, top_k=50, top_p=0.95, seed=13, **TTS),
    ],
    ids=["top-k", "top-p", "tts-rules"],
)
def test_seeded_sampling_gives_the_transformers_backend_ids_on_cpu(tts_lm, settings):
    """The statement of the docs: same seed, same random draws, same ids (float32 on CPU)."""
    prompt = _prompt(30, seed=3)
    reference = TransformersBackend(tts_lm).generate_ids(prompt, settings)
    backend = StaticCacheBackend(tts_lm, max_len=128)
    assert backend.generate_ids(prompt, settings) == reference
    assert backend.generate_ids(prompt, settings) == reference  # a per-request seed is reproducible


def test_unseeded_sampling_follows_the_global_random_state(tts_lm):
    prompt = _prompt(30, seed=4)
    settings = SamplingSettings(max_new_tokens=30, temperature=0.9, top_k=20)
    torch.manual_seed(123)
    reference = TransformersBackend(tts_lm).generate_ids(prompt, settings)
    torch.manual_seed(123)
    assert StaticCacheBackend(tts_lm, max_len=64).generate_ids(prompt, settings) == reference


def test_tts_rules_keep_audio_ids_and_stop_loops(tiny_model_root):
    model = _load(tiny_model_root)
    favourite = AUDIO_TOKEN_OFFSET + 5
    with torch.no_grad():  # make one audio id win every greedy step, so only the repetition rule stops a loop
        model.lm_head.weight[favourite] = 50 * model.model.norm.weight / model.model.norm.weight.norm()
    prompt = _prompt(20, seed=5)
    backend = StaticCacheBackend(model, max_len=96)

    looping = backend.generate_ids(prompt, SamplingSettings(max_new_tokens=12, do_sample=False))
    assert looping == [favourite] * 12

    settings = SamplingSettings(max_new_tokens=40, do_sample=False, **TTS)
    ids = backend.generate_ids(prompt, settings)
    assert ids == TransformersBackend(model).generate_ids(prompt, settings)
    assert all(AUDIO_TOKEN_OFFSET <= token < AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES or token == EOT_ID for token in ids)
    sequence = prompt + ids
    for index in range(len(prompt), len(sequence)):
        recent = sequence[max(0, index - TTS_REPETITION_WINDOW) : index]
        if recent.count(recent[-1]) > 1:  # more than 10% of the window: the last id is forbidden
            assert sequence[index] != recent[-1], index
    assert ids[:3] == [favourite, favourite, ids[2]] and ids[2] != favourite
    assert ids.count(favourite) > 5 and [favourite] * 3 not in [ids[i : i + 3] for i in range(len(ids) - 2)]

    sampled = SamplingSettings(max_new_tokens=40, temperature=1.0, seed=6, **TTS)
    assert backend.generate_ids(prompt, sampled) == TransformersBackend(model).generate_ids(prompt, sampled)


@pytest.mark.parametrize("compile_backend", ["eager", pytest.param("aot_eager", marks=pytest.mark.slow)])
def test_compiled_decode_step_gives_the_same_ids(tts_lm, compile_backend):
    prompt = _prompt(40, seed=7)
    settings = SamplingSettings(max_new_tokens=30, do_sample=False)
    reference = StaticCacheBackend(tts_lm, max_len=96, windows=[48]).generate_ids(prompt, settings)
    compiled = StaticCacheBackend(tts_lm, max_len=96, windows=[48], compile=True, compile_backend=compile_backend)
    assert compiled.compile_mode == "default"
    assert compiled.generate_ids(prompt, settings) == reference  # two windows: two full graphs
    sampled = SamplingSettings(max_new_tokens=12, temperature=0.8, top_k=30, seed=8)
    assert compiled.generate_ids(prompt, sampled) == TransformersBackend(tts_lm).generate_ids(prompt, sampled)


def test_generation_ends_when_the_cache_is_full(tts_lm):
    prompt = _prompt(60, seed=9)
    settings = SamplingSettings(max_new_tokens=20, do_sample=False, stop_token_ids=(EOT_ID,))
    reference = TransformersBackend(tts_lm).generate_ids(prompt, settings)
    backend = StaticCacheBackend(tts_lm, max_len=64)
    assert backend.max_seq_len == 64
    assert backend.generate_ids(prompt, settings) == reference[:4]


@pytest.mark.parametrize("overlap", [False, True], ids=["read-then-step", "step-then-read"])
def test_cancel_stops_within_one_token_and_frees_the_backend(tts_lm, overlap):
    """Both step orders (``overlap``: the CUDA default, here without the pinned copy) give the same ids."""
    prompt = _prompt(20, seed=10)
    settings = SamplingSettings(max_new_tokens=30, do_sample=False)
    full = TransformersBackend(tts_lm).generate_ids(prompt, settings)
    backend = StaticCacheBackend(tts_lm, max_len=64, overlap=overlap)
    assert backend.overlap is overlap
    assert backend.generate_ids(prompt, settings) == full

    cancel = threading.Event()
    received = []
    for token in backend.stream_ids(prompt, settings, cancel):
        received.append(token)
        if len(received) == 3:
            cancel.set()
    assert received == full[:3]
    assert list(backend.stream_ids(prompt, settings, cancel)) == []  # already cancelled: nothing runs

    stream = backend.stream_ids(prompt, settings)
    assert [next(stream), next(stream)] == full[:2]
    stream.close()  # leaves the lock: the next request runs at once
    assert backend.generate_ids(prompt, settings) == full


def test_concurrent_requests_are_served_one_at_a_time(tts_lm):
    backend = StaticCacheBackend(tts_lm, max_len=64)
    settings = SamplingSettings(max_new_tokens=20, do_sample=False)
    prompts = [_prompt(20, seed=seed) for seed in (20, 21, 22)]
    expected = [backend.generate_ids(prompt, settings) for prompt in prompts]
    results: dict[int, list[int]] = {}

    def run(index: int) -> None:
        results[index] = backend.generate_ids(prompts[index], settings)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[index] for index in range(3)] == expected


def test_bad_arguments_are_one_line_errors(tts_lm):
    backend = StaticCacheBackend(tts_lm, max_len=32)
    settings = SamplingSettings(max_new_tokens=5, do_sample=False)
    with pytest.raises(InvalidArgumentError) as error:
        backend.stream_ids(_prompt(40), settings)  # refused before the first next()
    assert str(error.value) == (
        "prompt_ids has 40 tokens but the static KV cache holds 32 positions (prompt + generated); "
        "shorten the prompt or build StaticCacheBackend with a larger max_len"
    )
    with pytest.raises(InvalidArgumentError, match=r"^prompt_ids must be token ids from 0 to 74751, got 80000$"):
        backend.stream_ids([5, 80000], settings)
    with pytest.raises(InvalidArgumentError, match=r"^prompt_ids must hold at least one token id, got \[\]$"):
        backend.stream_ids([], settings)
    with pytest.raises(InvalidArgumentError) as error:
        StaticCacheBackend(tts_lm, cuda_graphs=True)
    assert str(error.value) == "cuda_graphs needs the model on a CUDA device, got cpu; pass cuda_graphs=False"
    with pytest.raises(InvalidArgumentError, match=r"^compile must be one of default, reduce-overhead, "):
        StaticCacheBackend(tts_lm, compile="fast")
    with pytest.raises(InvalidArgumentError, match=r"^max_len must be a whole number from 2 to 2048, got 4096; "):
        StaticCacheBackend(tts_lm, max_len=4096)
    with pytest.raises(InvalidArgumentError, match=r"^windows must be a whole number from 1 to 32, got 0$"):
        StaticCacheBackend(tts_lm, max_len=32, windows=[0])
    with pytest.raises(InvalidArgumentError, match=r"^model must be a loaded Step1ForCausalLM, got "):
        StaticCacheBackend(object())
