"""The turn controller, driven deterministically: a fake clock, model work run only when the test says so.

The tiny fixture models do the real work (tokenizer stream, offline re-tokenization, chat, TTS); the
real AISHELL clip is the user's speech; the VAD decision of each frame is given by the test.
"""

from __future__ import annotations

import pytest
from realtime_helpers import FRAME_SECONDS, ControllerHarness, fixture_config, speech_audio

from stepaudio.errors import RealtimeConfigError
from stepaudio.realtime import (
    AudioChunk,
    BargeIn,
    ConversationState,
    ErrorEvent,
    ManualWorkers,
    ReplyTextDelta,
    SpeculationUpdate,
    StateChanged,
    Transcript,
    TurnMetrics,
)
from stepaudio.realtime.controller import PLAYBACK_REPORT_HORIZON_S
from stepaudio.realtime.inputs import PlaybackReport, Tick, TokensReady


@pytest.fixture(scope="module")
def pipeline(realtime_pipeline):
    return realtime_pipeline


@pytest.fixture(scope="module")
def speech(shared_audio_dir):
    return speech_audio(shared_audio_dir, 3.0)


def quick_config(**overrides):
    settings = dict(end_of_turn_ms=600, transcribe_history=False)
    settings.update(overrides)
    return fixture_config(**settings)


def states(harness: ControllerHarness) -> list[ConversationState]:
    return [event.state for event in harness.log.of(StateChanged)]


def speculation(harness: ControllerHarness) -> list[tuple[str, str]]:
    return [(update.action, update.reason) for update in harness.log.of(SpeculationUpdate)]


def output_events(harness: ControllerHarness) -> list:
    return [event for event in harness.log.events if isinstance(event, (AudioChunk, ReplyTextDelta))]


def test_pause_starts_speculation_and_resumed_speech_cancels_it_without_output(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config())
    harness.silence(0.2)
    harness.talk(speech[:16000])
    harness.silence(0.3)  # pause_ms 200: paused, a speculative reply starts from the streamed ids
    assert harness.state is ConversationState.USER_PAUSED
    assert speculation(harness)[0] == ("started", "pause")
    assert harness.workers.pending_jobs >= 1  # the speculative reply waits for a worker
    harness.talk(speech[16000:24000])  # the user goes on: the speculation is thrown away
    assert ("discarded", "speech resumed") in speculation(harness)
    assert harness.state is ConversationState.USER_SPEAKING
    harness.workers.run_all()  # a cancelled job returns at once, and whatever it posts is dropped
    harness.deliver()
    assert output_events(harness) == []
    assert states(harness) == [
        ConversationState.USER_SPEAKING,
        ConversationState.USER_PAUSED,
        ConversationState.USER_SPEAKING,
    ]


def test_committed_speculation_releases_its_held_output_at_the_end_of_turn(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config())
    harness.silence(0.2)
    harness.talk(speech[:24000])
    # In the pause the streamed ids catch up with the speech (the vq06 right context lags it), so
    # the first speculative reply is superseded by one made from all of the speech.
    harness.silence_until(lambda: ("discarded", "superseded") in speculation(harness), max_seconds=0.5)
    assert speculation(harness)[-1] == ("started", "pause")
    harness.run_models()  # the speculative reply is generated now: its output is held back
    assert output_events(harness) == []
    assert harness.state is ConversationState.USER_PAUSED
    harness.silence_until(lambda: harness.state is ConversationState.BOT_REPLYING)
    end_of_turn = harness.clock()
    assert speculation(harness)[-1] == ("committed", "end of turn")
    chunks = harness.log.of(AudioChunk)
    assert chunks, "the held output was not released at the commit"
    harness.finish_turn()
    metrics = harness.log.of(TurnMetrics)[0]
    assert metrics.speculative_committed == 1 and metrics.speculative_started == 2
    assert metrics.committed_audio_chunks == len(chunks)
    assert metrics.end_of_turn_to_first_audio_s == 0.0  # the audio was ready when the turn ended
    assert metrics.end_of_speech_to_first_audio_s == pytest.approx(end_of_turn - harness_speech_end(harness))
    # The reply stayed in BotReplying until its audio had played on the fake clock.
    played = sum(chunk.seconds for chunk in harness.log.of(AudioChunk))
    silence_event = harness.log.of(StateChanged)[-1]
    assert silence_event.state is ConversationState.SILENCE
    assert harness.clock() >= end_of_turn + played


def harness_speech_end(harness: ControllerHarness) -> float:
    return harness.controller._user.speech_end_at


def test_end_of_turn_with_lagging_tokens_waits_for_the_offline_ids(pipeline, speech):
    config = quick_config()
    harness = ControllerHarness(pipeline, config, tokenize_live=False)  # the tokenizer falls behind
    harness.silence(0.2)
    harness.talk(speech[:24000])
    harness.silence_until(lambda: harness.state is ConversationState.BOT_REPLYING)
    assert speculation(harness) == []  # no ids had arrived in the pause: nothing to speculate on
    assert harness.workers.pending_jobs == 0  # and no reply can start yet
    assert harness.lane.pending_jobs > 0
    turn_audio = harness.controller._user.audio
    harness.run_tokenizer()  # streamed ids, the stream's close, then the offline re-tokenization
    assert harness.workers.pending_names == ["reply 1 to turn 1"]
    import numpy as np

    offline = pipeline.tokenizer.wav2token(np.concatenate(turn_audio), 16000, enable_trim=False, energy_norm=True)[0]
    history = harness.controller.context.turns
    assert [entry.role for entry in history] == ["user"] and history[0].audio_ids == offline
    harness.finish_turn()
    metrics = harness.log.of(TurnMetrics)[0]
    assert metrics.retokenize_s is not None and metrics.retokenize_s > 0
    assert metrics.streamed_ids_differing is not None
    assert harness.log.of(AudioChunk), "the reply made after the late ids produced no audio"
    assert not harness.log.of(ErrorEvent)


def test_streamed_ids_are_kept_without_retokenization(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config(retokenize_turns=False, speculative=False))
    harness.silence(0.2)
    harness.talk(speech[:16000])
    harness.finish_turn()
    user = harness.controller._user
    assert harness.controller.context.turns[0].audio_ids == user.ids  # the stream's own ids
    metrics = harness.log.of(TurnMetrics)[0]
    assert metrics.retokenize_s is None and metrics.streamed_ids_differing is None


def _reply_then_barge_in(pipeline, speech, at_segment: int, fraction: float, report_stall: bool = False):
    """Reply generated in full, then the user speaks up when ``fraction`` of segment ``at_segment`` has played."""
    config = quick_config(max_new_tokens=48, max_sentence_chars=10, speculative=False)
    harness = ControllerHarness(pipeline, config)
    harness.silence(0.2)
    harness.talk(speech[:16000])
    harness.silence_until(lambda: harness.state is ConversationState.BOT_REPLYING)
    harness.run_models()  # the whole reply arrives and is emitted now: it plays back to back from here
    emitted_at = harness.clock()
    chunks = harness.log.of(AudioChunk)
    segments = sorted({chunk.segment for chunk in chunks})
    assert len(segments) > at_segment + 1, "the fixture reply is too short for this test"
    before = sum(chunk.seconds for chunk in chunks if chunk.segment < at_segment)
    inside = sum(chunk.seconds for chunk in chunks if chunk.segment == at_segment)
    barge_in_frames = config.frames(config.barge_in_ms)
    if report_stall:
        harness.controller.handle(PlaybackReport(turn=1, played_seconds=0.0))
    # Set the clock so that the barge-in is decided exactly at the chosen playback position.
    harness.clock.now = emitted_at + before + fraction * inside - barge_in_frames * FRAME_SECONDS
    harness.talk(speech[16000 : 16000 + barge_in_frames * 512])
    return harness, chunks


def test_barge_in_keeps_exactly_the_played_text(pipeline, speech):
    harness, chunks = _reply_then_barge_in(pipeline, speech, at_segment=2, fraction=0.51)
    texts = {chunk.segment: chunk.segment_text for chunk in chunks}
    expected = texts[0] + texts[1] + texts[2][: int(len(texts[2]) * 0.51)]
    barge_in = harness.log.of(BargeIn)[0]
    assert barge_in.played_text == expected
    played = sum(chunk.seconds for chunk in chunks if chunk.segment < 2)
    played += 0.51 * sum(chunk.seconds for chunk in chunks if chunk.segment == 2)
    assert barge_in.played_seconds == pytest.approx(played)
    history = harness.controller.context.turns
    assert [(entry.role, entry.text) for entry in history[1:2]] == [("assistant", expected)]
    assert harness.state is ConversationState.USER_SPEAKING and harness.controller.turn == 2
    # Nothing of the interrupted reply is emitted after the barge-in, even if its job still posts.
    cut = harness.log.events.index(barge_in)
    assert not [event for event in harness.log.events[cut:] if isinstance(event, AudioChunk) and event.turn == 1]
    assert harness.log.of(TurnMetrics)[0].barge_in and harness.controller.counters.barge_ins == 1


def test_barge_in_at_a_segment_boundary_keeps_whole_segments(pipeline, speech):
    harness, chunks = _reply_then_barge_in(pipeline, speech, at_segment=1, fraction=0.0)
    texts = {chunk.segment: chunk.segment_text for chunk in chunks}
    assert harness.log.of(BargeIn)[0].played_text == texts[0]


def test_barge_in_believes_a_stalled_client_for_at_most_the_report_horizon(pipeline, speech):
    harness, chunks = _reply_then_barge_in(pipeline, speech, at_segment=2, fraction=0.5, report_stall=True)
    barge_in = harness.log.of(BargeIn)[0]
    assert sum(chunk.seconds for chunk in chunks if chunk.segment < 2) > PLAYBACK_REPORT_HORIZON_S
    assert barge_in.played_seconds <= PLAYBACK_REPORT_HORIZON_S + 1e-9


def test_reply_waits_in_bot_replying_until_played_and_a_tick_ends_it(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config(speculative=False))
    harness.silence(0.2)
    harness.talk(speech[:16000])
    harness.silence_until(lambda: harness.state is ConversationState.BOT_REPLYING)
    harness.run_models()
    deadline = harness.controller.next_deadline()
    played = sum(chunk.seconds for chunk in harness.log.of(AudioChunk))
    assert deadline == pytest.approx(harness.clock() + played)
    harness.controller.handle(Tick())  # too early: still playing
    assert harness.state is ConversationState.BOT_REPLYING
    harness.clock.now = deadline
    harness.controller.handle(Tick())  # no microphone frames needed: the session loop posts ticks
    assert harness.state is ConversationState.SILENCE
    assert harness.controller.next_deadline() is None


def test_history_holds_transcripts_of_past_turns_and_the_current_turn_as_audio(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config(transcribe_history=True))
    harness.silence(0.2)
    harness.talk(speech[:16000])
    harness.finish_turn()
    harness.run_models()
    transcript = harness.log.of(Transcript)[0]
    assert transcript.turn == 1
    messages, tokens = harness.controller.context.messages([65536 + 7] * 10)
    user_contents = [m["content"] for m in messages if m["role"] == "user"]
    assert user_contents[0] == transcript.text  # the past turn as text
    assert user_contents[-1] == {"type": "audio", "audio_ids": [65536 + 7] * 10}
    ratio = harness.controller.context.compression_ratio()
    assert ratio is not None and ratio > 0


def test_fifty_turns_never_exceed_the_chat_models_limit(pipeline, speech, monkeypatch):
    """Past turns stay audio ids (no transcripts), so the history outgrows the model's 2048 tokens."""
    monkeypatch.setattr(pipeline.tts, "max_speech_seconds", 0.24)  # short replies: a quick test
    config = quick_config(speculative=False, retokenize_turns=False, max_new_tokens=4, max_sentence_chars=60)
    harness = ControllerHarness(pipeline, config)
    limit = pipeline.llm.max_seq_len - config.max_new_tokens
    for turn in range(50):
        harness.silence(0.1)
        start = (turn % 4) * 8000
        harness.talk(speech[start : start + 16000])
        harness.finish_turn()
    metrics = harness.log.of(TurnMetrics)
    assert len(metrics) == 50 and [m.turn for m in metrics] == list(range(1, 51))
    assert not harness.log.of(ErrorEvent)
    assert len(harness.log.of(AudioChunk)) >= 50  # every turn got a spoken reply
    assert max(m.context_tokens for m in metrics) <= limit
    assert harness.controller.context.evicted_turns > 0  # the limit did bite
    assert all(m.context_tokens > 0 for m in metrics)


def test_sessions_sharing_one_model_queue_stay_apart(pipeline, speech):
    shared = ManualWorkers()
    first = ControllerHarness(pipeline, quick_config(speculative=False), workers=shared)
    second = ControllerHarness(pipeline, quick_config(speculative=False), workers=shared, clock=first.clock)
    for harness in (first, second):
        harness.silence(0.2)
    first.talk(speech[:16000])
    second.talk(speech[8000:24000])
    first.silence_until(lambda: first.state is ConversationState.BOT_REPLYING)
    second.silence_until(lambda: second.state is ConversationState.BOT_REPLYING)
    assert sorted(shared.pending_names) == ["reply 1 to turn 1", "reply 1 to turn 1"]
    shared.run_all()  # both replies run on the shared queue; each posts to its own session only
    first.deliver()
    # The first user interrupts their reply; the second session's reply is untouched.
    first.talk(speech[:8000])
    second.deliver()
    assert first.log.of(BargeIn) and not second.log.of(BargeIn)
    second.finish_turn()
    assert second.log.of(TurnMetrics)[0].barge_in is False
    for harness in (first, second):
        assert all(chunk.turn == 1 for chunk in harness.log.of(AudioChunk))
        assert not harness.log.of(ErrorEvent)
    first_text = "".join(event.text for event in first.log.of(ReplyTextDelta))
    second_text = "".join(event.text for event in second.log.of(ReplyTextDelta))
    assert first_text and second_text


def test_late_events_of_a_dropped_turn_change_nothing(pipeline, speech):
    harness = ControllerHarness(pipeline, quick_config())
    before = list(harness.log.events)
    harness.controller.handle(TokensReady(turn=7, ids=(65536,), final=True))
    assert harness.log.events == before and harness.state is ConversationState.SILENCE


def test_a_speaker_the_models_do_not_know_is_refused_when_the_session_starts(pipeline):
    with pytest.raises(RealtimeConfigError, match="speaker.*'Nobody'") as caught:
        ControllerHarness(pipeline, quick_config(speaker="Nobody"))
    assert caught.value.name == "speaker"


def test_a_reply_budget_the_chat_model_cannot_hold_is_refused(pipeline):
    with pytest.raises(RealtimeConfigError, match="max_new_tokens 2000 leaves 48 prompt tokens"):
        ControllerHarness(pipeline, quick_config(max_new_tokens=2000))
