"""Quantized loading of Step-1 (bitsandbytes int8 / int4) against the unquantized load, side by side.

Builds a mid-size random Step-1 checkpoint in the official sharded layout (bf16 shards, a few hundred
MB), then loads it in a fresh subprocess per method (unquantized, int8, int4), so that each reports its
own peak resident set (``VmHWM``, the per-process ``ru_maxrss``).  Printed per method: peak RSS, RSS
growth during the load, the bytes of the loaded weights, the load time, logit agreement with the
unquantized model on one prompt (max |diff|, min / mean per-position cosine, top-1 agreement) and the
greedy decode speed.  Then the projected weight memory of the official Step-Audio-Chat and
Step-Audio-TTS-3B configs in bf16 / int8 / int4 against the goals (Chat int4 on one 80 GB GPU, TTS-3B
under 4 GB).

    python benchmarks/quantization.py                 # CPU, float32 compute
    python benchmarks/quantization.py --device cuda --dtype bfloat16

:func:`quantized_rows` is the GPU check that ``benchmarks/gpu_checks.py`` imports: TTS-3B layer geometry,
loaded unquantized / int8 / int4 on one device, agreement and decode speed per method.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stepaudio.llm import STEP_AUDIO_CHAT_CONFIG, STEP_AUDIO_TTS_3B_CONFIG, Step1Config, Step1ForCausalLM
from stepaudio.llm.checkpoint import checkpoint_shard_files
from stepaudio.llm.quantization import model_weight_bytes, projected_weight_bytes
from stepaudio.testing.llm_fixture import write_step1_checkpoint

METHODS = (None, "int8", "int4")
#: The mid-size fixture: TTS-3B's proportions at a third of its width, 12 layers, a small vocabulary so
#: the decoder layers (what gets quantized) hold 95 % of the weights.  ~300 M parameters, ~600 MB in bf16.
MID_SIZE_DIMENSIONS = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_attention_heads": 16,
    "num_attention_groups": 4,
    "num_hidden_layers": 24,
    "vocab_size": 16384,
    "max_seq_len": 4096,
}
PROMPT_LENGTH = 64
DECODE_TOKENS = 16
GIB = 2**30
MIB = 2**20


def build_random_step1(folder: Path, dimensions: dict, num_shards: int, seed: int = 0) -> Path:
    """Write a random Step-1 checkpoint with ``dimensions`` as ``num_shards`` bf16 shards (official layout)."""
    config_dict = {**STEP_AUDIO_TTS_3B_CONFIG, **dimensions}
    config_dict.pop("auto_map", None)
    torch.manual_seed(seed)
    model = Step1ForCausalLM(Step1Config(**config_dict)).to(torch.bfloat16)
    with torch.no_grad():  # perturb the norms so they matter, as the tiny fixtures do
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.add_(0.1 * torch.randn_like(parameter))
        model.lm_head.weight.mul_(8.0)  # sharper logits than a 0.02-std head, so top-1 is not a coin toss
    write_step1_checkpoint(folder, model.state_dict(), config_dict, num_shards=num_shards)
    return folder


def _prompt(vocab_size: int) -> torch.Tensor:
    return torch.randint(3, vocab_size, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(1))


def peak_rss_bytes() -> int:
    """Peak resident set of this process: ``VmHWM`` on Linux (reset at exec, unlike ``ru_maxrss``, which a
    child started with fork + exec inherits from its parent), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure_load(folder: Path, method: str | None, dtype: torch.dtype, device: str) -> tuple[dict, torch.Tensor]:
    """Load ``folder`` with ``method`` and measure it; returns the numbers and the prompt's logits (CPU, fp32)."""
    rss_before = peak_rss_bytes()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if method is None:
        model = Step1ForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device)
    else:
        model = Step1ForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device, quantization=method)
    load_s = time.perf_counter() - start
    rss_after = peak_rss_bytes()
    # Before any forward: on AVX512-BF16 CPUs bitsandbytes repacks 4-bit weights (and their scales) at the first one.
    weight_bytes = model_weight_bytes(model)
    ids = _prompt(model.config.vocab_size).to(device)
    with torch.no_grad():
        logits = model(ids).logits[0].float().cpu()
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        decode_s = time.perf_counter() - start
    row = {
        "method": method or "unquantized",
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "weight_bytes": weight_bytes,
        "projected_bytes": projected_weight_bytes(model.config, method, dtype=dtype),
        "load_s": load_s,
        "peak_rss": rss_after,
        "load_rss_growth": rss_after - rss_before,
        "decode_tok_s": DECODE_TOKENS / decode_s,
    }
    if device.startswith("cuda"):
        row["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return row, logits


def agreement(reference: torch.Tensor, logits: torch.Tensor) -> dict:
    """Max |diff|, min / mean per-position cosine and top-1 agreement of two ``[positions, vocab]`` logits."""
    cosine = F.cosine_similarity(reference, logits, dim=-1)
    return {
        "max_abs_diff": (reference - logits).abs().max().item(),
        "min_cosine": cosine.min().item(),
        "mean_cosine": cosine.mean().item(),
        "top1": (reference.argmax(-1) == logits.argmax(-1)).float().mean().item(),
    }


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    method = None if args.child_method == "none" else args.child_method
    row, logits = measure_load(Path(args.child), method, getattr(torch, args.dtype), args.device)
    torch.save(logits, args.child_out + ".pt")
    Path(args.child_out + ".json").write_text(json.dumps(row), encoding="utf-8")


def _print_loads(rows: list[dict], largest_shard: int, total: int, shards: int) -> None:
    print(f"\nfixture: {shards} bf16 shards, {total / MIB:.0f} MiB in all, largest shard {largest_shard / MIB:.0f} MiB")
    header = (
        f"{'method':<12}{'weights MiB':>12}{'peak RSS MiB':>14}{'load RSS +MiB':>15}{'load s':>8}"
        f"{'max|diff|':>11}{'min cos':>10}{'mean cos':>10}{'top-1':>7}{'decode tok/s':>14}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['method']:<12}{row['weight_bytes'] / MIB:>12.1f}{row['peak_rss'] / MIB:>14.0f}"
            f"{row['load_rss_growth'] / MIB:>15.0f}{row['load_s']:>8.2f}{row['max_abs_diff']:>11.4f}"
            f"{row['min_cosine']:>10.5f}{row['mean_cosine']:>10.5f}{row['top1']:>7.3f}{row['decode_tok_s']:>14.1f}"
        )
    base = rows[0]
    for row in rows[1:]:
        print(
            f"{row['method']}: weights x{base['weight_bytes'] / row['weight_bytes']:.2f} smaller, peak RSS "
            f"x{base['peak_rss'] / row['peak_rss']:.2f} lower, decode x{row['decode_tok_s'] / base['decode_tok_s']:.2f}"
            " the unquantized speed"
        )


def print_projections() -> None:
    """Projected weight memory of the official configs, against the goals."""
    print("\nprojected weight memory of the official configs (embeddings, lm_head and norms stay bf16):")
    header = f"{'model':<20}{'params':>9}{'bf16 GiB':>10}{'int8 GiB':>10}{'int4 GiB':>10}{'int4 g128 GiB':>15}  goal"
    print(header)
    print("-" * (len(header) + 30))
    for name, config, goal_gib, goal in (
        ("Step-Audio-Chat", STEP_AUDIO_CHAT_CONFIG, 80e9 / GIB, "int4 on one 80 GB GPU"),
        ("Step-Audio-TTS-3B", STEP_AUDIO_TTS_3B_CONFIG, 4e9 / GIB, "under 4 GB"),
    ):
        config_obj = Step1Config(**{k: v for k, v in config.items() if k != "auto_map"})
        params = projected_weight_bytes(config_obj, None, dtype=torch.float32) // 4
        sizes = [
            projected_weight_bytes(config_obj, None) / GIB,
            projected_weight_bytes(config_obj, "int8") / GIB,
            projected_weight_bytes(config_obj, "int4") / GIB,
            projected_weight_bytes(config_obj, "int4", group_size=128) / GIB,
        ]
        verdict = "met" if sizes[2] < goal_gib else "NOT met"
        print(
            f"{name:<20}{params / 1e9:>8.2f}B{sizes[0]:>10.1f}{sizes[1]:>10.1f}{sizes[2]:>10.1f}{sizes[3]:>15.1f}"
            f"  {goal} ({goal_gib:.1f} GiB): {verdict}"
        )


def quantized_rows(
    device: str = "cuda", dtype: torch.dtype = torch.bfloat16, layers: int = 4, folder: Path | None = None
) -> list[dict]:
    """GPU check for ``benchmarks/gpu_checks.py``: a TTS-3B-shaped random Step-1 (``layers`` decoder layers,
    full width and vocabulary) loaded unquantized, int8 and int4 onto ``device``, in this process.

    Returns one dict per method: ``method``, ``dtype``, ``device``, ``weight_bytes`` (and ``projected_bytes``,
    which must be equal), ``load_s``, ``peak_cuda_bytes`` (CUDA only), ``decode_tok_s`` and the agreement
    with the unquantized load (``max_abs_diff``, ``min_cosine``, ``mean_cosine``, ``top1``).
    """
    with tempfile.TemporaryDirectory(prefix="stepaudio-quant-") as tmp:
        if folder is None:
            dims = {key: STEP_AUDIO_TTS_3B_CONFIG[key] for key in MID_SIZE_DIMENSIONS if key != "num_hidden_layers"}
            folder = build_random_step1(Path(tmp) / "tts3b-shaped", {**dims, "num_hidden_layers": layers}, 2)
        rows, reference = [], None
        for method in METHODS:
            row, logits = measure_load(folder, method, dtype, device)
            reference = logits if reference is None else reference
            row.update(agreement(reference, logits))
            rows.append(row)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--folder", type=Path, help="an existing Step-1 folder instead of the random fixture")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-method", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    with tempfile.TemporaryDirectory(prefix="stepaudio-quant-") as tmp:
        folder = args.folder
        if folder is None:
            start = time.perf_counter()
            folder = build_random_step1(Path(tmp) / "mid-size", MID_SIZE_DIMENSIONS, args.shards)
            print(f"built the mid-size random fixture in {time.perf_counter() - start:.1f} s")
        shards = checkpoint_shard_files(folder)
        sizes = [shard.stat().st_size for shard in shards]
        rows, reference = [], None
        for method in METHODS:
            out = str(Path(tmp) / f"result-{method}")
            command = [sys.executable, __file__, "--child", str(folder), "--child-method", method or "none"]
            command += ["--child-out", out, "--device", args.device, "--dtype", args.dtype]
            command += ["--threads", str(args.threads)]
            subprocess.run(command, check=True)
            row = json.loads(Path(out + ".json").read_text(encoding="utf-8"))
            logits = torch.load(out + ".pt")
            reference = logits if reference is None else reference
            row.update(agreement(reference, logits))
            rows.append(row)
        print(f"\ndevice {args.device}, {args.dtype} compute, {args.threads} threads, {PROMPT_LENGTH}-token prompt")
        _print_loads(rows, max(sizes), sum(sizes), len(shards))
    print_projections()


if __name__ == "__main__":
    main()
