"""Benchmark the Step-Audio tokenizer: offline real-time factor and streaming per-chunk latency.

Usage::

    python benchmarks/tokenizer.py                      # tiny random fixture folder (built in a temp dir)
    python benchmarks/tokenizer.py --model-path DIR     # a real Step-Audio-Tokenizer folder

The long input is the real speech of ``../shared/audio`` (next to the project checkout) concatenated
until it lasts at least ``--seconds`` (default 60).  Streaming latency is the mean wall time of one
``feed`` call over the chunks that fall in the 1st, 10th and 50th second of the input (median over
``--repeats`` runs); the check is that the 50th second is at most 1.5x slower than the 1st, i.e. that
per-chunk work does not grow with how much audio came before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO_DIR = PROJECT_ROOT.parent / "shared" / "audio"
CLIPS = (
    "BAC009S0764W0121.wav",
    "BAC009S0764W0122.wav",
    "speakers/Tingting_prompt.wav",
    "prompt_wav_yuqian.wav",
    "piper_en_22k.wav",
    "speakers/TingtingRAP_prompt.wav",
)
MEASURED_SECONDS = (1, 10, 50)
MAX_SLOWDOWN = 1.5


def long_speech(audio_dir: Path, seconds: float) -> np.ndarray:
    """Concatenate the shared clips (mono, 16 kHz) until the result lasts ``seconds``."""
    from stepaudio.audio import load_audio, resample, to_mono

    clips = []
    for name in CLIPS:
        wav, sr = load_audio(audio_dir / name)
        clips.append(resample(to_mono(wav), sr, 16000))
    pieces, total = [], 0
    while total < seconds * 16000:
        for clip in clips:
            pieces.append(clip)
            total += len(clip)
    return np.concatenate(pieces)[: int(seconds * 16000)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-path", type=Path, default=None, help="Step-Audio-Tokenizer folder (default: tiny fixture)"
    )
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR, help="folder of the shared speech clips")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the long input (>= 51)")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="streaming chunk length in ms")
    parser.add_argument("--repeats", type=int, default=3, help="streaming runs; the median per second is reported")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the tiny fixture's ops are too small to gain from more, and "
        "OpenMP barriers on a busy machine make them much slower)",
    )
    args = parser.parse_args()
    if args.seconds < max(MEASURED_SECONDS) + 1:
        parser.error(f"--seconds must be at least {max(MEASURED_SECONDS) + 1}")

    import torch
    from common import tokenizer_folder

    from stepaudio import ModelSettings
    from stepaudio.assembly import load_tokenizer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = tokenizer_folder(args.model_path, Path(tmp))
        start = time.perf_counter()
        tokenizer = load_tokenizer(model_path, ModelSettings(device=args.device))
        print(
            f"loaded {model_path} in {time.perf_counter() - start:.1f} s "
            f"(device {args.device}, {args.threads} torch thread(s))"
        )

        audio = long_speech(args.audio_dir, args.seconds)
        duration = len(audio) / 16000
        tokenizer.wav2token(audio[:32000], 16000, enable_trim=False)  # warm-up
        start = time.perf_counter()
        ids, vq02, vq06 = tokenizer.wav2token(audio, 16000, enable_trim=False)
        offline_s = time.perf_counter() - start
        print(
            f"offline: {duration:.1f} s of audio in {offline_s:.2f} s -> RTF {offline_s / duration:.4f} "
            f"({len(ids)} ids, {len(vq02)} vq02, {len(vq06)} vq06)"
        )

        # vq02 of 16 clips of 4 s: one clip at a time vs batch_wav2token's batched encoder (same codes).
        clips = [audio[i * 64000 : (i + 1) * 64000] for i in range(min(16, len(audio) // 64000))]
        start = time.perf_counter()
        one_by_one = [tokenizer.linguistic.encode(clip) for clip in clips]
        sequential_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = tokenizer.linguistic.encode_batch(clips)
        batched_s = time.perf_counter() - start
        print(
            f"vq02 of {len(clips)} clips x 4 s: one at a time {sequential_s:.2f} s, batched {batched_s:.2f} s "
            f"({sequential_s / batched_s:.2f}x; codes {'identical' if batched == one_by_one else 'DIFFER'})"
        )

        chunk = int(args.chunk_ms * 16)
        per_second: dict[int, list[float]] = {s: [] for s in MEASURED_SECONDS}
        for _ in range(args.repeats):
            session = tokenizer.stream(16000)
            times: dict[int, list[float]] = {s: [] for s in MEASURED_SECONDS}
            for position in range(0, len(audio), chunk):
                piece = audio[position : position + chunk]
                start = time.perf_counter()
                session.feed(piece)
                elapsed = time.perf_counter() - start
                second = position // 16000 + 1
                if second in times:
                    times[second].append(elapsed)
            session.close()
            for second, values in times.items():
                per_second[second].append(statistics.mean(values))
        latency = {s: statistics.median(v) * 1000 for s, v in per_second.items()}
        for second in MEASURED_SECONDS:
            print(
                f"streaming: mean feed latency in second {second:>2}: "
                f"{latency[second]:.2f} ms per {args.chunk_ms:.0f} ms chunk"
            )
        ratio = latency[MEASURED_SECONDS[-1]] / latency[MEASURED_SECONDS[0]]
        steady = latency[MEASURED_SECONDS[-1]] / latency[MEASURED_SECONDS[1]]
        verdict = "OK" if ratio <= MAX_SLOWDOWN else "ABOVE LIMIT"
        print(
            f"streaming: second {MEASURED_SECONDS[-1]} / second {MEASURED_SECONDS[0]} latency ratio {ratio:.2f} "
            f"(limit {MAX_SLOWDOWN}) {verdict}"
        )
        # In the 1st second no vq06 code has its right context yet, so those chunks run vq02 only;
        # second 10 vs 50 compares chunks doing the same work at different amounts of history.
        print(
            f"streaming: second {MEASURED_SECONDS[-1]} / second {MEASURED_SECONDS[1]} latency ratio {steady:.2f} "
            f"(steady state; {'OK' if steady <= MAX_SLOWDOWN else 'ABOVE LIMIT'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
