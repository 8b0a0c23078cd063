"""``StepAudioEditX.clone_stream`` / ``edit_stream``: 24 kHz chunks while the LM generates, equal to the offline
``attention="chunked"`` decode of the same codes (tiny random EditX folder with its decoder, CPU)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from stepaudio.editx import StepAudioEditX
from stepaudio.editx.segment import join_audio, segment_audio
from stepaudio.llm.backends import GenerationBackend, SamplingSettings, make_backend
from stepaudio.testing.editx_fixture import build_tiny_editx_checkpoint
from stepaudio.tokenizer import StepAudioTokenizer

RATE = 16000
#: The decoder's stated streaming tolerance (streamed vs offline chunked waveform).
TOLERANCE = 1e-5
THREAD = "test-editx-generate"


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.9 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


class CountingBackend(GenerationBackend):
    """A real backend whose streamed ids are recorded as the consumer takes them."""

    name = "counting"

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner = inner
        self.taken: list[int] = []

    @property
    def max_seq_len(self) -> int:
        return self.inner.max_seq_len

    def stream_ids(
        self, prompt_ids: Sequence[int], settings: SamplingSettings, cancel: threading.Event | None = None
    ) -> Iterator[int]:
        self.taken = []
        ids = self.inner.stream_ids(prompt_ids, settings, cancel)
        try:
            for token in ids:
                self.taken.append(token)
                yield token
        finally:
            ids.close()

    def generate_ids(self, prompt_ids: Sequence[int], settings: SamplingSettings) -> list[int]:
        return self.inner.generate_ids(prompt_ids, settings)


@pytest.fixture(scope="module")
def editx(tmp_path_factory, tiny_tokenizer_dir):
    folder = build_tiny_editx_checkpoint(tmp_path_factory.mktemp("editx") / "Step-Audio-EditX", with_decoder=True)
    inner = make_backend("transformers", folder, role="tts", device="cpu")
    inner.thread_name = THREAD
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    # 2.4 s of speech = 100 codes: the random LM runs to that limit (it samples no <|EOT|> before it)
    return StepAudioEditX(
        folder, tokenizer, device="cpu", seed=5, max_speech_seconds=2.4, backend=CountingBackend(inner)
    )


def _chunked_decode(editx: StepAudioEditX, codes: list[int], waveform: np.ndarray, rate: int) -> torch.Tensor:
    """The offline decode with the stream's attention of ``codes`` in the voice of the clip (prepared as EditX does)."""
    prepared = editx.prepare_audio(waveform, rate)
    prompt = editx.decoder.prompt_features(prepared.waveform, prepared.sample_rate)
    prompt_codes = [token - 65536 for token in prepared.audio_ids]
    return editx.decoder.inner.token_to_wav_offline(
        codes, prompt_codes, prompt.speech_feat, prompt.embedding, attention="chunked"
    )


def test_clone_stream_equals_the_chunked_offline_decode_and_starts_early(editx):
    clip = _voice(1.2)
    codes = editx.clone_codes("hello there", clip, "a clip", sample_rate=RATE)[0]
    assert len(codes) == 100
    chunks, taken_at_first_chunk = [], None
    for chunk in editx.clone_stream("hello there", clip, "a clip", sample_rate=RATE):
        if not chunks:
            taken_at_first_chunk = len(editx.backend.taken)
        assert chunk.dtype == torch.float32 and chunk.shape[0] == 1 and chunk.shape[1] > 0
        chunks.append(chunk)
    assert [token - 65536 for token in editx.backend.taken] == codes  # same seed: the same codes, streamed
    # the decoder's first chunk (15 steps + 3 look-ahead = 6 groups = 30 codes), long before the LM's 100th code
    assert taken_at_first_chunk == 30
    assert len(chunks) >= 3
    streamed = torch.cat(chunks, dim=1)
    expected = _chunked_decode(editx, codes, clip, RATE)
    assert streamed.shape == expected.shape == (1, 2880 * 20)
    assert (streamed - expected).abs().max().item() < TOLERANCE


def test_edit_stream_joins_segments_like_edit(editx):
    audio = _voice(2.6)
    editx.max_segment_seconds, editx.max_speech_seconds = 1.0, 0.6  # 3+ segments of 25 codes each
    try:
        codes = editx.edit_codes(audio, "one two three four five six", "style", "whisper", sample_rate=RATE)
        chunks = list(editx.edit_stream(audio, "one two three four five six", "style", "whisper", sample_rate=RATE))
    finally:
        editx.max_segment_seconds, editx.max_speech_seconds = 30.0, 2.4
    spans = segment_audio(audio, RATE, 1.0)
    assert len(codes) == len(spans) >= 3
    pieces = [
        _chunked_decode(editx, piece, audio[start:end], RATE) for piece, (start, end) in zip(codes, spans, strict=True)
    ]
    expected = join_audio(pieces, 24000)
    streamed = torch.cat(chunks, dim=1)
    assert streamed.shape == expected.shape
    assert (streamed - expected).abs().max().item() < TOLERANCE


def test_edit_stream_streams_the_last_iteration_only(editx):
    audio = _voice(1.0)
    editx.max_speech_seconds = 1.2
    try:
        first = editx.edit(audio, "hello there", "emotion", "happy", 1, sample_rate=RATE)[0]
        second_codes = editx.edit_codes(first[0].numpy(), "hello there", "emotion", "happy", sample_rate=24000)
        chunks = list(editx.edit_stream(audio, "hello there", "emotion", "happy", 2, sample_rate=RATE))
    finally:
        editx.max_speech_seconds = 2.4
    expected = _chunked_decode(editx, second_codes[0], first[0].numpy(), 24000)
    streamed = torch.cat(chunks, dim=1)
    assert streamed.shape == expected.shape
    assert (streamed - expected).abs().max().item() < TOLERANCE


def test_closing_the_stream_early_stops_the_lm(editx):
    stream = editx.clone_stream("hello there", _voice(1.2), "a clip", sample_rate=RATE)
    next(stream)
    stream.close()
    deadline = time.time() + 10
    while any(t.name == THREAD for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == THREAD for t in threading.enumerate())
    assert len(editx.backend.taken) == 30  # nothing was taken after the first chunk
