"""The turn controller on scripted VAD timelines with the tiny fixture models (real speech as input audio)."""

from __future__ import annotations

import pytest
from realtime_helpers import (
    EventLog,
    Timeline,
    feed_paced,
    feed_silence_until,
    fixture_config,
    fixture_pipeline,
    speech_audio,
)

from stepaudio.realtime import (
    AudioChunk,
    BargeIn,
    ConversationState,
    ModelWorkers,
    ReplyTextDelta,
    ScriptedVAD,
    SpeculationUpdate,
    StateChanged,
    Transcript,
    TurnController,
    TurnMetrics,
)


@pytest.fixture(scope="module")
def pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, tmp_path_factory):
    from stepaudio.testing import build_tiny_speakers_folder

    speakers = build_tiny_speakers_folder(tmp_path_factory.mktemp("speakers") / "speakers")
    return fixture_pipeline(tiny_tokenizer_dir, tiny_tts_dir, tiny_chat_dir, speakers)


@pytest.fixture
def workers():
    pool = ModelWorkers(1)
    yield pool
    pool.shutdown()


def run_timeline(pipeline, workers, timeline: Timeline, **config_overrides) -> tuple[TurnController, EventLog]:
    log = EventLog()
    controller = TurnController(
        pipeline, fixture_config(**config_overrides), ScriptedVAD(timeline.speech), workers, log
    )
    feed_paced(controller.process_frame, timeline.frames())
    return controller, log


def finish_reply(controller: TurnController, log: EventLog) -> None:
    """Feed silence until the reply in progress has been played (its metrics are out)."""
    assert feed_silence_until(controller.process_frame, lambda: bool(log.of(TurnMetrics))), "the reply never ended"


def states(log: EventLog) -> list[ConversationState]:
    return [event.state for event in log.of(StateChanged)]


def index_of(log: EventLog, predicate) -> int:
    return next(i for i, event in enumerate(log.events) if predicate(event))


def test_pause_starts_speculation_and_resumed_speech_discards_it(pipeline, workers, shared_audio_dir):
    speech = speech_audio(shared_audio_dir, 2.4)
    timeline = Timeline().silence(0.2).talk(speech[:19200]).silence(0.5).talk(speech[19200:]).silence(2.2)
    controller, log = run_timeline(pipeline, workers, timeline)
    finish_reply(controller, log)

    assert states(log)[:4] == [
        ConversationState.USER_SPEAKING,
        ConversationState.USER_PAUSED,
        ConversationState.USER_SPEAKING,
        ConversationState.USER_PAUSED,
    ]
    first_pause = index_of(log, lambda e: isinstance(e, StateChanged) and e.state is ConversationState.USER_PAUSED)
    resumed = index_of(
        log,
        lambda e: (
            isinstance(e, StateChanged)
            and e.state is ConversationState.USER_SPEAKING
            and e.previous is ConversationState.USER_PAUSED
        ),
    )
    updates = log.of(SpeculationUpdate)
    started_first = log.events.index(updates[0])
    assert updates[0].action == "started" and first_pause < started_first < resumed
    resumed_discard = [u for u in updates if u.action == "discarded" and u.reason == "speech resumed"]
    assert len(resumed_discard) == 1 and log.events.index(resumed_discard[0]) < resumed
    # Nothing of a speculative reply reaches the output before the turn ended.
    replying = index_of(log, lambda e: isinstance(e, StateChanged) and e.state is ConversationState.BOT_REPLYING)
    assert not any(isinstance(e, (AudioChunk, ReplyTextDelta)) for e in log.events[:replying])
    # The second pause led to a committed reply made from all the speech.
    assert updates[-1].action == "committed"
    metrics = log.of(TurnMetrics)[-1]
    assert metrics.speculative_committed == 1
    assert metrics.speculative_discarded == metrics.speculative_started - 1 >= 1
    assert log.wait_for(lambda: workers.pending_jobs == 0, timeout=30), "a discarded reply job kept running"
    controller.close()


def test_committed_speculation_gives_first_audio_sooner_than_generating_at_end_of_turn(
    pipeline, workers, shared_audio_dir
):
    def first_audio_latency(speculative: bool) -> TurnMetrics:
        # A generous end-of-turn pause gives the speculative reply time for its first chunk on a busy machine.
        timeline = Timeline().silence(0.2).talk(speech_audio(shared_audio_dir, 1.5)).silence(2.6)
        controller, log = run_timeline(pipeline, workers, timeline, speculative=speculative, end_of_turn_ms=2500)
        finish_reply(controller, log)
        controller.close()
        assert log.of(AudioChunk), "no reply audio was produced"
        return log.of(TurnMetrics)[0]

    with_speculation = first_audio_latency(True)
    without = first_audio_latency(False)
    assert with_speculation.speculative_committed == 1
    assert with_speculation.committed_audio_chunks >= 1  # audio was ready when the turn ended
    assert without.speculative_started == 0
    assert with_speculation.end_of_turn_to_first_audio_s < without.end_of_turn_to_first_audio_s
    assert with_speculation.end_of_speech_to_first_audio_s < without.end_of_speech_to_first_audio_s


def test_barge_in_stops_output_at_once_and_keeps_only_the_played_text(pipeline, workers, shared_audio_dir):
    speech = speech_audio(shared_audio_dir, 3.0)
    timeline = Timeline().silence(0.2).talk(speech[:24000]).silence(2.6).talk(speech[24000:]).silence(1.0)
    log = EventLog()
    config = fixture_config(max_new_tokens=48, max_sentence_chars=10)
    controller = TurnController(pipeline, config, ScriptedVAD(timeline.speech), workers, log)
    captured = []

    def capture_reply(frame):
        if controller._reply is not None and not captured:
            captured.append(controller._reply)
        controller.process_frame(frame)

    feed_paced(capture_reply, timeline.frames())
    barge_ins = log.of(BargeIn)
    assert len(barge_ins) == 1, "the user's speech during the reply did not interrupt it"
    barge_in = barge_ins[0]
    cut = log.events.index(barge_in)
    interrupted_turn = barge_in.turn
    sent_before = [e for e in log.events[:cut] if isinstance(e, AudioChunk) and e.turn == interrupted_turn]
    sent_after = [e for e in log.events[cut:] if isinstance(e, AudioChunk) and e.turn == interrupted_turn]
    assert sent_before, "no audio was sent before the barge-in; the scripted timeline is too short"
    assert sent_after == []  # output stopped within one chunk (here: at once)

    reply_text = "".join(e.text for e in log.events if isinstance(e, ReplyTextDelta) and e.turn == interrupted_turn)
    assert reply_text.startswith(barge_in.played_text)
    assert len(barge_in.played_text) < len(reply_text)
    assert 0.0 < barge_in.played_seconds <= sum(chunk.seconds for chunk in sent_before) + 1e-6
    assistant = [t for t in controller.context.turns if t.role == "assistant" and t.turn == interrupted_turn]
    assert [t.text for t in assistant] == ([barge_in.played_text] if barge_in.played_text.strip() else [])
    assert captured and captured[0].cancel.is_set()
    assert captured[0].finished.wait(10), "the interrupted reply's LLM/TTS work did not stop"
    assert log.of(TurnMetrics)[0].barge_in and controller.counters.barge_ins == 1
    assert states(log)[-1] in (ConversationState.USER_SPEAKING, ConversationState.USER_PAUSED)
    controller.close()
    assert log.wait_for(lambda: workers.pending_jobs == 0, timeout=30)


def test_barge_in_keeps_only_what_the_client_reports_as_played(pipeline, workers, shared_audio_dir):
    """A client whose playback is stalled (it reports 0 s) gets at most the report horizon credited."""
    from stepaudio.realtime.controller import PLAYBACK_REPORT_HORIZON_S

    speech = speech_audio(shared_audio_dir, 3.0)
    timeline = Timeline().silence(0.2).talk(speech[:24000]).silence(2.6).talk(speech[24000:]).silence(0.5)
    log = EventLog()
    config = fixture_config(max_new_tokens=48, max_sentence_chars=10)
    controller = TurnController(pipeline, config, ScriptedVAD(timeline.speech), workers, log)

    def stalled_client(frame):
        if controller.state is ConversationState.BOT_REPLYING:
            controller.report_playback(controller.turn, 0.0)
        controller.process_frame(frame)

    feed_paced(stalled_client, timeline.frames())
    barge_in = log.of(BargeIn)[0]
    sent = [e for e in log.events[: log.events.index(barge_in)] if isinstance(e, AudioChunk)]
    assert sum(chunk.seconds for chunk in sent) > PLAYBACK_REPORT_HORIZON_S  # more was sent than heard
    assert barge_in.played_seconds <= PLAYBACK_REPORT_HORIZON_S + 1e-6
    kept = [t.text for t in controller.context.turns if t.role == "assistant"]
    assert kept == ([barge_in.played_text] if barge_in.played_text.strip() else [])
    controller.close()


def test_history_holds_transcripts_of_past_turns_and_the_current_turn_as_audio(pipeline, workers, shared_audio_dir):
    speech = speech_audio(shared_audio_dir, 2.0)
    timeline = Timeline().silence(0.2).talk(speech[:16000]).silence(3.2).talk(speech[16000:]).silence(0.4)
    controller, log = run_timeline(pipeline, workers, timeline)
    assert log.wait_for(lambda: bool(log.of(Transcript)), timeout=30)
    transcript = log.of(Transcript)[0]
    assert transcript.turn == 1
    messages, tokens = controller.context.messages([65536 + 7] * 10)
    user_contents = [m["content"] for m in messages if m["role"] == "user"]
    assert user_contents[0] == transcript.text  # the past turn as text
    assert user_contents[-1] == {"type": "audio", "audio_ids": [65536 + 7] * 10}
    assert tokens <= controller.config.context_token_budget
    ratio = controller.context.compression_ratio()
    assert ratio is not None and ratio > 0
    controller.close()
