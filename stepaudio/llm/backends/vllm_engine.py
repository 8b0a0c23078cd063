"""A vLLM engine in this process as a :class:`~stepaudio.llm.backends.base.GenerationBackend`.

vLLM's ``AsyncLLM`` (0.33) runs on an asyncio event loop that this backend owns on a background
thread, so :meth:`VllmBackend.stream_ids` is a plain iterator usable from any thread, and requests from
several threads are batched by the engine.  The engine is started with what Step-1 needs:

* ``attention_backend="TRITON_ATTN"``: the only vLLM attention backend with the sqrt-ALiBi bias
  (``supports_alibi_sqrt``; any other backend makes vLLM's ``Attention`` raise at model build);
* the native ``Step1Config`` (:func:`stepaudio.vllm.plugin.register`) and ``tie_word_embeddings=False``
  as an ``hf_overrides`` entry: the checkpoints' separate ``lm_head.weight`` is used;
* the TTS-3B sampling rules as the ``stepaudio.vllm`` logits processor, switched on per request;
* ``skip_tokenizer_init=True``: prompts are token ids (audio ids >= 65536 included), outputs are ids.

vLLM is imported only when a backend is built; a missing vLLM is one line saying what to install.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import CheckpointConfigError, CheckpointFileNotFoundError, InvalidArgumentError
from ...validation import check_bool, check_choice, check_float, check_input_dir, check_int, check_text
from .base import GenerationBackend, SamplingSettings

logger = logging.getLogger(__name__)

__all__ = ["VLLM_INSTALL_HINT", "VLLM_DTYPES", "VllmBackend", "import_vllm"]

#: What to do when vLLM is missing.
VLLM_INSTALL_HINT = (
    "the vllm backend needs vLLM 0.33, which is not installed: pip install 'stepaudio[vllm]' "
    "on Linux with a CUDA GPU (vLLM does not run the Step-1 attention on CPU or macOS)"
)
#: Accepted ``dtype`` values (vLLM's names; ``auto``: the checkpoint's bfloat16).
VLLM_DTYPES = ("auto", "bfloat16", "float16", "float32")
#: vLLM's multi-GPU executors.
VLLM_EXECUTORS = ("mp", "ray")
#: The attention backend Step-1's sqrt-ALiBi needs.
ATTENTION_BACKEND = "TRITON_ATTN"

_END = object()
#: How often a waiting stream looks at its cancel event (seconds).
_CANCEL_POLL_S = 0.02
#: How long closing a stream waits for vLLM to abort its request (seconds).
_ABORT_WAIT_S = 30.0


def import_vllm() -> Any:
    """``import vllm``, or an ``ImportError`` whose one-line message says what to install."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(f"{VLLM_INSTALL_HINT} ({error})") from error
    return vllm


def _read_step1_config(folder: Path) -> Any:
    """The folder's ``config.json`` as a :class:`~stepaudio.llm.configuration.Step1Config`, checked to be Step-1."""
    from ..configuration import Step1Config

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointFileNotFoundError(
            f"missing {config_file}: model_path must be a Step-1 folder (Step-Audio-Chat or Step-Audio-TTS-3B)",
            folder=folder,
            file=config_file,
        )
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise CheckpointConfigError(
            f"{config_file} is not a JSON object: {error}", folder=folder, file=config_file
        ) from error
    if model_type != Step1Config.model_type:
        raise CheckpointConfigError(
            f"{config_file} has model_type {model_type!r}, not 'step1': the vllm backend serves Step-Audio-Chat "
            "and Step-Audio-TTS-3B folders",
            folder=folder,
            file=config_file,
        )
    return Step1Config.from_pretrained(str(folder))


class VllmBackend(GenerationBackend):
    """Generates with an in-process vLLM ``AsyncLLM`` engine.

    Args:
        model_path: an official Step-1 folder (``Step-Audio-Chat`` or ``Step-Audio-TTS-3B``) or a
            quantized copy of one that vLLM reads (e.g. FP8 with ``quantization_config`` in config.json).
        tensor_parallel_size: GPUs each layer is split over (must divide the attention heads).
        pipeline_parallel_size: groups of consecutive layers on different GPUs (or nodes).
        gpu_memory_utilization: share of each GPU's memory vLLM may take (weights + KV cache).
        max_model_len: longest prompt + output (``None``: ``max_seq_len`` of config.json).
        dtype: ``auto`` (the checkpoint's bfloat16), ``bfloat16``, ``float16`` or ``float32``.
        quantization: passed to vLLM unchanged (``fp8``, ``awq``...; ``None``: as the checkpoint says).
        enforce_eager: no CUDA graphs (slower decoding, faster start, less memory).
        distributed_executor_backend: ``mp`` (one host) or ``ray`` (several hosts); ``None``: vLLM decides.

    Raises:
        InvalidArgumentError, InputFileError, CheckpointError: a bad argument or folder, found before
            vLLM is imported or any GPU is touched.
        ImportError: vLLM is not installed (:data:`VLLM_INSTALL_HINT`).
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        *,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        enforce_eager: bool = False,
        distributed_executor_backend: str | None = None,
    ) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Any = None
        self._closed = False
        what = "a Step-1 model folder (Step-Audio-Chat or Step-Audio-TTS-3B)"
        folder = check_input_dir(model_path, "model_path", what)
        tensor_parallel_size = check_int(tensor_parallel_size, "tensor_parallel_size", minimum=1)
        pipeline_parallel_size = check_int(pipeline_parallel_size, "pipeline_parallel_size", minimum=1)
        gpu_memory_utilization = check_float(
            gpu_memory_utilization, "gpu_memory_utilization", minimum=0.0, maximum=1.0, exclusive_minimum=True
        )
        dtype = check_choice(dtype, "dtype", VLLM_DTYPES)
        if quantization is not None:
            quantization = check_text(quantization, "quantization")
        enforce_eager = check_bool(enforce_eager, "enforce_eager")
        if distributed_executor_backend is not None:
            distributed_executor_backend = check_choice(
                distributed_executor_backend, "distributed_executor_backend", VLLM_EXECUTORS
            )
        config = _read_step1_config(folder)
        self._check_parallel_layout(config, tensor_parallel_size, pipeline_parallel_size)
        if max_model_len is not None:
            hint = "the model was trained for that many tokens (max_seq_len of config.json)"
            max_model_len = check_int(max_model_len, "max_model_len", minimum=1, maximum=config.max_seq_len, hint=hint)
        self._max_seq_len = int(max_model_len or config.max_seq_len)

        import_vllm()
        from vllm import AsyncEngineArgs

        from ...vllm.logits_processors import FQCN
        from ...vllm.plugin import register

        register()
        self.engine_args = AsyncEngineArgs(
            model=str(folder),
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            quantization=quantization,
            enforce_eager=enforce_eager,
            distributed_executor_backend=distributed_executor_backend,
            attention_backend=ATTENTION_BACKEND,
            hf_overrides={"tie_word_embeddings": False},
            skip_tokenizer_init=True,
            logits_processors=[FQCN],
            disable_log_stats=True,
        )
        self._start()

    @staticmethod
    def _check_parallel_layout(config: Any, tensor_parallel_size: int, pipeline_parallel_size: int) -> None:
        """vLLM's Step-1 splits heads and KV groups evenly over the tensor-parallel ranks and layers over stages."""
        heads, groups = config.num_attention_heads, config.num_attention_groups
        if heads % tensor_parallel_size:
            detail = (
                f"must divide the {heads} attention heads of the model, got {tensor_parallel_size} "
                f"(e.g. {', '.join(str(n) for n in (1, 2, 4, 8) if heads % n == 0)})"
            )
            raise InvalidArgumentError.about("tensor_parallel_size", detail, tensor_parallel_size)
        if groups % tensor_parallel_size and tensor_parallel_size % groups:
            detail = (
                f"must divide the {groups} key/value groups of the model or be a multiple of them, "
                f"got {tensor_parallel_size}"
            )
            raise InvalidArgumentError.about("tensor_parallel_size", detail, tensor_parallel_size)
        if pipeline_parallel_size > config.num_hidden_layers:
            detail = f"must be at most the {config.num_hidden_layers} layers of the model, got {pipeline_parallel_size}"
            raise InvalidArgumentError.about("pipeline_parallel_size", detail, pipeline_parallel_size)

    def _start(self) -> None:
        """Start the event loop thread and build the engine on it (weights load here)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="stepaudio-vllm-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def build() -> Any:
            return AsyncLLM.from_engine_args(self.engine_args)

        try:
            self._engine = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except BaseException:
            self._stop_loop()
            raise
        model_config = self._engine.model_config
        self._max_seq_len = int(model_config.max_model_len)
        if getattr(model_config.hf_config, "tie_word_embeddings", True):
            self.close()
            raise CheckpointConfigError(
                "vLLM loaded the Step-1 config with tie_word_embeddings=True; the checkpoints carry a separate "
                "lm_head.weight: make sure stepaudio's vllm plugin is installed (pip install -e . / 'stepaudio[vllm]')"
            )

    @property
    def max_seq_len(self) -> int:
        """The engine's ``max_model_len`` (prompt + generated ids)."""
        return self._max_seq_len

    def sampling_params(self, settings: SamplingSettings) -> Any:
        """vLLM ``SamplingParams`` of ``settings`` (the one place they are made).

        Greedy decoding is temperature 0; ``top_k`` 0 and ``top_p`` 1.0 mean no filter in both
        libraries.  Only ``settings.stop_token_ids`` end a request (``ignore_eos``: the tokenizer's
        ``</s>`` does not), and the stop id is returned, as the other backends do.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from ...vllm.tts_rules import TTSRules

        sample = settings.do_sample
        return SamplingParams(
            n=1,
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if sample else 0.0,
            top_k=settings.top_k if sample else 0,
            top_p=settings.top_p if sample else 1.0,
            seed=settings.seed,
            stop_token_ids=list(settings.stop_token_ids),
            ignore_eos=True,
            detokenize=False,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args=TTSRules.from_settings(settings).to_extra_args() or None,
        )

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Submit one request and yield its ids as the engine produces them.

        Setting ``cancel`` or closing the iterator aborts the request in vLLM (closing waits for the abort);
        an engine error is raised from the iterator.
        """
        if self._closed or self._loop is None:
            raise RuntimeError("the vllm backend is closed; build a new VllmBackend")
        from vllm.inputs import TokensPrompt

        prompt = TokensPrompt(prompt_token_ids=[int(i) for i in prompt_ids])
        params = self.sampling_params(settings)
        return self._stream(prompt, params, cancel)

    def _stream(self, prompt: Any, params: Any, cancel: threading.Event | None) -> Iterator[int]:
        assert self._loop is not None
        engine = self._engine
        outputs: queue.Queue[Any] = queue.Queue()
        started, finished = threading.Event(), threading.Event()
        request_id = f"stepaudio-{uuid.uuid4().hex}"

        async def pump() -> None:
            started.set()
            try:
                async for output in engine.generate(prompt, params, request_id):
                    ids = list(output.outputs[0].token_ids)
                    if ids:
                        outputs.put(ids)
                outputs.put(_END)
            except Exception as error:  # handed to the consuming thread and raised there
                outputs.put(error)
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while cancel is None or not cancel.is_set():
                try:
                    item = outputs.get(timeout=_CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                for token in item:
                    yield token
                    if cancel is not None and cancel.is_set():
                        return
        finally:
            if not finished.is_set():
                # Cancelling the task makes AsyncLLM.generate abort the request in the engine; a task
                # cancelled before it started never reached the engine.
                future.cancel()
                if started.is_set() and not finished.wait(_ABORT_WAIT_S):
                    logger.warning("vLLM did not end request %s within %.0f s of its abort", request_id, _ABORT_WAIT_S)

    def prompt_logprobs(self, prompt_ids: Sequence[int]) -> list[float]:
        """Log-probability of each prompt id after its prefix, from the raw logits (``len(prompt_ids) - 1`` values).

        For scoring and for comparing the engine with the transformers model (``benchmarks/gpu_checks.py``).
        """
        if self._closed or self._loop is None:
            raise RuntimeError("the vllm backend is closed; build a new VllmBackend")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        ids = [int(i) for i in prompt_ids]
        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY
        )
        engine = self._engine
        request_id = f"stepaudio-score-{uuid.uuid4().hex}"

        async def score() -> Any:
            final = None
            async for output in engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id):
                final = output
            return final

        output = asyncio.run_coroutine_threadsafe(score(), self._loop).result()
        entries = output.prompt_logprobs[1:]  # the first prompt id has no prefix to be predicted from
        return [float(entry[token].logprob) for entry, token in zip(entries, ids[1:], strict=True)]

    def close(self) -> None:
        """Shut the engine down (its GPU worker processes exit) and stop the event loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None and self._loop is not None:

            async def shutdown() -> None:
                engine.shutdown()

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        if loop is not None:
            loop.close()
