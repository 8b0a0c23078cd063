"""The fast single-sequence backend: a static KV cache and a fixed-shape decode step.

:class:`StaticCacheBackend` runs the Step-1 model itself (no ``generate``): it prefills the prompt into a
preallocated :class:`~stepaudio.llm.static_cache.StaticKVCache`, then decodes one token per step with a
step whose tensor shapes never change while the sequence stays within a *window* (keys ``0 .. w - 1``,
unfilled positions masked by the sqrt-ALiBi bias).  That step can be

* run eagerly (``compile=False, cuda_graphs=False``): already avoids the growing-cache copies;
* compiled with ``torch.compile`` (``compile="default"``, ``"reduce-overhead"`` (CUDA graphs by
  torch), ``"max-autotune"``, ...; ``fullgraph=True, dynamic=False``, one graph per window);
* captured in a ``torch.cuda.CUDAGraph`` per window (``cuda_graphs=True``, CUDA only), replayed with
  the token copied into a static input tensor.

Windows double from 256 up to ``max_len`` (at most 8 of them), so a short sequence does not read the
whole cache at every step while a handful of graphs covers every length.

Sampling runs on the model's device with transformers' own processors, in the order ``generate`` applies
them (transformers 5.x ``_get_logits_processor``): the TTS rules (audio ids only, then the repetition
rule) first, then temperature, top-k and top-p when sampling, then ``softmax`` + ``torch.multinomial``
(or ``argmax`` when not sampling).  A per-request seed uses a private generator seeded like
``torch.manual_seed(seed)``, so with the same seed the same random numbers are drawn as in
:class:`~stepaudio.llm.backends.transformers.TransformersBackend`; the ids are then equal unless two
candidates are so close that the last-bit differences of the logits (static vs growing cache: different
reduction shapes) reorder them.  Greedy ids equal ``generate``'s under the same condition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ...errors import InvalidArgumentError
from ...validation import check_bool, check_choice, check_int, describe_value
from ..modeling import Step1ForCausalLM
from ..static_cache import StaticKVCache
from .base import GenerationBackend, SamplingSettings
from .transformers import TTSRuleProcessors

logger = logging.getLogger(__name__)

__all__ = ["COMPILE_MODES", "DEFAULT_MAX_LEN", "StaticCacheBackend", "default_windows"]

#: Cache length when none is given (capped by the model's ``max_seq_len``): upstream TTS-3B's limit.
DEFAULT_MAX_LEN = 8192

#: ``torch.compile`` modes accepted by ``compile=`` (``True`` means ``"default"``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Compile modes in which torch captures CUDA graphs itself (not combinable with ``cuda_graphs=True``).
_CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")

#: Smallest default window, and the most windows (= compiled graphs / CUDA graphs) made by default.
_MIN_WINDOW = 256
_MAX_WINDOWS = 8

#: Recompilations of the decode step allowed while it runs (one per window and backend instance).
_RECOMPILE_LIMIT = 64


def default_windows(max_len: int) -> tuple[int, ...]:
    """Key windows of the decode step: doubling sizes ending at ``max_len``, at most :data:`_MAX_WINDOWS`."""
    windows = [max_len]
    while len(windows) < _MAX_WINDOWS and windows[-1] // 2 >= _MIN_WINDOW:
        windows.append(windows[-1] // 2)
    return tuple(sorted(windows))


def _check_compile(value: object) -> str | None:
    """``compile=``: False/None (off), True (``"default"``) or one of :data:`COMPILE_MODES`."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    return check_choice(value, "compile", COMPILE_MODES, hint="or False to run the decode step eagerly")


class StaticCacheBackend(GenerationBackend):
    """Generates one sequence at a time with a static KV cache and a compiled or CUDA-graph decode step.

    Args:
        model: a loaded :class:`~stepaudio.llm.Step1ForCausalLM` on one device (eval mode).
        max_len: positions of the KV cache = longest prompt + generated sequence (default
            ``min(model.config.max_seq_len, 8192)``; at most ``max_seq_len``).
        compile: ``False`` (eager step), ``True``/``"default"``, ``"reduce-overhead"``, ``"max-autotune"`` or
            ``"max-autotune-no-cudagraphs"``: compile the decode step with ``torch.compile`` in that mode.
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"eager"``/``"aot_eager"`` only check the
            graph capture, cheaply).
        cuda_graphs: capture the decode step in a ``torch.cuda.CUDAGraph`` per window (CUDA models only;
            combinable with ``compile="default"`` or ``"max-autotune-no-cudagraphs"``).
        windows: key-window sizes of the decode step (default :func:`default_windows`); ``max_len`` is always
            one of them.
        overlap: queue the next decode step before the sampled id is read back to the host, so the device
            computes it while the caller handles the id (default: on CUDA; on CPU it only delays each id).

    Requests are served one at a time (a lock); :meth:`stream_ids` stops within one token once
    ``cancel`` is set or the iterator is closed.  Memory: the cache holds
    ``2 * layers * groups * head_dim * max_len`` values of the model dtype (TTS-3B, bf16, 8192: 0.5 GiB).
    """

    name = "static"

    def __init__(
        self,
        model: Step1ForCausalLM,
        *,
        max_len: int | None = None,
        compile: bool | str = False,  # noqa: A002 - the natural name of the option
        compile_backend: str = "inductor",
        cuda_graphs: bool = False,
        windows: Sequence[int] | None = None,
        overlap: bool | None = None,
    ) -> None:
        if not isinstance(model, Step1ForCausalLM):
            raise InvalidArgumentError.about(
                "model", f"must be a loaded Step1ForCausalLM, got {describe_value(model)}", model
            )
        devices = {parameter.device for parameter in model.parameters()}
        if len(devices) != 1:
            raise InvalidArgumentError.about(
                "model",
                f"must sit on one device for the static-cache backend, got weights on {sorted(map(str, devices))}; "
                "load it without device_map, or use the transformers backend",
                model,
            )
        config = model.config
        self.model = model.eval()
        self.device = devices.pop()
        self.dtype = next(model.parameters()).dtype
        longest = int(config.max_seq_len)
        self.max_len = check_int(
            min(longest, DEFAULT_MAX_LEN) if max_len is None else max_len,
            "max_len",
            minimum=2,
            maximum=longest,
            hint="the model's max_seq_len is the upper limit",
        )
        self.compile_mode = _check_compile(compile)
        if not isinstance(compile_backend, str) or not compile_backend:
            raise InvalidArgumentError.about(
                "compile_backend",
                f"must be a torch.compile backend name such as 'inductor', got {describe_value(compile_backend)}",
                compile_backend,
            )
        self.compile_backend = compile_backend
        self.cuda_graphs = check_bool(cuda_graphs, "cuda_graphs")
        if self.cuda_graphs and self.device.type != "cuda":
            raise InvalidArgumentError.about(
                "cuda_graphs",
                f"needs the model on a CUDA device, got {self.device}; pass cuda_graphs=False",
                cuda_graphs,
            )
        if self.cuda_graphs and self.compile_mode in _CUDAGRAPH_COMPILE_MODES:
            raise InvalidArgumentError.about(
                "cuda_graphs",
                f"cannot be combined with compile={self.compile_mode!r}, which captures CUDA graphs itself; "
                "pass cuda_graphs=False, or compile='default'",
                cuda_graphs,
            )
        self.windows = self._check_windows(windows)
        self.overlap = self.device.type == "cuda" if overlap is None else check_bool(overlap, "overlap")

        self.cache = StaticKVCache(config, self.max_len, device=self.device, dtype=self.dtype)
        # Prompt + generated ids on the device (the TTS repetition rule reads them).
        self._ids = torch.zeros(1, self.max_len, dtype=torch.long, device=self.device)
        # The decode step's static input.
        self._token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        # Tables a captured step reads and must not (re)allocate: the sqrt distances, grown at once to the
        # model's longest sequence (so no other user of the model grows them later), and the slopes.  The
        # references held here keep the captured addresses valid in any case.
        alibi = model.model.alibi
        self._alibi_tables = (alibi.sqrt_distances(longest, self.device), alibi.slopes(self.device))

        self._step = self._forward_step
        if self.compile_mode is not None:
            self._step = self._compiled_step()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._graph_pool: Any = None
        self._tts_rules = TTSRuleProcessors()
        self._lock = threading.Lock()
        logger.info(
            "static-cache backend: %s %s, cache of %d positions (%.2f GiB), windows %s, compile=%s (%s), "
            "cuda_graphs=%s",
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.max_len,
            self.cache_bytes / 2**30,
            list(self.windows),
            self.compile_mode or "off",
            self.compile_backend,
            self.cuda_graphs,
        )

    def _check_windows(self, windows: Sequence[int] | None) -> tuple[int, ...]:
        if windows is None:
            return default_windows(self.max_len)
        if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence) or not windows:
            raise InvalidArgumentError.about(
                "windows", f"must be a non-empty list of whole numbers, got {describe_value(windows)}", windows
            )
        checked = {check_int(w, "windows", minimum=1, maximum=self.max_len) for w in windows}
        return tuple(sorted(checked | {self.max_len}))

    @property
    def max_seq_len(self) -> int:
        """The cache length: longest prompt + generated sequence."""
        return self.max_len

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the KV cache buffers."""
        return sum(buffer.numel() * buffer.element_size() for buffer in (*self.cache.keys, *self.cache.values))

    # ----------------------------------------------------------------------------------------------- steps

    def _forward_step(self, token: torch.Tensor) -> torch.Tensor:
        """One fixed-shape decode step (``cache.window`` set): float32 logits ``[1, vocab]`` of the next id."""
        logits = self.model(input_ids=token, past_key_values=self.cache, logits_to_keep=1).logits
        return logits[:, -1].to(dtype=torch.float32)

    def _compiled_step(self):
        """``torch.compile`` of :meth:`_forward_step`: one full graph per window, shapes never dynamic.

        Every window is one recompilation of the same code object, and all backends of the process (a chat
        and a TTS model, tests) share that code object, so torch's default limit of 8 is raised to
        :data:`_RECOMPILE_LIMIT` around the calls (only there).
        """
        compiled = torch.compile(
            self._forward_step,
            mode=None if self.compile_mode == "default" else self.compile_mode,
            backend=self.compile_backend,
            fullgraph=True,
            dynamic=False,
        )

        def step(token: torch.Tensor) -> torch.Tensor:
            limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
            with torch._dynamo.config.patch(recompile_limit=limit):
                return compiled(token)

        return step

    def _window_for(self, keys: int) -> int:
        """Smallest window holding ``keys`` positions."""
        for window in self.windows:
            if window >= keys:
                return window
        raise AssertionError(f"no window holds {keys} keys (max_len {self.max_len})")  # guarded by the caller

    def _prefill(self, prompt_length: int) -> torch.Tensor:
        """Run the prompt (already in ``_ids``) through the model; float32 logits of the first new id."""
        self.cache.reset()
        self.cache.window = None
        logits = self.model(input_ids=self._ids[:, :prompt_length], past_key_values=self.cache, logits_to_keep=1).logits
        self.cache.advance(prompt_length)
        return logits[:, -1].to(dtype=torch.float32)

    def _decode(self, token: torch.Tensor) -> torch.Tensor:
        """Feed ``token`` (``[1]``, at position ``cache.length``); float32 logits of the next id."""
        self._token.copy_(token.view(1, 1))
        window = self._window_for(self.cache.length + 1)
        self.cache.window = window
        try:
            if self.cuda_graphs:
                graph, logits = self._graph(window)
                graph.replay()
            else:
                if self.compile_mode in _CUDAGRAPH_COMPILE_MODES and self.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()
                logits = self._step(self._token)
        finally:
            self.cache.window = None
        self.cache.advance(1)
        return logits

    def _graph(self, window: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """The CUDA graph of the step for ``window`` (captured on first use) and its static output.

        Capture happens right before a real step: the warm-up runs write the current token's key/value
        at the current position, which the real step then writes again, so they change nothing.
        """
        if window not in self._graphs:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._step(self._token)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (e.g. the audio decoder) may keep using CUDA during the capture.
            with torch.cuda.graph(graph, pool=self._graph_pool, capture_error_mode="thread_local"):
                output = self._step(self._token)
            self._graphs[window] = (graph, output)
            logger.debug("captured the decode step for a window of %d keys in a CUDA graph", window)
        return self._graphs[window]

    # -------------------------------------------------------------------------------------------- sampling

    def logits_processors(self, settings: SamplingSettings) -> LogitsProcessorList:
        """The processors ``generate`` would apply for ``settings``, in its order.

        transformers 5.x puts the caller's ``logits_processor`` list (here the TTS rules, audio ids only
        then the repetition rule, as :class:`TransformersBackend` passes them) before the sampling
        warpers temperature (if != 1), top-k (if != 0) and top-p (if < 1), each keeping at least one id.
        """
        processors = LogitsProcessorList(self._tts_rules(settings, self.model))
        if settings.do_sample:
            if settings.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k != 0:
                processors.append(TopKLogitsWarper(top_k=settings.top_k, min_tokens_to_keep=1))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p=settings.top_p, min_tokens_to_keep=1))
        return processors

    # ----------------------------------------------------------------------------------------- generation

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        settings: SamplingSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Yield generated ids one by one; the prompt is checked here, before the first ``next``.

        Generation ends after a stop id, after ``settings.max_new_tokens`` ids, or when the sequence
        fills the cache (``max_len`` positions, prompt included), whichever comes first.
        """
        prompt = [int(token) for token in prompt_ids]
        if not prompt:
            raise InvalidArgumentError.about("prompt_ids", "must hold at least one token id, got []", prompt)
        if len(prompt) >= self.max_len:
            raise InvalidArgumentError.about(
                "prompt_ids",
                f"has {len(prompt)} tokens but the static KV cache holds {self.max_len} positions (prompt + "
                "generated); shorten the prompt or build StaticCacheBackend with a larger max_len",
                len(prompt),
            )
        vocab_size = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab_size:
            bad = next(token for token in prompt if token < 0 or token >= vocab_size)
            raise InvalidArgumentError.about(
                "prompt_ids", f"must be token ids from 0 to {vocab_size - 1}, got {bad}", bad
            )
        check_int(settings.max_new_tokens, "max_new_tokens", minimum=1)
        processors = self.logits_processors(settings)
        return self._generate(prompt, settings, processors, cancel)

    def _generate(
        self,
        prompt: list[int],
        settings: SamplingSettings,
        processors: LogitsProcessorList,
        cancel: threading.Event | None,
    ) -> Iterator[int]:
        stop_ids = set(settings.stop_token_ids)
        generator = None
        if settings.do_sample and settings.seed is not None:
            # Same stream as torch.manual_seed(seed) gives the global generator of this device.
            generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        overlap = self.overlap
        host_token = copied = None
        with self._lock, torch.inference_mode():
            if cancel is not None and cancel.is_set():
                return
            length = len(prompt)
            end = min(length + settings.max_new_tokens, self.max_len)
            self._ids[0, :length] = torch.tensor(prompt, dtype=torch.long)
            logits = self._prefill(length)
            if overlap and self.device.type == "cuda":
                host_token = torch.empty(1, dtype=torch.long, pin_memory=True)
                copied = torch.cuda.Event()
            while True:
                scores = processors(self._ids[:, :length], logits)
                if settings.do_sample:
                    probabilities = torch.softmax(scores, dim=-1)
                    token = torch.multinomial(probabilities, num_samples=1, generator=generator).view(1)
                else:
                    token = torch.argmax(scores, dim=-1)
                self._ids[:, length] = token
                length += 1
                if overlap:
                    if host_token is not None:
                        host_token.copy_(token, non_blocking=True)
                        copied.record()
                    if length < end:  # queued before the id is read; dropped after a stop id or a cancel
                        logits = self._decode(token)
                    if host_token is not None:
                        copied.synchronize()
                        token_id = int(host_token[0])
                    else:
                        token_id = int(token.item())
                else:
                    token_id = int(token.item())
                yield token_id
                if token_id in stop_ids or length >= end or (cancel is not None and cancel.is_set()):
                    return
                if not overlap:
                    logits = self._decode(token)

    def close(self) -> None:
        """Drop the CUDA graphs (their memory pool is freed with them)."""
        with self._lock:
            self._graphs.clear()
            self._graph_pool = None
