"""Benchmark the realtime voice layer: first-audio latency with and without speculation, long talks, concurrency.

Usage::

    python benchmarks/realtime.py                       # tiny random fixture models (built in a temp dir)
    python benchmarks/realtime.py --model-path DIR      # real Step-Audio folders (+ DIR/speakers)

Every session is a :class:`~stepaudio.realtime.RealtimeSession` on its own threads (session loop,
tokenizer lane) sharing one model worker queue, fed a scripted conversation in real time: per turn,
the first part of an AISHELL utterance, a 0.35 s hesitation (long enough to start a speculative
reply, short enough not to end the turn), the rest of the utterance, then silence while the reply
plays.  Speech boundaries come from a :class:`~stepaudio.realtime.ScriptedVAD`, so every run sees
the same turns.  Reported:

* end of speech -> first reply audio (median over turns) with vs. without speculative replies, their
  ratio, and the speculative commit rate (committed / started);
* the cost of re-tokenizing each finished turn offline (``retokenize_turns``) and how many of the
  streamed ids it corrected;
* a long conversation (``--long-turns``, default 40) in which the user waits for each reply, with past
  turns kept as transcripts and, to make the model's limit bite, as audio ids: replies that failed
  (must be 0; the exit status says so), the largest prompt against the chat model's limit, evicted
  turns.  Its clock is the audio pushed, so it runs faster than real time;
* the latency with 1, 4 and 8 concurrent sessions.

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


def read_clip(audio_dir: Path, turn: int, seconds: float) -> np.ndarray:
    import soundfile

    name = CLIPS[turn % len(CLIPS)]
    path = audio_dir / name
    if not path.is_file():
        raise SystemExit(f"benchmarks/realtime.py: error: {path} is missing; pass --audio-dir (see ../shared/audio)")
    clip, rate = soundfile.read(path, dtype="float32")
    if rate != SAMPLE_RATE:
        raise SystemExit(f"benchmarks/realtime.py: error: {name} should be 16 kHz, it is {rate} Hz")
    return clip[: int(seconds * SAMPLE_RATE)]


def conversation(audio_dir: Path, turns: int, reply_silence_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Audio and speech intervals of the scripted conversation."""
    pieces: list[np.ndarray] = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)]
    speech: list[tuple[float, float]] = []
    now = 0.3
    for turn in range(turns):
        clip = read_clip(audio_dir, turn, 2.4)
        half = clip.shape[0] // 2
        for part, gap in ((clip[:half], 0.35), (clip[half:], reply_silence_s)):
            speech.append((now, now + part.shape[0] / SAMPLE_RATE))
            pieces += [part, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
            now += part.shape[0] / SAMPLE_RATE + gap
    return np.concatenate(pieces), speech


def wait_idle(session, timeout: float = 120.0) -> None:
    """Until the session is back in Silence with no work of its own left (the last reply has played)."""
    from stepaudio.realtime import ConversationState

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        session.wait_processed()
        if session.state is ConversationState.SILENCE and not session.controller.busy:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the session did not settle within {timeout} s (state {session.state})")


def run_session(pipeline, workers, config, audio: np.ndarray, speech, results: list, lock: threading.Lock) -> None:
    from stepaudio.realtime import RealtimeSession, ScriptedVAD

    session = RealtimeSession(pipeline, config, workers=workers, vad=ScriptedVAD(speech))
    start = time.perf_counter()
    for index, offset in enumerate(range(0, audio.shape[0] // FRAME * FRAME, FRAME)):
        delay = start + index * FRAME / SAMPLE_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        session.push_audio(audio[offset : offset + FRAME], SAMPLE_RATE)
    wait_idle(session)
    events = session.take_events()
    counters = session.controller.counters
    session.close()
    with lock:
        results.append((events, counters))


def run_sessions(pipeline, config, sessions: int, workers_count: int, audio, speech) -> dict:
    from stepaudio.realtime import ErrorEvent, ModelWorkers, TurnMetrics

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
    metrics = [event for events, _ in results for event in events if isinstance(event, TurnMetrics)]
    latencies = [m.end_of_speech_to_first_audio_s for m in metrics if m.end_of_speech_to_first_audio_s is not None]
    started = sum(counters.speculative_started for _, counters in results)
    committed = sum(counters.speculative_committed for _, counters in results)
    retokenize = [m.retokenize_s for m in metrics if m.retokenize_s is not None]
    differing = [m.streamed_ids_differing for m in metrics if m.streamed_ids_differing is not None]
    return {
        "median_s": statistics.median(latencies) if latencies else float("nan"),
        "p90_s": float(np.percentile(latencies, 90)) if latencies else float("nan"),
        "replies": len(latencies),
        "commit_rate": committed / started if started else float("nan"),
        "started": started,
        "committed": committed,
        "barge_ins": sum(counters.barge_ins for _, counters in results),
        "errors": sum(isinstance(event, ErrorEvent) for events, _ in results for event in events),
        "retokenize_ms": 1000 * statistics.median(retokenize) if retokenize else float("nan"),
        "ids_corrected": statistics.median(differing) if differing else float("nan"),
    }


class AudioClock:
    """A clock that reads the seconds of audio pushed so far (the long conversation runs faster than real time)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def run_long_conversation(pipeline, config, audio_dir: Path, turns: int) -> dict:
    """A user who waits for every reply, for ``turns`` turns; returns failures and context use."""
    from stepaudio.realtime import ConversationState, ErrorEvent, RealtimeSession, ScriptedVAD, TurnMetrics

    clock = AudioClock()
    vad = ScriptedVAD([])
    session = RealtimeSession(pipeline, config, vad=vad, clock=clock)
    silence = np.zeros(FRAME, np.float32)
    pushed = 0.0

    def push(samples: np.ndarray) -> None:
        nonlocal pushed
        for offset in range(0, samples.shape[0] // FRAME * FRAME, FRAME):
            session.push_audio(samples[offset : offset + FRAME], SAMPLE_RATE)
            pushed += FRAME / SAMPLE_RATE
            clock.seconds = pushed
        session.wait_processed()

    started = time.perf_counter()
    push(np.zeros(int(0.3 * SAMPLE_RATE), np.float32))
    for turn in range(turns):
        clip = read_clip(audio_dir, turn, 2.4)
        vad.speech.append((pushed, pushed + clip.shape[0] // FRAME * FRAME / SAMPLE_RATE))
        push(clip)
        # silence until the reply has been generated and played on the audio clock
        deadline = time.perf_counter() + 120
        while session.state is not ConversationState.SILENCE or session.controller.busy:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"turn {turn + 1} did not finish (state {session.state})")
            push(silence)
            if session.controller.busy and session.state is ConversationState.BOT_REPLYING:
                time.sleep(0.005)  # the models are still working: let the audio clock wait for them
    events = session.take_events()
    controller = session.controller
    session.close()
    metrics = [event for event in events if isinstance(event, TurnMetrics)]
    return {
        "turns": len(metrics),
        "failed": controller.counters.failed_replies,
        "errors": sum(isinstance(event, ErrorEvent) for event in events),
        "barge_ins": controller.counters.barge_ins,
        "max_prompt": max((m.context_tokens for m in metrics), default=0),
        "limit": pipeline.llm.max_seq_len - config.max_new_tokens,
        "evicted": controller.context.evicted_turns,
        "audio_s": pushed,
        "wall_s": time.perf_counter() - started,
    }


def load_pipeline(model_path: str | None, tmp: Path):
    from stepaudio import ModelSettings, load_pipeline

    if model_path is None:
        from stepaudio.testing import build_tiny_checkpoints

        build_tiny_checkpoints(tmp / "fixtures")
        # the random TTS model rarely stops by itself: cap each reply segment
        return load_pipeline(tmp / "fixtures", ModelSettings(max_speech_seconds=0.6)), True
    return load_pipeline(model_path), False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="folder with the three official model folders")
    parser.add_argument("--audio-dir", default=str(DEFAULT_AUDIO_DIR), help="the shared speech clips")
    parser.add_argument("--turns", type=int, default=3, help="user turns per session (default 3)")
    parser.add_argument("--long-turns", type=int, default=40, help="turns of the long conversation (default 40)")
    parser.add_argument("--concurrency", default="1,4,8", help="concurrent session counts (default 1,4,8)")
    parser.add_argument("--workers", type=int, default=1, help="model jobs at once across sessions (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply length (default 16: fixture)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()

    import torch

    from stepaudio.realtime import RealtimeConfig

    torch.set_num_threads(args.threads)
    audio_dir = Path(args.audio_dir)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, fixture = load_pipeline(args.model_path, Path(tmp))
        audio, speech = conversation(audio_dir, args.turns, reply_silence_s=3.0)
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
        print(f"  ratio with/without  {on['median_s'] / off['median_s']:8.2f}")
        print(
            f"  offline re-tokenization of each finished turn: {off['retokenize_ms']:.0f} ms (median), "
            f"{off['ids_corrected']:.0f} streamed ids corrected per turn (median)\n"
        )

        long_runs = []
        for label, transcribe in (("past turns as transcripts", True), ("past turns as audio ids", False)):
            config = RealtimeConfig(transcribe_history=transcribe, **base)
            long = run_long_conversation(pipeline, config, audio_dir, args.long_turns)
            long_runs.append(long)
            print(
                f"long conversation, {label} ({long['audio_s']:.0f} s of audio in {long['wall_s']:.0f} s, "
                "user waits for replies)"
            )
            print(
                f"  turns {long['turns']}   failed replies {long['failed']}   error events {long['errors']}   "
                f"barge-ins {long['barge_ins']}   largest prompt {long['max_prompt']} tokens "
                f"(limit {long['limit']})   evicted turns {long['evicted']}"
            )
        print()

        print("concurrent sessions (speculation on):")
        header = ("sessions", "median ms", "p90 ms", "replies", "commit", "barge-ins", "errors")
        widths = (8, 10, 8, 8, 7, 9, 6)
        print("  " + " ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
        for count in (int(c) for c in args.concurrency.split(",")):
            row = (
                on if count == 1 else run_sessions(pipeline, RealtimeConfig(**base), count, args.workers, audio, speech)
            )
            print(
                f"  {count:>8} {row['median_s'] * 1000:>10.0f} {row['p90_s'] * 1000:>8.0f} {row['replies']:>8} "
                f"{row['commit_rate']:>7.2f} {row['barge_ins']:>9} {row['errors']:>6}"
            )
    return 0 if all(long["failed"] == 0 and long["errors"] == 0 for long in long_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
