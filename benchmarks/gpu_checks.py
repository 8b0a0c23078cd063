"""GPU checks of issue 12 (vLLM, quantized loading, the fast decode and token2wav paths), printed as one table.

Each check is a function in :data:`CHECKS` that takes the parsed arguments and returns table rows
(:class:`Row`); the script runs them in order and prints every row in one table.  A check is added by
writing such a function and appending it to :data:`CHECKS`.

* :func:`logits_rows`: the transformers model and the in-process vLLM engine (``VllmBackend``, TP 1,
  Triton attention, stepaudio's plugin) on one official-layout tiny Step-1 folder: max |log-prob|
  difference over a prompt of text and audio ids, greedy-token agreement, and greedy agreement with the
  TTS-3B rules (audio ids only + anti-loop window) on both engines.
  Skipped as one failed row when vLLM is not installed; the other checks need only CUDA.
* :func:`quantized_rows`: int8 / int4 loads (bitsandbytes, shard by shard) of a TTS-3B-shaped random model:
  weight bytes, decode tokens/s and logit agreement with the unquantized load (benchmarks/quantization.py).
* :func:`speed_rows`: TTS-3B-shaped decode steps/s of transformers ``generate``, the static-cache backend,
  compiled and with CUDA graphs, against the memory bound, and first-token latency (benchmarks/llm_decode.py).
* :func:`token2wav_rows`: the CosyVoice decoder's ``cuda-graphs`` engine against eager (benchmarks/token2wav.py).

Needs a CUDA GPU, and vLLM 0.33 for the first check (``pip install 'stepaudio[vllm,quantization]'``)::

    python benchmarks/gpu_checks.py
    python benchmarks/gpu_checks.py --dtype float32 --new-tokens 64
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One line of the table: which check, under which setting, what was measured, and whether it passes."""

    check: str
    setting: str
    result: str
    verdict: str


def requirements_problem() -> str | None:
    """Why the checks cannot run here (one line), or ``None`` when a CUDA GPU is visible.

    vLLM is needed only by :func:`logits_rows`, which reports its absence as a failed row.
    """
    import torch

    if not torch.cuda.is_available():
        return "gpu_checks: no CUDA GPU is visible (torch.cuda.is_available() is False); run on a machine with one"
    return None


#: Dimensions of the fixture: the official layout and vocabulary, with heads of 64 (vLLM's Triton attention
#: needs a head size of at least 32) and a head count that is not a power of two (both ALiBi slope rules).
FIXTURE_DIMENSIONS = {
    "hidden_size": 384,
    "intermediate_size": 768,
    "num_attention_heads": 6,
    "num_attention_groups": 2,
    "num_hidden_layers": 3,
}


def build_fixture(folder: Path, seed: int) -> Path:
    """A tiny random Step-1 folder in the official Step-Audio-Chat layout (config.json with ``auto_map`` and no
    ``tie_word_embeddings``, bf16 shards, separate ``lm_head.weight``), with peaked output distributions."""
    import torch

    from stepaudio.llm import Step1Config, Step1ForCausalLM
    from stepaudio.testing.llm_fixture import tiny_step1_config_dict, write_step1_checkpoint

    config_dict = tiny_step1_config_dict("chat", **FIXTURE_DIMENSIONS)
    torch.manual_seed(seed)
    model = Step1ForCausalLM(Step1Config(**config_dict))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.add_(0.1 * torch.randn_like(parameter))
        # Scaled so that arg-max picks are clear-cut (not near-ties that bf16 rounding could flip).
        model.lm_head.weight.mul_(20.0)
    return write_step1_checkpoint(folder, model.state_dict(), config_dict)


def _prompt(length: int, seed: int) -> list[int]:
    """BOS, random text ids, then random ``<audio_N>`` ids (>= 65536, above the text vocabulary)."""
    import torch

    from stepaudio.llm.text_tokenizer import AUDIO_TOKEN_OFFSET, BOS_ID, NUM_AUDIO_CODES

    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 60000, (length // 2,), generator=generator).tolist()
    audio = torch.randint(AUDIO_TOKEN_OFFSET, AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES, (length - length // 2 - 1,))
    return [BOS_ID, *text, *audio.tolist()]


def _agreement(reference: list[int], other: list[int]) -> str:
    """``matched/total (first difference at i)``."""
    total = max(len(reference), len(other))
    same = sum(a == b for a, b in zip(reference, other, strict=False))
    first = next((i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b), None)
    if first is None and len(reference) != len(other):
        first = min(len(reference), len(other))
    where = "identical" if first is None else f"first difference at {first}"
    return f"{same}/{total} ({where})"


def logits_rows(args: argparse.Namespace) -> list[Row]:
    """transformers vs vLLM on the tiny official-layout fixture at TP 1."""
    import torch

    from stepaudio.llm import Step1ForCausalLM
    from stepaudio.llm.backends.base import SamplingSettings
    from stepaudio.llm.backends.transformers import TransformersBackend

    dtype = getattr(torch, args.dtype)
    setting = f"TP 1, {args.dtype}, prompt {args.prompt_tokens} ids"
    if importlib.util.find_spec("vllm") is None:
        return [
            Row("logits: transformers vs vLLM", setting, "vLLM is not installed: pip install 'stepaudio[vllm]'", "FAIL")
        ]
    from stepaudio.llm.backends.vllm_engine import VllmBackend

    with tempfile.TemporaryDirectory(prefix="stepaudio-gpu-checks-") as tmp:
        folder = build_fixture(Path(tmp) / "Step-Audio-Chat", args.seed)
        prompt = _prompt(args.prompt_tokens, args.seed)
        greedy = SamplingSettings(max_new_tokens=args.new_tokens, do_sample=False)
        tts = SamplingSettings(
            max_new_tokens=args.new_tokens, do_sample=False, audio_tokens_only=True, repetition_window=10
        )

        model = Step1ForCausalLM.from_pretrained(folder, dtype=dtype).to("cuda").eval()
        with torch.inference_mode():
            logits = model(torch.tensor([prompt], device="cuda")).logits[0].float()
        reference_logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(
            1, torch.tensor(prompt[1:], device="cuda")[:, None]
        )
        reference = TransformersBackend(model)
        reference_greedy = reference.generate_ids(prompt, greedy)
        reference_tts = reference.generate_ids(prompt, tts)
        del model, reference
        torch.cuda.empty_cache()

        start = time.perf_counter()
        engine = VllmBackend(
            folder, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=True
        )
        print(f"vLLM engine started in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        try:
            engine_logprobs = torch.tensor(engine.prompt_logprobs(prompt), device="cuda")
            engine_greedy = engine.generate_ids(prompt, greedy)
            engine_tts = engine.generate_ids(prompt, tts)
        finally:
            engine.close()

    difference = float((engine_logprobs - reference_logprobs[:, 0]).abs().max())
    tolerance = 1e-3 if args.dtype == "float32" else 0.15
    greedy_same = engine_greedy == reference_greedy
    tts_same = engine_tts == reference_tts
    return [
        Row(
            "logits: transformers vs vLLM",
            setting,
            f"max |logprob diff| {difference:.2e}",
            _pass(difference <= tolerance),
        ),
        Row(
            "greedy tokens",
            f"{setting}, {args.new_tokens} new",
            _agreement(reference_greedy, engine_greedy),
            _pass(greedy_same),
        ),
        Row(
            "greedy tokens, TTS rules",
            f"{setting}, {args.new_tokens} new, audio ids only + window 10",
            _agreement(reference_tts, engine_tts),
            _pass(tts_same),
        ),
    ]


def quantized_rows(args: argparse.Namespace) -> list[Row]:
    """int8 / int4 (bitsandbytes) loads of a TTS-3B-shaped random model against its unquantized load on CUDA."""
    import torch
    from quantization import quantized_rows as measure_quantized

    dtype = getattr(torch, args.dtype)
    rows = []
    for row in measure_quantized(device="cuda", dtype=dtype, layers=args.quantized_layers):
        method = row["method"] or "unquantized"
        setting = f"TTS-3B shape, {args.quantized_layers} layers, {args.dtype}"
        result = (
            f"{row['weight_bytes'] / 2**30:.2f} GiB weights, {row['decode_tok_s']:.0f} tok/s, "
            f"min cosine {row['min_cosine']:.4f}, top-1 {row['top1']:.2f}"
        )
        # The agreement bounds of tests/test_llm_quantization.py (random weights amplify every perturbation).
        ok = row["weight_bytes"] == row["projected_bytes"] and (
            method == "unquantized" or row["min_cosine"] > (0.999 if method == "int8" else 0.9)
        )
        rows.append(Row(f"quantized load: {method}", setting, result, _pass(ok)))
    return rows


def speed_rows(args: argparse.Namespace) -> list[Row]:
    """TTS-3B-shaped decode steps per second of each transformers path (generate, static cache, compiled, CUDA
    graphs) against the memory bound, and first-token latency (benchmarks/llm_decode.py)."""
    from llm_decode import speed_rows as decode_speed_rows

    return [Row(*cells) for cells in decode_speed_rows(dtype=args.dtype, layers=args.speed_layers)]


def token2wav_rows(args: argparse.Namespace) -> list[Row]:
    """The CosyVoice decoder's cuda-graphs engine against eager on the same official-size modules (bf16)."""
    import torch
    from token2wav import _decoders, _measure_offline

    with tempfile.TemporaryDirectory(prefix="stepaudio-t2w-") as tmp:
        eager, fast = _decoders("official", 10, torch.device("cuda"), "cuda-graphs", Path(tmp))
        _measure_offline(eager, fast, 2.0, 3.0, 1)  # warm-up: captures the graphs of these shapes
        result = _measure_offline(eager, fast, 10.0, 3.0, 3)
    return [
        Row(
            "token2wav: cuda-graphs vs eager",
            "official size, 10 s tokens, 3 s prompt, 10 Euler steps, bf16",
            f"RTF {result['fast_s'] / result['audio_s']:.4f} vs {result['eager_s'] / result['audio_s']:.4f} "
            f"({result['speedup']:.2f}x), wav rel diff {result['wav_rel']:.1e}",
            _pass(result["speedup"] >= 1.0 and result["wav_rel"] < 5e-2),
        )
    ]


def _pass(ok: bool) -> str:
    return "ok" if ok else "FAIL"


#: The checks, run in this order; each returns its table rows.
CHECKS: list[Callable[[argparse.Namespace], list[Row]]] = [logits_rows, quantized_rows, speed_rows, token2wav_rows]


def print_table(rows: list[Row]) -> None:
    """One fixed-width table of all rows."""
    header = Row("check", "setting", "result", "verdict")
    columns = list(zip(*[(r.check, r.setting, r.result, r.verdict) for r in [header, *rows]], strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    for index, row in enumerate([header, *rows]):
        cells = (row.check, row.setting, row.result, row.verdict)
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16", help="model dtype on both engines"
    )
    parser.add_argument("--prompt-tokens", type=int, default=300, help="prompt length (text then audio ids)")
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy tokens generated per engine")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixture weights and the prompt")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3, help="share of the GPU vLLM may take")
    parser.add_argument("--quantized-layers", type=int, default=4, help="decoder layers of the quantized-load model")
    parser.add_argument("--speed-layers", type=int, default=None, help="TTS-3B layers in the speed rows (all: 32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = requirements_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    rows: list[Row] = []
    for check in CHECKS:
        rows.extend(check(args))
    print_table(rows)
    return 0 if all(row.verdict == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
