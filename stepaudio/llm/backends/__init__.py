"""Generation backends of the Step-1 language models (see :mod:`.base` for the contract) and their factory.

A backend is chosen by a *spec*: ``None`` or ``"transformers"`` (the model in this process with
``generate``, the default and the reference), ``"static"`` / ``"compiled"`` (the model in this process with
a preallocated KV cache and fixed-shape decode steps, CUDA graphs on a GPU, ``torch.compile`` for
``"compiled"``; :mod:`.static_cache`), ``"vllm"`` (an in-process vLLM engine, needs the ``vllm`` package and a GPU), an
``http(s)://`` URL (a ``vllm serve`` server: the weights are not loaded here) or a ready
:class:`GenerationBackend`.  :func:`check_backend_spec` checks a spec without building anything;
:func:`make_backend` builds the backend.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError
from ...validation import check_choice, describe_value
from .base import GenerationBackend, SamplingSettings
from .remote import API_KEY_ENV, RemoteBackendError, RemoteCompletionsBackend, normalize_base_url
from .static_cache import StaticCacheBackend
from .transformers import TransformersBackend

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND_NAMES",
    "BACKEND_ROLES",
    "GenerationBackend",
    "RemoteBackendError",
    "RemoteCompletionsBackend",
    "SamplingSettings",
    "StaticCacheBackend",
    "TransformersBackend",
    "check_backend_spec",
    "check_quantization_for",
    "is_remote_spec",
    "make_backend",
]

#: Backends chosen by name (besides a URL or an instance): ``transformers`` (``generate``, the reference),
#: ``static`` (preallocated KV cache, fixed-shape decode steps, CUDA graphs on a GPU), ``compiled`` (the same
#: step compiled with ``torch.compile``), ``vllm`` (in-process engine).
BACKEND_NAMES = ("transformers", "static", "compiled", "vllm")
#: The names that load the model in this process with transformers (and so take ``device_map`` / int8 / int4).
LOCAL_BACKENDS = ("transformers", "static", "compiled")
#: What a backend generates for: the chat model or the TTS model (names its threads and messages).
BACKEND_ROLES = ("chat", "tts")
_SPEC_REQUIREMENT = (
    "'transformers', 'static', 'compiled', 'vllm', the http(s):// URL of a vLLM server (e.g. http://gpu-host:8000/v1) "
    "or a GenerationBackend"
)
_MODEL_NAMES = {"chat": "Step-Audio-Chat", "tts": "Step-Audio-TTS-3B"}


def is_remote_spec(spec: object) -> bool:
    """Whether ``spec`` (already checked) is a server URL."""
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


def check_backend_spec(spec: object, name: str = "backend") -> str | GenerationBackend:
    """The checked spec: ``"transformers"`` (for ``None``), ``"vllm"``, a normalised URL, or the instance.

    Nothing is built or contacted.  ``"vllm"`` needs the ``vllm`` package to be importable.

    Raises:
        InvalidArgumentError: one line naming ``name``, what is accepted and the value given.
    """
    if spec is None:
        return "transformers"
    if isinstance(spec, GenerationBackend):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError.about(name, f"must be {_SPEC_REQUIREMENT}, got {describe_value(spec)}", spec)
    text = spec.strip()
    if "://" in text:
        return normalize_base_url(text, name)
    if text.lower() not in BACKEND_NAMES:
        raise InvalidArgumentError.about(name, f"must be {_SPEC_REQUIREMENT}, got {describe_value(spec)}", spec)
    text = text.lower()
    if text == "vllm" and importlib.util.find_spec("vllm") is None:
        detail = (
            "'vllm' needs the vllm package (pip install vllm, on a CUDA machine); or run `vllm serve` elsewhere "
            "and pass its URL"
        )
        raise InvalidArgumentError.about(name, detail, spec)
    return text


def check_quantization_for(spec: str | GenerationBackend, quantization: object, name: str = "quantization") -> None:
    """Refuse a ``quantization`` that the (checked) backend ``spec`` cannot apply, before anything loads.

    ``"transformers"``, ``"static"`` and ``"compiled"`` take ``"int8"`` / ``"int4"`` (bitsandbytes); ``"vllm"``
    takes vLLM's own method names (checked by vLLM); a URL or a ready backend takes none (it is already loaded
    elsewhere).
    """
    if quantization is None:
        return
    if spec in LOCAL_BACKENDS:
        from ..quantization import resolve_quantization

        resolve_quantization(quantization, name=name)
        return
    if spec == "vllm":
        if not isinstance(quantization, str) or not quantization.strip():
            detail = f"must be vLLM's name of a quantization method (e.g. 'fp8'), got {describe_value(quantization)}"
            raise InvalidArgumentError.about(name, detail, quantization)
        return
    where = f"a remote server ({spec})" if isinstance(spec, str) else f"a ready backend ({type(spec).__name__})"
    detail = (
        f"does not apply to {where}, got {describe_value(quantization)}; that model is loaded elsewhere "
        "(for a server: e.g. `vllm serve ... --quantization fp8`)"
    )
    raise InvalidArgumentError.about(name, detail, quantization)


def _vllm_dtype(dtype: Any) -> str | None:
    """vLLM's name of a dtype (``"bfloat16"``...), or ``None`` to let vLLM choose."""
    if dtype is None:
        return None
    import torch

    from ...device import resolve_dtype

    resolved = resolve_dtype(dtype, torch.device("cuda"), name="dtype")
    return str(resolved).removeprefix("torch.")


def _config_max_seq_len(model_path: Path) -> int:
    from ..configuration import Step1Config

    return int(Step1Config.from_pretrained(str(model_path)).max_seq_len)


def make_backend(
    spec: object,
    model_path: str | Path,
    *,
    role: str,
    name: str = "backend",
    device: Any = None,
    dtype: Any = None,
    attn_implementation: str = "sdpa",
    device_map: str | dict | None = None,
    pad_token_id: int | None = None,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int | None = None,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    api_key: str | None = None,
    quantization: str | None = None,
) -> GenerationBackend:
    """Build the backend ``spec`` names for the Step-1 model of ``model_path`` (an official folder).

    Args:
        spec: see :func:`check_backend_spec`.
        model_path: the resolved official folder (``Step-Audio-Chat`` or ``Step-Audio-TTS-3B``).
        role: ``"chat"`` or ``"tts"`` (names the worker threads: ``stepaudio-{role}-generate``).
        name: the argument or option the spec came from, for messages (``chat_backend``, ``--tts-backend``).
        device, dtype, attn_implementation, device_map: how ``"transformers"`` loads the model
            (``device`` a resolved ``torch.device``; ``device_map`` spreads it over GPUs).
        pad_token_id: the text tokenizer's pad id, passed to ``generate`` by ``"transformers"``.
        tensor_parallel_size, pipeline_parallel_size, gpu_memory_utilization, max_model_len: settings of the
            ``"vllm"`` engine (``None``: vLLM's defaults); ``dtype`` also applies to it when given.
        api_key: for a URL: the server's API key (default: the ``STEPAUDIO_BACKEND_API_KEY`` environment variable).
        quantization: ``"transformers"``: ``"int8"`` / ``"int4"`` weight-only loading with bitsandbytes
            (:mod:`stepaudio.llm.quantization`, read shard by shard); ``"vllm"``: vLLM's own method name
            (``fp8``, ``awq``, ``bitsandbytes``...), passed unchanged; not used with a URL (the server
            chooses).

    Raises:
        InvalidArgumentError: a bad spec, or settings that do not apply to it (``device_map`` with
            anything but ``"transformers"``).
    """
    check_choice(role, "role", BACKEND_ROLES)
    checked = check_backend_spec(spec, name)
    check_quantization_for(checked, quantization)
    if isinstance(checked, GenerationBackend):
        return checked
    if checked != "transformers" and device_map is not None:
        detail = f"{describe_value(device_map)} only applies to the 'transformers' backend, not {checked!r}"
        raise InvalidArgumentError.about("device_map", detail, device_map)
    model_path = Path(model_path)
    if checked in LOCAL_BACKENDS:
        from ..modeling import Step1ForCausalLM

        quantized = quantization is not None  # checked above by check_quantization_for
        if quantized and device_map is None and device is not None:
            device_map = str(device)  # each tensor is quantized on its device as it is read, not on the CPU first
        model = Step1ForCausalLM.from_pretrained(
            model_path,
            dtype=dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            quantization=quantization,
        )
        if not quantized and device_map is None and device is not None:
            model.to(device)
        model.eval()
        if checked == "transformers":
            return TransformersBackend(model, pad_token_id=pad_token_id, thread_name=f"stepaudio-{role}-generate")
        from .static_cache import StaticCacheBackend

        on_gpu = model.device.type == "cuda"
        return StaticCacheBackend(
            model,
            max_len=None if max_model_len is None else min(max_model_len, int(model.config.max_seq_len)),
            compile="default" if checked == "compiled" else False,
            cuda_graphs=on_gpu,
        )
    if checked == "vllm":
        from .vllm_engine import VllmBackend

        if max_model_len is not None:  # e.g. the TTS's 8192: no KV cache for a longer context than is used
            max_model_len = min(max_model_len, _config_max_seq_len(model_path))
        options = {
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "dtype": _vllm_dtype(dtype),
            "quantization": quantization,
        }
        options = {key: value for key, value in options.items() if value is not None}
        logger.info("starting the in-process vLLM engine for %s (%s)", _MODEL_NAMES[role], options or "defaults")
        return VllmBackend(str(model_path), **options)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    return RemoteCompletionsBackend(checked, api_key=key, max_seq_len=_config_max_seq_len(model_path))
