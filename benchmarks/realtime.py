"""Benchmark the realtime voice layer: first-audio latency with and without speculation, concurrency.

Usage::

    python benchmarks/realtime.py                       # tiny random fixture models (built in a temp dir)
    python benchmarks/realtime.py --model-path DIR      # real Step-Audio folders (+ DIR/speakers)

Every session plays the same scripted conversation in real time: per turn, the first part of an
AISHELL utterance, a 0.35 s hesitation (long enough to start a speculative reply, short enough not
to end the turn), the rest of the utterance, then silence while the reply plays.  Speech boundaries
come from a :class:`~stepaudio.realtime.ScriptedVAD`, so every run sees the same turns.  Reported:

* end-of-speech -> first reply audio (median over turns) with vs. without speculative replies, and
  their ratio;
* the speculative commit rate (committed / started);
* the same latency with 1, 4 and 8 concurrent sessions sharing the models through one worker queue.

Fixture models are random and tiny: absolute numbers only show the overhead of the machinery; the
ratio and the trend over concurrency are the point.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO_DIR = PROJECT_ROOT.parent / "shared" / "audio"
CLIPS = ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav")
SAMPLE_RATE = 16000
FRAME = 512


def conversation(audio_dir: Path, turns: int, reply_silence_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Audio and speech intervals of the scripted conversation."""
    import soundfile

    pieces: list[np.ndarray] = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
    speech: list[tuple[float, float]] = []
    now = 0.3
    for turn in range(turns):
        clip, rate = soundfile.read(audio_dir / CLIPS[turn % len(CLIPS)], dtype="float32")
        assert rate == SAMPLE_RATE, f"{CLIPS[turn % len(CLIPS)]} should be 16 kHz"
        clip = clip[: int(2.4 * SAMPLE_RATE)]
        half = clip.shape[0] // 2
        for part, gap in ((clip[:half], 0.35), (clip[half:], reply_silence_s)):
            speech.append((now, now + part.shape[0] / SAMPLE_RATE))
            pieces += [part, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
            now += part.shape[0] / SAMPLE_RATE + gap
    return np.concatenate(pieces), speech


def run_session(pipeline, workers, config, audio: np.ndarray, speech, results: list, lock: threading.Lock) -> None:
    from stepaudio.realtime import ScriptedVAD, TurnController, TurnMetrics

    metrics: list = []
    controller = TurnController(
        pipeline,
        config,
        ScriptedVAD(speech),
        workers,
        lambda e: metrics.append(e) if isinstance(e, TurnMetrics) else None,
    )
    frames = [audio[i : i + FRAME] for i in range(0, audio.shape[0] // FRAME * FRAME, FRAME)]
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        delay = start + index * FRAME / SAMPLE_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        controller.process_frame(frame)
    controller.close()
    with lock:
        results.append((metrics, controller.counters))


def run_sessions(pipeline, config, sessions: int, workers_count: int, audio, speech) -> dict:
    from stepaudio.realtime import ModelWorkers

    workers = ModelWorkers(workers_count)
    results: list = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=run_session, args=(pipeline, workers, config, audio, speech, results, lock))
        for _ in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    workers.shutdown()
    latencies = [
        m.end_of_speech_to_first_audio_s
        for metrics, _ in results
        for m in metrics
        if m.end_of_speech_to_first_audio_s is not None
    ]
    started = sum(counters.speculative_started for _, counters in results)
    committed = sum(counters.speculative_committed for _, counters in results)
    return {
        "median_s": statistics.median(latencies) if latencies else float("nan"),
        "p90_s": float(np.percentile(latencies, 90)) if latencies else float("nan"),
        "replies": len(latencies),
        "commit_rate": committed / started if started else float("nan"),
        "started": started,
        "committed": committed,
        "barge_ins": sum(counters.barge_ins for _, counters in results),
    }


def load_pipeline(model_path: str | None, tmp: Path):
    from stepaudio import StepAudio

    if model_path is None:
        from stepaudio.testing import build_tiny_checkpoints

        folders = build_tiny_checkpoints(tmp / "fixtures")
        root, speakers = tmp / "fixtures", folders["speakers"]
    else:
        root, speakers = Path(model_path), Path(model_path) / "speakers"
    pipeline = StepAudio(root, root, root, speakers_dir=speakers)
    return pipeline, model_path is None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="folder with the three official model folders")
    parser.add_argument("--audio-dir", default=str(DEFAULT_AUDIO_DIR), help="the shared speech clips")
    parser.add_argument("--turns", type=int, default=3, help="user turns per session (default 3)")
    parser.add_argument("--concurrency", default="1,4,8", help="concurrent session counts (default 1,4,8)")
    parser.add_argument("--workers", type=int, default=1, help="model jobs at once across sessions (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply length (default 16: fixture)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()

    import torch

    from stepaudio.realtime import RealtimeConfig

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, fixture = load_pipeline(args.model_path, Path(tmp))
        if fixture:
            pipeline.decoder.max_speech_seconds = 0.6  # the random TTS model rarely stops by itself
        audio, speech = conversation(Path(args.audio_dir), args.turns, reply_silence_s=3.0)
        base = dict(max_new_tokens=args.max_new_tokens, transcript_max_new_tokens=8, do_sample=False)
        print(f"scripted conversation: {args.turns} turns, {audio.shape[0] / SAMPLE_RATE:.1f} s of audio per session")
        print(f"models: {'tiny random fixtures' if fixture else args.model_path}; workers: {args.workers}\n")

        on = run_sessions(pipeline, RealtimeConfig(**base), 1, args.workers, audio, speech)
        off = run_sessions(pipeline, RealtimeConfig(speculative=False, **base), 1, args.workers, audio, speech)
        print("end of speech -> first audio, 1 session (median over turns)")
        print(
            f"  with speculation    {on['median_s'] * 1000:8.0f} ms   commit rate {on['commit_rate']:.2f} "
            f"({on['committed']}/{on['started']})"
        )
        print(f"  without speculation {off['median_s'] * 1000:8.0f} ms")
        print(f"  ratio with/without  {on['median_s'] / off['median_s']:8.2f}\n")

        print("concurrent sessions (speculation on):")
        print(f"  {'sessions':>8} {'median ms':>10} {'p90 ms':>8} {'replies':>8} {'commit':>7} {'barge-ins':>9}")
        for count in (int(c) for c in args.concurrency.split(",")):
            row = (
                on if count == 1 else run_sessions(pipeline, RealtimeConfig(**base), count, args.workers, audio, speech)
            )
            print(
                f"  {count:>8} {row['median_s'] * 1000:>10.0f} {row['p90_s'] * 1000:>8.0f} {row['replies']:>8} "
                f"{row['commit_rate']:>7.2f} {row['barge_ins']:>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
