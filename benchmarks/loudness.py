"""Loudness and the streaming tokenizer: ids of a quiet microphone, without and with causal gain, vs offline.

Usage::

    python benchmarks/loudness.py                       # tiny random fixture folder (built in a temp dir)
    python benchmarks/loudness.py --fixture-dir DIR     # a folder from `python -m stepaudio.testing DIR`,
                                                        # or a real Step-Audio-Tokenizer folder

Offline tokenization (``wav2token(..., energy_norm=True)``, what the chat model's prompts are made
of) scales a clip by ``0.999 / max(peak, 0.01)``; a stream cannot know the peak.  For each shared
clip of ``../shared/audio`` (resampled to 16 kHz, scaled to peaks 0.05, 0.3 and 1.0, after 0.3 s of
silence like a VAD pre-roll), fed in 32 ms chunks (512 samples) with ``semantic_right_context_s=0.3``
(the realtime default), the table gives the number of offline ids and how many ids differ from them
(position-wise over the common length, plus the length difference) for

* (a) the stream without gain,
* (b) the stream with ``causal_gain=True``,
* (c) offline re-tokenization of the finished turn (0 by construction, measured anyway),

and what (c) costs: the wall time of re-tokenizing the turn, in total and per second of audio,
beside the stream's own mean time per 32 ms chunk (b).  Fixture models are random and tiny: the
agreement percentages show how the normalisation behaves, not how a real checkpoint's codes do.
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
CLIPS = ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav", "piper_en_22k.wav", "prompt_wav_yuqian.wav")
PEAKS = (0.05, 0.3, 1.0)
SAMPLE_RATE = 16000
CHUNK = 512  # 32 ms, the realtime frame
PREROLL_S = 0.3
RIGHT_CONTEXT_S = 0.3


def load_clips(audio_dir: Path) -> dict[str, np.ndarray]:
    """The shared clips, mono, 16 kHz, scaled to peak 1; a clear error when one is missing."""
    from stepaudio.audio import load_audio, resample, to_mono

    missing = [name for name in CLIPS if not (audio_dir / name).is_file()]
    if missing:
        raise SystemExit(
            f"error: {', '.join(missing)} not found in {audio_dir}; the shared speech clips are expected in "
            "../shared/audio beside the project checkout (see its README.md), or pass --audio-dir"
        )
    clips = {}
    for name in CLIPS:
        wav, rate = load_audio(audio_dir / name)
        audio = resample(to_mono(wav), rate, SAMPLE_RATE)
        clips[name] = (audio / np.abs(audio).max()).astype(np.float32)
    return clips


def stream_ids(tokenizer, audio: np.ndarray, causal_gain: bool) -> tuple[list[int], list[float]]:
    """Ids of the turn fed in 32 ms chunks, and the wall seconds of each feed (the close included as the last)."""
    session = tokenizer.stream(SAMPLE_RATE, causal_gain=causal_gain, semantic_right_context_s=RIGHT_CONTEXT_S)
    ids: list[int] = []
    times = []
    for start in range(0, len(audio), CHUNK):
        began = time.perf_counter()
        ids += session.feed(audio[start : start + CHUNK])
        times.append(time.perf_counter() - began)
    began = time.perf_counter()
    ids += session.close()
    times.append(time.perf_counter() - began)
    return ids, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fixture-dir",
        type=Path,
        default=None,
        help="folder written by `python -m stepaudio.testing DIR` or a Step-Audio-Tokenizer folder "
        "(default: build the tiny fixture tokenizer in a temp dir)",
    )
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR, help="folder of the shared speech clips")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1, as benchmarks/tokenizer.py)"
    )
    args = parser.parse_args()

    import torch
    from common import tokenizer_folder

    from stepaudio import ModelSettings
    from stepaudio.assembly import load_tokenizer
    from stepaudio.tokenizer.interleave import compare_ids

    torch.set_num_threads(args.threads)
    clips = load_clips(args.audio_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = tokenizer_folder(args.fixture_dir, Path(tmp))
        tokenizer = load_tokenizer(model_path, ModelSettings(device=args.device))
        print(
            f"tokenizer {model_path} (device {args.device}, {args.threads} torch thread(s)); "
            f"{CHUNK}-sample ({CHUNK * 1000 // SAMPLE_RATE} ms) chunks, semantic_right_context_s={RIGHT_CONTEXT_S}, "
            f"{PREROLL_S} s of silence before each clip"
        )
        silence = np.zeros(int(PREROLL_S * SAMPLE_RATE), np.float32)
        tokenizer.wav2token(np.concatenate([silence, clips[CLIPS[0]]]), SAMPLE_RATE, enable_trim=False)  # warm-up

        header = (
            f"{'clip':<22} {'peak':>5} {'offline':>7} | {'(a) no gain':>12} {'(b) causal':>12} {'(c) retok':>12} | "
            f"{'retok ms':>8} {'ms/s audio':>10} | {'(b) ms/chunk':>12} {'max':>6} {'close':>6}"
        )
        print(header)
        print("-" * len(header))
        totals = {"a": [0, 0], "b": [0, 0], "c": [0, 0]}  # [agreeing ids, offline ids]
        retok_per_s, chunk_ms = [], []
        for name, clip in clips.items():
            for peak in PEAKS:
                audio = np.concatenate([silence, (clip * np.float32(peak)).astype(np.float32)])
                seconds = len(audio) / SAMPLE_RATE
                offline = tokenizer.wav2token(audio, SAMPLE_RATE, enable_trim=False, energy_norm=True)[0]
                plain, _ = stream_ids(tokenizer, audio, causal_gain=False)
                gained, times = stream_ids(tokenizer, audio, causal_gain=True)
                began = time.perf_counter()  # (c): the finished turn tokenized again, offline
                retokenized = tokenizer.wav2token(audio, SAMPLE_RATE, enable_trim=False, energy_norm=True)[0]
                retok_s = time.perf_counter() - began
                cells = []
                for key, ids in (("a", plain), ("b", gained), ("c", retokenized)):
                    wrong, extra = compare_ids(ids, offline)
                    totals[key][0] += min(len(ids), len(offline)) - wrong
                    totals[key][1] += len(offline)
                    cells.append(f"{wrong}{extra:+d} {100 * (1 - wrong / len(offline)):3.0f}%")
                feed_ms = [t * 1000 for t in times[:-1]]
                retok_per_s.append(retok_s * 1000 / seconds)
                chunk_ms.append(statistics.mean(feed_ms))
                print(
                    f"{name:<22} {peak:>5.2f} {len(offline):>7} | {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} | "
                    f"{retok_s * 1000:>8.1f} {retok_s * 1000 / seconds:>10.1f} | "
                    f"{statistics.mean(feed_ms):>12.2f} {max(feed_ms):>6.1f} {times[-1] * 1000:>6.1f}"
                )
        print("-" * len(header))
        print(
            "(a)-(c): ids differing from offline position-wise over the common length, then the length difference "
            "(+n: more ids), then the share of offline ids they agree with; ms/chunk, max, close: wall ms of the "
            "causal-gain stream's feed (mean, max over the 32 ms chunks) and close"
        )
        for key, label in (("a", "(a) stream, no gain"), ("b", "(b) stream, causal gain"), ("c", "(c) re-tokenized")):
            agree, total = totals[key]
            print(f"{label:<26} {agree}/{total} ids agree with offline energy_norm=True ({100 * agree / total:.1f}%)")
        print(
            f"(c) costs {statistics.mean(retok_per_s):.1f} ms per second of audio at the end of a turn (mean); "
            f"the stream spends {statistics.mean(chunk_ms):.2f} ms per 32 ms chunk while the user speaks "
            f"({statistics.mean(chunk_ms) / 32 * 1000:.1f} ms per second of audio)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
