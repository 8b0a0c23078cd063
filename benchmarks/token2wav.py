"""Benchmark of the CosyVoice-25Hz token-to-waveform decoder: offline RTF, streaming first-chunk latency and RTF.

Random weights (speed does not depend on them); the tiny architecture is the test fixture's, the
official one is built from the CosyVoice-300M-25Hz hyper-parameters (105.4M-parameter flow, 20.5M HiFT).
Tokens arrive instantly, so the streaming first-chunk latency is pure compute: the time until the
first audio chunk comes out of ``token_to_wav_stream``.

    python benchmarks/token2wav.py        # default: tiny (10 Euler steps) + official (2 steps on CPU), 2/10/30 s
    python benchmarks/token2wav.py --sizes official --seconds 2,10 --official-steps 10   # the upstream step count

The default official-size run on a CPU uses 2 Euler steps instead of the upstream 10 so that the
whole run stays around two minutes on 2 cores; the flow cost scales linearly with the steps, the
``steps`` column says what each row used, and ``--official-steps 10`` gives the upstream setting.

Target: first streamed chunk <= 25% of the offline latency for 10 s of tokens.
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


def _official_decoder(steps: int, device: torch.device) -> CosyVoiceDecoder:
    """Official-size modules with random weights (no files needed), float32 on CPU / bf16 on CUDA."""
    torch.manual_seed(0)
    built = build_from_recipe(parse_recipe(recipe_text(OFFICIAL_HPARAMS, label="official size")))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return CosyVoiceDecoder(built.flow, built.hift, MelSpectrogramConfig(), None, device, dtype, n_timesteps=steps)


def _tiny_decoder(steps: int, device: torch.device, folder: Path) -> CosyVoiceDecoder:
    build_tiny_cosyvoice_folder(folder)
    return CosyVoiceDecoder.from_pretrained(folder, device=device, n_timesteps=steps)


def _measure(decoder: CosyVoiceDecoder, seconds: float, prompt_seconds: float, config: StreamingConfig
             ) -> dict[str, float]:
    generator = torch.Generator().manual_seed(1)
    num_tokens = int(round(seconds * TOKEN_RATE))
    num_prompt_tokens = int(round(prompt_seconds * TOKEN_RATE))
    prompt_frames = int(prompt_seconds * SAMPLE_RATE / 256)
    tokens = torch.randint(0, 5120, (1, num_tokens), generator=generator)
    prompt_tokens = torch.randint(0, 5120, (1, num_prompt_tokens), generator=generator)
    prompt_mel = torch.randn(1, prompt_frames, 80, generator=generator) - 5
    embedding = torch.randn(1, 192, generator=generator)
    args = (prompt_mel, torch.tensor([prompt_frames], dtype=torch.int32), prompt_tokens,
            torch.tensor([num_prompt_tokens]), embedding)

    start = time.perf_counter()
    waveform = decoder.token_to_wav_offline(tokens, *args)
    offline = time.perf_counter() - start
    audio_seconds = waveform.shape[1] / SAMPLE_RATE

    start = time.perf_counter()
    first_chunk = None
    samples = 0
    for chunk in decoder.token_to_wav_stream(tokens[0].tolist(), *args, config=config):
        if first_chunk is None:
            first_chunk = time.perf_counter() - start
        samples += chunk.shape[1]
    streamed = time.perf_counter() - start
    assert samples == waveform.shape[1], "streamed and offline lengths differ"
    return {"audio_s": audio_seconds, "offline_s": offline, "offline_rtf": offline / audio_seconds,
            "first_chunk_s": first_chunk or 0.0, "first_over_offline": (first_chunk or 0.0) / offline,
            "stream_s": streamed, "stream_rtf": streamed / audio_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,official", help="comma list of tiny, official")
    parser.add_argument("--seconds", default="2,10,30", help="comma list of token durations in seconds")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps of the tiny flow (upstream: 10)")
    parser.add_argument("--official-steps", type=int, default=0,
                        help="Euler steps of the official-size flow (0: 10 on CUDA, 2 on CPU)")
    parser.add_argument("--prompt-seconds", type=float, default=3.0, help="length of the (random) prompt")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args(argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    config = StreamingConfig()
    durations = [float(s) for s in options.seconds.split(",") if s]
    official_steps = options.official_steps or (10 if device.type == "cuda" else 2)
    print(f"device={device} threads={torch.get_num_threads()} "
          f"prompt={options.prompt_seconds:g}s stream: first={config.first_chunk_tokens} chunk={config.chunk_tokens} "
          f"(x{config.chunk_growth:g} up to {config.max_chunk_tokens}) lookahead={config.lookahead_tokens} "
          f"left_context={config.left_context_tokens} tokens")
    print(f"{'size':8s} {'steps':>5s} {'tokens_s':>8s} {'offline_s':>9s} {'off_RTF':>7s} {'first_s':>7s} "
          f"{'first/off':>9s} "
          f"{'stream_s':>8s} {'str_RTF':>7s}")
    with tempfile.TemporaryDirectory() as scratch:
        for size in [s for s in options.sizes.split(",") if s]:
            if size == "tiny":
                steps = options.steps
                decoder = _tiny_decoder(steps, device, Path(scratch) / "CosyVoice-300M-25Hz")
            elif size == "official":
                steps = official_steps
                decoder = _official_decoder(steps, device)
            else:
                parser.error(f"unknown size {size!r}; use tiny or official")
            _measure(decoder, 1.0, options.prompt_seconds, config)  # warm-up
            for seconds in durations:
                r = _measure(decoder, seconds, options.prompt_seconds, config)
                print(f"{size:8s} {steps:5d} {seconds:8.0f} {r['offline_s']:9.2f} {r['offline_rtf']:7.3f} "
                      f"{r['first_chunk_s']:7.2f} {r['first_over_offline']:9.1%} {r['stream_s']:8.2f} "
                      f"{r['stream_rtf']:7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
