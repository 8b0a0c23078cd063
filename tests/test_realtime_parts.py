"""The small parts of stepaudio.realtime: VAD, speech gate, sentence stream, context manager, config, session input."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile

from stepaudio.errors import AudioInputError, RealtimeConfigError, RealtimeSessionClosedError, StreamClosedError
from stepaudio.realtime import FRAME_SAMPLES, ConversationContext, RealtimeConfig, ScriptedVAD, SileroVAD, SpeechGate
from stepaudio.realtime.sentences import SentenceStream


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    usable = audio.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES
    return [audio[i : i + FRAME_SAMPLES] for i in range(0, usable, FRAME_SAMPLES)]


def test_silero_vad_finds_the_speech_in_a_real_clip_and_not_in_silence(shared_audio_dir):
    audio, rate = soundfile.read(shared_audio_dir / "BAC009S0764W0121.wav", dtype="float32")
    assert rate == 16000
    vad = SileroVAD()
    silence = [vad.speech_probability(frame) for frame in frames_of(np.zeros(16000, np.float32))]
    vad.reset()
    speech = [vad.speech_probability(frame) for frame in frames_of(audio)]
    assert max(silence) < 0.2
    assert np.mean(np.array(speech) > 0.5) > 0.4  # read speech: most frames are voiced
    with pytest.raises(AudioInputError, match="512 samples"):
        vad.speech_probability(np.zeros(400, np.float32))


def test_speech_gate_has_hysteresis():
    gate = SpeechGate(threshold=0.5, negative_threshold=0.3)
    decisions = [gate.update(p) for p in (0.4, 0.6, 0.4, 0.31, 0.2, 0.45, 0.5)]
    assert decisions == [False, True, True, True, False, False, True]


def test_scripted_vad_follows_its_timeline():
    vad = ScriptedVAD([(0.064, 0.128)])
    probabilities = [vad.speech_probability(np.zeros(FRAME_SAMPLES, np.float32)) for _ in range(5)]
    assert probabilities == [0.0, 0.0, 1.0, 1.0, 0.0]


def test_sentence_stream_cuts_at_sentence_ends_and_length_limit():
    stream = SentenceStream(max_chars=12)
    out = []
    for piece in ["你好", "。今天", "天气", "真好！", "It is a very long clause without end", " ok"]:
        out += stream.feed(piece)
    out += stream.close()
    assert "".join(out) == "你好。今天天气真好！It is a very long clause without end ok"
    assert out[0] == "你好。" and out[1] == "今天天气真好！"
    assert all(len(segment) <= 12 for segment in out)
    with pytest.raises(StreamClosedError):
        stream.feed("more")


class _WordTranscriber:
    """A transcriber that names the number of audio ids (the real default needs the chat model)."""

    def transcribe(self, audio_ids):
        return f"heard {len(audio_ids)} ids"


def test_context_keeps_transcripts_evicts_oldest_turns_and_reports_compression():
    context = ConversationContext(
        count_text_tokens=lambda text: len(text.split()), token_budget=60, system_prompt="be brief"
    )
    context.add_user_turn(1, [65536] * 30)
    context.add_assistant_turn(1, "one two three")
    context.add_user_turn(2, [65537] * 19)
    context.add_assistant_turn(2, "four five")
    context.set_user_audio(2, [65537] * 20)  # the turn's final ids replace the ones it was stored with
    transcriber = _WordTranscriber()
    for turn in (1, 2):
        entry = next(t for t in context.turns if t.role == "user" and t.turn == turn)
        context.set_transcript(turn, transcriber.transcribe(entry.audio_ids))
    context.set_transcript(2, "a second transcript is ignored")
    context.set_transcript(9, "an evicted or unknown turn is ignored")
    assert context.compression_ratio() == pytest.approx(50 / 6)

    messages, tokens = context.messages([65538] * 10)
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert [m["content"] for m in messages[1:5]] == ["heard 30 ids", "one two three", "heard 20 ids", "four five"]
    assert messages[-1]["content"] == {"type": "audio", "audio_ids": [65538] * 10}

    messages, tokens = context.messages([65538] * 40)  # a long current turn: the oldest pair goes
    assert tokens <= 60
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "heard 20 ids" and context.evicted_turns == 2


def test_context_keeps_every_prompt_inside_the_chat_models_limit(tiny_chat_dir):
    """50 long turns with a budget above the model's limit: the exact prompt never exceeds max_seq_len - reply."""
    from stepaudio import StepAudioChat

    chat = StepAudioChat(tiny_chat_dir, device="cpu")
    reply_tokens = 256
    limit = chat.max_seq_len - reply_tokens
    context = ConversationContext(
        count_text_tokens=lambda text: len(chat.tokenizer.encode(text)),
        token_budget=100_000,  # the estimate alone would keep everything
        system_prompt="适配用户的语言，用简短口语化的文字回答",
        count_prompt_tokens=lambda messages: len(chat.encode_messages(messages)),
        max_prompt_tokens=limit,
    )
    rng = np.random.default_rng(0)
    for turn in range(1, 51):
        current = [65536 + int(code) for code in rng.integers(0, 5120, 200)]
        messages, tokens = context.messages(current)
        assert tokens == len(chat.encode_messages(messages)) <= limit, turn
        assert messages[-1]["content"]["audio_ids"] == current and messages[0]["role"] == "system"
        context.add_user_turn(turn, current)
        context.add_assistant_turn(turn, "好的，" * int(rng.integers(5, 60)))
    assert context.evicted_turns > 50  # the oldest turns went, the conversation did not stop


def test_config_refuses_inconsistent_settings():
    with pytest.raises(RealtimeConfigError, match="end_of_turn_ms"):
        RealtimeConfig(pause_ms=600, end_of_turn_ms=600)
    with pytest.raises(RealtimeConfigError, match="vad_negative_threshold"):
        RealtimeConfig(vad_threshold=0.4, vad_negative_threshold=0.6)
    assert RealtimeConfig.frames(200) == 7  # 7 x 32 ms covers 200 ms


def test_session_resamples_pcm16_and_refuses_bad_audio(realtime_pipeline):
    from stepaudio.realtime import RealtimeSession

    session = RealtimeSession(realtime_pipeline, RealtimeConfig(transcribe_history=False), vad=ScriptedVAD([]))

    async def first_events():
        session.push_audio((np.zeros(44100, np.int16)).tobytes(), 44100)  # 1 s of silence
        session.wait_processed()
        return session.controller.frames_seen

    # 16000 samples at 16 kHz -> 31 whole frames, less what the streaming resampler still holds back (10 ms)
    assert 29 <= asyncio.run(first_events()) <= 31
    with pytest.raises(AudioInputError, match="44100 Hz audio"):
        session.push_audio(np.zeros(100, np.int16), 16000)
    with pytest.raises(AudioInputError, match="odd count"):
        session.push_audio(b"\x00\x01\x02", 44100)
    with pytest.raises(AudioInputError, match="mono"):
        session.push_audio(np.zeros((2, 100), np.float32), 44100)
    with pytest.raises(AudioInputError, match="NaN"):
        session.push_audio(np.full(100, np.nan, np.float32), 44100)
    session.close()
    with pytest.raises(RealtimeSessionClosedError):
        session.push_audio(np.zeros(100, np.int16), 44100)


def test_serve_realtime_command_binds_to_loopback_by_default():
    from stepaudio.cli import build_parser
    from stepaudio.realtime.cli import run

    args = build_parser().parse_args(["serve-realtime", "--model-path", "models"])
    assert args.func is run
    assert args.host == "127.0.0.1" and args.port == 8765 and not args.no_speculation


def test_session_threads_run_a_whole_turn_and_a_timer_ends_it(realtime_pipeline, shared_audio_dir):
    """The real threads: session loop, tokenizer lane, model worker; the reply ends by a Tick (no more audio)."""
    from realtime_helpers import Timeline, fixture_config, speech_audio

    from stepaudio.realtime import (
        AudioChunk,
        ConversationState,
        ErrorEvent,
        RealtimeSession,
        StateChanged,
        TurnMetrics,
    )

    timeline = Timeline().silence(0.2).talk(speech_audio(shared_audio_dir, 1.0)).silence(0.8)
    config = fixture_config(end_of_turn_ms=600, transcribe_history=False)
    session = RealtimeSession(realtime_pipeline, config, vad=ScriptedVAD(timeline.speech))

    async def conversation() -> list:
        session.push_audio(np.concatenate(timeline.pieces), 16000)  # all at once; nothing after it
        events = []
        async for event in session.events():
            events.append(event)
            if isinstance(event, StateChanged) and event.state is ConversationState.SILENCE:
                return events
        return events

    try:
        events = asyncio.run(asyncio.wait_for(conversation(), timeout=120))
        session.wait_processed()
        assert not session.controller.busy  # no reply or tokenizer work of the session is left
    finally:
        session.close()
    assert [e.state for e in events if isinstance(e, StateChanged)] == [
        ConversationState.USER_SPEAKING,
        ConversationState.USER_PAUSED,
        ConversationState.BOT_REPLYING,
        ConversationState.SILENCE,
    ]
    assert any(isinstance(e, AudioChunk) for e in events) and not any(isinstance(e, ErrorEvent) for e in events)
    metrics = next(e for e in events if isinstance(e, TurnMetrics))
    assert metrics.end_of_speech_to_first_audio_s is not None and metrics.retokenize_s is not None
