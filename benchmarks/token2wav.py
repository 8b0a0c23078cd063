"""Benchmark of the CosyVoice-25Hz token-to-waveform decoder: fast engine vs eager, offline and streaming.

Random weights (speed does not depend on them); the tiny architecture is the test fixture's, the
official one is built from the CosyVoice-300M-25Hz hyper-parameters (105.4M-parameter flow, 20.5M HiFT).
Both engines share the same modules and run side by side in one process (alternating repeats, the
best repeat counts), so the ratio is not skewed by other load on the machine.

Offline table: seconds and RTF of the eager reference and of the default engine (``auto``: ONNX Runtime
on CPU, CUDA graphs on CUDA), the speed-up ``eager / fast`` and the largest differences
``max |fast - eager| / max |eager|`` of the mel and of the waveform.

Streaming table (default engine): first-chunk latency, streaming RTF against the offline RTF of the same
engine, and the cost of flow windows at the start vs late in the utterance (seconds per window and per
second of committed audio), which shows whether the per-window cost stays bounded.

    python benchmarks/token2wav.py --sizes official --seconds 10 --official-steps 10 --threads 2
    python benchmarks/token2wav.py --sizes official --seconds 10 --stream-seconds 30 --official-steps 10

Tokens arrive instantly, so the streaming first-chunk latency is pure compute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stepaudio.cosyvoice import CosyVoiceDecoder, StreamingConfig  # noqa: E402
from stepaudio.cosyvoice.builder import build_from_recipe  # noqa: E402
from stepaudio.cosyvoice.config import parse_recipe  # noqa: E402
from stepaudio.cosyvoice.frontend import MelSpectrogramConfig  # noqa: E402
from stepaudio.testing.cosyvoice_fixture import (  # noqa: E402
    OFFICIAL_HPARAMS,
    build_tiny_cosyvoice_folder,
    recipe_text,
)

TOKEN_RATE = 41.6666666667
SAMPLE_RATE = 22050


def _decoders(
    size: str, steps: int, device: torch.device, engine: str, scratch: Path
) -> tuple[CosyVoiceDecoder, CosyVoiceDecoder]:
    """(eager reference, ``engine``) decoders sharing one set of random-weight modules."""
    torch.manual_seed(0)
    if size == "tiny":
        build_tiny_cosyvoice_folder(scratch / "CosyVoice-300M-25Hz")
        eager = CosyVoiceDecoder.from_pretrained(
            scratch / "CosyVoice-300M-25Hz", device=device, n_timesteps=steps, engine="eager"
        )
        flow, hift, mel_config = eager.flow, eager.hift, eager.mel_config
    else:
        built = build_from_recipe(parse_recipe(recipe_text(OFFICIAL_HPARAMS, label="official size")))
        flow, hift, mel_config = built.flow, built.hift, MelSpectrogramConfig()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    eager = CosyVoiceDecoder(flow, hift, mel_config, None, device, dtype, n_timesteps=steps, engine="eager")
    start = time.perf_counter()
    fast = CosyVoiceDecoder(flow, hift, mel_config, None, device, dtype, n_timesteps=steps, engine=engine)
    fast.runtime  # noqa: B018 - prepares the engine (ONNX export + sessions) now, to time it
    print(f"[{size}] engine {fast.engine!r} prepared in {time.perf_counter() - start:.1f} s", flush=True)
    return eager, fast


def _inputs(seconds: float, prompt_seconds: float) -> tuple[torch.Tensor, tuple]:
    generator = torch.Generator().manual_seed(1)
    num_tokens = int(round(seconds * TOKEN_RATE))
    num_prompt_tokens = int(round(prompt_seconds * TOKEN_RATE))
    prompt_frames = int(prompt_seconds * SAMPLE_RATE / 256)
    tokens = torch.randint(0, 5120, (1, num_tokens), generator=generator)
    prompt_tokens = torch.randint(0, 5120, (1, num_prompt_tokens), generator=generator)
    prompt_mel = torch.randn(1, prompt_frames, 80, generator=generator) - 5
    embedding = torch.randn(1, 192, generator=generator)
    return tokens, (
        prompt_mel,
        torch.tensor([prompt_frames], dtype=torch.int32),
        prompt_tokens,
        torch.tensor([num_prompt_tokens]),
        embedding,
    )


def _offline(decoder: CosyVoiceDecoder, tokens: torch.Tensor, args: tuple) -> tuple[float, torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    mel = decoder.token_to_mel_offline(tokens, *args)
    waveform = decoder.mel_to_wav(mel)
    return time.perf_counter() - start, mel, waveform


def _relative(fast: torch.Tensor, reference: torch.Tensor) -> float:
    """max |fast - reference| / max |reference| (the equivalence metric of the engines)."""
    return float((fast - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


def _measure_offline(
    eager: CosyVoiceDecoder, fast: CosyVoiceDecoder, seconds: float, prompt_seconds: float, repeats: int
) -> dict[str, float]:
    tokens, args = _inputs(seconds, prompt_seconds)
    eager_times, fast_times = [], []
    for _ in range(repeats):  # alternate so that background load hits both alike
        seconds_eager, mel_eager, wav_eager = _offline(eager, tokens, args)
        seconds_fast, mel_fast, wav_fast = _offline(fast, tokens, args)
        eager_times.append(seconds_eager)
        fast_times.append(seconds_fast)
    audio = wav_eager.shape[1] / SAMPLE_RATE
    return {
        "audio_s": audio,
        "eager_s": min(eager_times),
        "fast_s": min(fast_times),
        "speedup": min(eager_times) / min(fast_times),
        "mel_rel": _relative(mel_fast, mel_eager),
        "wav_rel": _relative(wav_fast, wav_eager),
    }


def _measure_stream(
    decoder: CosyVoiceDecoder, seconds: float, prompt_seconds: float, config: StreamingConfig
) -> dict[str, float]:
    tokens, args = _inputs(seconds, prompt_seconds)
    start = time.perf_counter()
    mel = decoder.token_to_mel_offline(tokens, *args)
    offline_audio = decoder.mel_to_wav(mel)
    offline = time.perf_counter() - start
    audio = offline_audio.shape[1] / SAMPLE_RATE

    stream = decoder.stream(*args, config=config)
    windows: list[tuple[float, int]] = []  # (seconds, committed frames) per flow window
    run_window = stream._run_flow_window

    def timed_window(commit_to: int, final: bool) -> None:
        frames_before, began = stream.state.committed_frames, time.perf_counter()
        run_window(commit_to, final)
        windows.append((time.perf_counter() - began, stream.state.committed_frames - frames_before))

    stream._run_flow_window = timed_window  # type: ignore[method-assign]
    start = time.perf_counter()
    first_chunk = None
    samples = 0
    for token in tokens[0].tolist():
        chunk = stream.feed(token)
        if chunk.shape[1] and first_chunk is None:
            first_chunk = time.perf_counter() - start
        samples += chunk.shape[1]
    samples += stream.close().shape[1]
    streamed = time.perf_counter() - start
    assert samples == offline_audio.shape[1], "streamed and offline lengths differ"
    full = [w for w in windows[1:-1] if w[1]]  # steady windows (not the first, not the flush)
    early, late = full[:2], full[-2:]

    def per_window(group: list[tuple[float, int]]) -> tuple[float, float]:
        cost = sum(w[0] for w in group) / max(len(group), 1)
        audio_s = sum(w[1] for w in group) * 256 / SAMPLE_RATE
        return cost, sum(w[0] for w in group) / max(audio_s, 1e-9)

    return {
        "audio_s": audio,
        "offline_rtf": offline / audio,
        "first_s": first_chunk or 0.0,
        "stream_rtf": streamed / audio,
        "windows": len(windows),
        "early": per_window(early),
        "late": per_window(late),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,official", help="comma list of tiny, official")
    parser.add_argument("--seconds", default="10", help="comma list of token durations (offline table)")
    parser.add_argument("--stream-seconds", default="30", help="comma list of token durations (streaming table)")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps of the tiny flow (upstream: 10)")
    parser.add_argument(
        "--official-steps", type=int, default=0, help="Euler steps of the official-size flow (0: 10 on CUDA, 2 on CPU)"
    )
    parser.add_argument("--prompt-seconds", type=float, default=3.0, help="length of the (random) prompt")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of the offline comparison")
    parser.add_argument("--engine", default="auto", help="engine compared with eager (auto, onnxruntime, ...)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    config = StreamingConfig()
    official_steps = options.official_steps or (10 if device.type == "cuda" else 2)
    print(
        f"device={device} threads={torch.get_num_threads()} prompt={options.prompt_seconds:g}s "
        f"stream: first={config.first_chunk_tokens} chunk={config.chunk_tokens} (x{config.chunk_growth:g} up to "
        f"{config.max_chunk_tokens}) lookahead={config.lookahead_tokens} left_context={config.left_context_tokens}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for size in [s for s in options.sizes.split(",") if s]:
            if size not in ("tiny", "official"):
                parser.error(f"unknown size {size!r}; use tiny or official")
            steps = options.steps if size == "tiny" else official_steps
            eager, fast = _decoders(size, steps, device, options.engine, Path(scratch))
            _measure_offline(eager, fast, 1.0, options.prompt_seconds, 1)  # warm-up
            print(
                f"{'size':8s} {'steps':>5s} {'tokens_s':>8s} {'eager_s':>8s} {'eager_RTF':>9s} {'fast_s':>7s} "
                f"{'fast_RTF':>8s} {'speedup':>7s} {'mel_rel':>8s} {'wav_rel':>8s}"
            )
            for seconds in [float(s) for s in options.seconds.split(",") if s]:
                r = _measure_offline(eager, fast, seconds, options.prompt_seconds, options.repeats)
                print(
                    f"{size:8s} {steps:5d} {seconds:8.0f} {r['eager_s']:8.2f} {r['eager_s'] / r['audio_s']:9.3f} "
                    f"{r['fast_s']:7.2f} {r['fast_s'] / r['audio_s']:8.3f} {r['speedup']:6.2f}x "
                    f"{r['mel_rel']:8.1e} {r['wav_rel']:8.1e}",
                    flush=True,
                )
            print(
                f"{'size':8s} {'engine':>11s} {'tokens_s':>8s} {'first_s':>7s} {'off_RTF':>7s} {'str_RTF':>7s} "
                f"{'windows':>7s} {'early_win_s':>11s} {'early_s/s':>9s} {'late_win_s':>10s} {'late_s/s':>8s}"
            )
            for seconds in [float(s) for s in options.stream_seconds.split(",") if s]:
                r = _measure_stream(fast, seconds, options.prompt_seconds, config)
                print(
                    f"{size:8s} {fast.engine:>11s} {seconds:8.0f} {r['first_s']:7.2f} {r['offline_rtf']:7.3f} "
                    f"{r['stream_rtf']:7.3f} {r['windows']:7d} {r['early'][0]:11.2f} {r['early'][1]:9.3f} "
                    f"{r['late'][0]:10.2f} {r['late'][1]:8.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
