"""``StepAudioEditX`` with the fast backends and quantized loading (tiny random EditX folder, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from stepaudio.editx import StepAudioEditX
from stepaudio.editx.model import AWQ_FOLDER, resolve_lm_source
from stepaudio.editx.prompts import build_clone_prompt_ids
from stepaudio.errors import InputFileError, InvalidArgumentError
from stepaudio.llm.backends import StaticCacheBackend, TransformersBackend, make_backend
from stepaudio.llm.quantization import model_quantization
from stepaudio.testing.editx_fixture import build_tiny_editx_checkpoint
from stepaudio.tokenizer import StepAudioTokenizer

RATE = 16000


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.9 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_editx_checkpoint(tmp_path_factory.mktemp("editx") / "Step-Audio-EditX", with_decoder=False)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")


def _editx(folder, tokenizer, **kwargs) -> StepAudioEditX:
    return StepAudioEditX(folder, tokenizer, device="cpu", seed=7, max_speech_seconds=0.5, **kwargs)


@pytest.mark.slow
def test_static_backend_gives_the_codes_of_the_transformers_backend(folder, tokenizer):
    reference = _editx(folder, tokenizer)
    static = _editx(folder, tokenizer, backend="static")
    assert isinstance(reference.backend, TransformersBackend) and isinstance(static.backend, StaticCacheBackend)
    assert static.model is not None and static.max_length == 2048  # the tiny LM's max_seq_len (< 8192)
    expected = reference.clone_codes("hello there", _voice(1.0), "a clip", sample_rate=RATE)
    assert static.clone_codes("hello there", _voice(1.0), "a clip", sample_rate=RATE) == expected
    assert 0 < len(expected[0]) <= 21 and all(0 <= code < 5120 for code in expected[0])
    # streamed ids are the same codes as generated ones (same seed), for both backends
    prompt = reference.prepare_audio(_voice(1.0), RATE)
    ids = build_clone_prompt_ids(reference.text_tokenizer, "clone_x", "a clip", prompt.audio_ids, "hello there")
    for editx in (reference, static):
        assert list(editx.stream_codes(ids, 20)) == editx.generate_codes(ids, 20)


def test_a_ready_backend_is_used_as_given(folder, tokenizer):
    backend = make_backend("static", folder, role="tts", device="cpu", max_model_len=512)
    editx = _editx(folder, tokenizer, backend=backend)
    assert editx.backend is backend and editx.max_length == 512


def test_int8_quantized_lm_generates_codes(folder, tokenizer):
    editx = _editx(folder, tokenizer, quantization="int8")
    assert model_quantization(editx.model).method == "int8"
    codes = editx.edit_codes(_voice(1.0), "hello there", "emotion", "happy", sample_rate=RATE)
    assert len(codes) == 1 and 0 < len(codes[0]) <= 21 and all(0 <= code < 5120 for code in codes[0])
    assert editx.edit_codes(_voice(1.0), "hello there", "emotion", "happy", sample_rate=RATE) == codes  # seeded


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"quantization": "awq-4bit"},
            InvalidArgumentError,
            "quantization 'awq-4bit' (the original's pre-quantized Step-Audio-EditX-AWQ-4bit checkpoint) loads with "
            "backend='vllm' only, not 'transformers'; use 'int4' or 'int8' (bitsandbytes, quantized while loading) "
            "with this backend",
        ),
        ({"quantization": "int3"}, InvalidArgumentError, "quantization must be one of int8, int4, got 'int3'"),
        (
            {"backend": "http://gpu:8000", "quantization": "int4"},
            InvalidArgumentError,
            "quantization does not apply to a remote server (http://gpu:8000/v1), got 'int4'",
        ),
        ({"backend": "fast"}, InvalidArgumentError, "backend must be 'transformers', 'static', 'compiled', 'vllm'"),
        (
            {"backend_options": {"gpu_memory": 0.5}},
            InvalidArgumentError,
            "backend_options may only hold tensor_parallel_size, pipeline_parallel_size, gpu_memory_utilization, "
            "api_key, device_map, got 'gpu_memory'",
        ),
        (
            {"backend": "static", "backend_options": {"device_map": "auto"}},
            InvalidArgumentError,
            "device_map 'auto' only applies to the 'transformers' backend, not 'static'",
        ),
        ({"lm_path": "/nonexistent/lm"}, InputFileError, "lm_path /nonexistent/lm does not exist"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(folder, tokenizer, kwargs, error, message):
    with pytest.raises(error) as caught:
        _editx(folder, tokenizer, **kwargs)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_quantization_with_a_ready_backend_is_refused(folder, tokenizer):
    backend = make_backend("transformers", folder, role="tts", device="cpu")
    with pytest.raises(InvalidArgumentError, match=r"^quantization does not apply to a ready backend"):
        _editx(folder, tokenizer, backend=backend, quantization="int8")


def test_awq_checkpoint_folder_is_looked_up_beside_editx(folder):
    with pytest.raises(InvalidArgumentError, match=f"'awq-4bit' needs the {AWQ_FOLDER} checkpoint"):
        resolve_lm_source("vllm", "awq-4bit", folder.parent, folder, None)
    awq = build_tiny_editx_checkpoint(folder.parent / AWQ_FOLDER, with_decoder=False)
    assert resolve_lm_source("vllm", "awq-4bit", folder.parent, folder, None) == (awq, None)
    assert resolve_lm_source("vllm", "fp8", folder, folder, None) == (folder, "fp8")
    assert resolve_lm_source("static", "int4", folder, folder, awq) == (awq, "int4")
