"""Decode-step time of Step-1: stepaudio's cached sqrt-ALiBi path vs the naive upstream fallback.

The naive path is what the upstream HF fallback does when the custom CUDA kernel is absent: in
every layer, at every step, it rebuilds the full ``[heads, L, L]`` sqrt-ALiBi bias for the key
length ``L`` (in the model dtype), keeps the last query row, expands K/V per query head with
``repeat_interleave`` and calls SDPA.  stepaudio builds only the one row a decode step needs, from
a cached ``sqrt`` table and cached slopes, once per step for all layers, and lets SDPA read the
grouped K/V directly.

Both paths run on the same model and the same KV cache (filled with random keys/values to the
context length, so no prefill is needed), one after the other in one process.  Printed: ms per
decode step for each path, the speed-up ratio, and the peak memory of each (CUDA: peak allocated;
CPU: peak resident-set growth sampled every millisecond).

    python benchmarks/llm_decode.py                      # TTS-3B layer geometry, 4 layers, CPU
    python benchmarks/llm_decode.py --layers 32 --device cuda --dtype bf16   # the whole TTS-3B
    python benchmarks/llm_decode.py --config chat --layers 4 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

import stepaudio.llm.modeling as modeling
from stepaudio.llm import STEP_AUDIO_CHAT_CONFIG, STEP_AUDIO_TTS_3B_CONFIG, Step1Config, Step1ForCausalLM
from stepaudio.llm.alibi import sqrt_alibi_slopes


def naive_upstream_attention(query, key, value, context, scale, backend="sdpa"):
    """Upstream fallback: full [H, L, L] bias rebuilt per call, last rows kept, K/V repeated per head."""
    heads, rows, device = query.shape[1], query.shape[2], query.device
    length = key.shape[2]
    slopes = sqrt_alibi_slopes(heads).to(device)
    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]
    bias = -slopes[:, None, None] * distance.clamp(min=0).to(torch.float32).sqrt()[None]
    bias = bias.masked_fill((distance < 0)[None], float("-inf")).to(query.dtype)
    bias = bias[:, -rows:, :]
    repeats = heads // key.shape[1]
    key = key.repeat_interleave(repeats, dim=1)
    value = value.repeat_interleave(repeats, dim=1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias[None], scale=scale)


@contextmanager
def attention_path(name: str):
    original = modeling.sqrt_alibi_attention
    if name == "naive":
        modeling.sqrt_alibi_attention = naive_upstream_attention
    try:
        yield
    finally:
        modeling.sqrt_alibi_attention = original


class PeakMemory:
    """Peak memory over a block: CUDA peak allocated, or sampled CPU resident-set growth."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            import psutil

            self._process = psutil.Process()
            self._start = self._process.memory_info().rss
            self._peak = self._start
            self._running = True
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._running = False
            self._thread.join()
            self.peak_bytes = max(0, self._peak - self._start)


def filled_cache(model: Step1ForCausalLM, length: int, device: torch.device, dtype: torch.dtype) -> DynamicCache:
    config = model.config
    cache = DynamicCache(config=config)
    shape = (1, config.num_attention_groups, length, config.head_dim)
    for layer in range(config.num_hidden_layers):
        cache.update(
            torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype), layer
        )
    return cache


def time_decode_steps(model, cache, context: int, steps: int, device: torch.device) -> tuple[float, int]:
    """Median ms of one decode step at a fixed context length, and the peak memory of the steps."""
    token = torch.tensor([[5]], device=device)
    times = []
    with PeakMemory(device) as memory, torch.inference_mode():
        for step in range(steps + 1):  # the first step is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(token, past_key_values=cache, use_cache=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step > 0:
                times.append((time.perf_counter() - start) * 1000)
            cache.crop(-1)  # drop the new token: every step sees the same context length
    return statistics.median(times), memory.peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["tts", "chat"], default="tts", help="official layer geometry to use")
    parser.add_argument("--layers", type=int, default=4, help="number of layers (official: tts 32, chat 88)")
    parser.add_argument("--contexts", default="256,1024,2048,4096", help="comma-separated context lengths")
    parser.add_argument("--steps", type=int, default=3, help="timed decode steps per context and path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="bf16/fp16/fp32 (default: bf16 on CUDA, fp32 on CPU)")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    official = STEP_AUDIO_TTS_3B_CONFIG if args.config == "tts" else STEP_AUDIO_CHAT_CONFIG
    contexts = [int(c) for c in args.contexts.split(",")]
    config = Step1Config(**{**official, "num_hidden_layers": args.layers, "max_seq_len": max(contexts) + 8})
    torch.manual_seed(0)
    with torch.device(device):
        model = Step1ForCausalLM(config).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Step-1 decode step, {args.config} geometry (hidden {config.hidden_size}, {config.num_attention_heads} heads, "
        f"{config.num_attention_groups} KV groups), {args.layers} layers, {params / 1e6:.0f}M params, "
        f"{device.type}, {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"
    )
    header = (
        f"{'context':>8} {'stepaudio ms':>13} {'naive ms':>10} {'speed-up':>9} "
        f"{'stepaudio peak':>15} {'naive peak':>11}"
    )
    print(header)
    print("-" * len(header))
    for context in contexts:
        results = {}
        for path in ("stepaudio", "naive"):
            cache = filled_cache(model, context - 1, device, dtype)
            with attention_path(path):
                results[path] = time_decode_steps(model, cache, context, args.steps, device)
            del cache
        (ours_ms, ours_peak), (naive_ms, naive_peak) = results["stepaudio"], results["naive"]
        print(
            f"{context:>8} {ours_ms:>13.1f} {naive_ms:>10.1f} {naive_ms / ours_ms:>8.1f}x "
            f"{ours_peak / 2**20:>12.0f} MiB {naive_peak / 2**20:>7.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
