"""``StepAudioEditX`` on tiny random folders: audio codes for clone and edit, long audio in segments, checks first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepaudio.editx import StepAudioEditX
from stepaudio.editx.model import EDITX_SAMPLING
from stepaudio.editx.segment import segment_audio
from stepaudio.errors import CheckpointFileNotFoundError, InvalidArgumentError
from stepaudio.testing.editx_fixture import build_tiny_editx_checkpoint
from stepaudio.tokenizer import StepAudioTokenizer

RATE = 16000


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    wav = 0.9 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def editx(tmp_path_factory, tiny_tokenizer_dir):
    folder = build_tiny_editx_checkpoint(tmp_path_factory.mktemp("editx") / "Step-Audio-EditX", with_decoder=False)
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    return StepAudioEditX(folder.parent, tokenizer, device="cpu", seed=3, max_speech_seconds=0.25)


def _assert_codes(codes: list[int]) -> None:
    assert 0 < len(codes) <= 10  # 0.25 s of audio tokens
    assert all(0 <= code < 5120 for code in codes)


def test_original_sampling_settings():
    s = EDITX_SAMPLING
    assert (s.do_sample, s.temperature, s.top_k, s.top_p, s.stop_token_ids) == (True, 0.7, 50, 1.0, (3,))
    assert (s.repetition_window, s.repetition_max_ratio, s.audio_tokens_only) == (10, 0.1, True)


@pytest.mark.slow
def test_edit_generates_codes_reproducibly(editx):
    first = editx.edit_codes(_voice(1.5), "hello there", "emotion", "happy", sample_rate=RATE)
    again = editx.edit_codes(_voice(1.5), "hello there", "emotion", "happy", sample_rate=RATE)
    assert len(first) == 1
    _assert_codes(first[0])
    assert first == again  # seed=3 for every request


def test_prepared_audio_is_peak_limited_and_tokenized(editx):
    prepared = editx.prepare_audio(_voice(1.0), RATE)
    assert np.isclose(np.abs(prepared.waveform).max(), 0.6)
    assert prepared.audio_ids and len(prepared.audio_ids) % 5 == 0
    assert all(65536 <= i < 65536 + 5120 for i in prepared.audio_ids)


def test_long_audio_is_edited_in_segments(editx):
    editx.max_segment_seconds = 1.0
    try:
        codes = editx.edit_codes(_voice(2.6), "one two three four five six", "style", "whisper", sample_rate=RATE)
    finally:
        editx.max_segment_seconds = 30.0
    assert len(codes) == len(segment_audio(_voice(2.6), RATE, 1.0)) >= 3
    for piece in codes:
        _assert_codes(piece)


def test_clone_splits_long_text_and_keeps_the_language(editx):
    editx.max_clone_chars = 10
    try:
        codes = editx.clone_codes("你好。今天天气真好！我们走吧。", _voice(1.2), "提示", "Cantonese", RATE)
    finally:
        editx.max_clone_chars = 120
    assert len(codes) == 2
    for piece in codes:
        _assert_codes(piece)


def test_requests_are_checked_before_any_work(editx):
    with pytest.raises(InvalidArgumentError, match="edit_info must be one of 'faster'"):
        editx.edit_codes(_voice(1.0), "t", "speed", "quick", sample_rate=RATE)
    with pytest.raises(InvalidArgumentError, match="sample_rate is required when audio is an array"):
        editx.edit_codes(_voice(1.0), "t", "vad")
    with pytest.raises(InvalidArgumentError, match="language must be None or one of"):
        editx.clone_codes("hi", _voice(1.0), "t", "French", RATE)


def test_missing_decoder_folder_is_named(editx):
    with pytest.raises(CheckpointFileNotFoundError, match="CosyVoice-300M-25Hz"):
        editx.edit(_voice(1.0), "t", "denoise", sample_rate=RATE)


@pytest.fixture(scope="module")
def editx_with_decoder(tmp_path_factory, tiny_tokenizer_dir):
    folder = build_tiny_editx_checkpoint(tmp_path_factory.mktemp("editx24k") / "Step-Audio-EditX", with_decoder=True)
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    return StepAudioEditX(folder, tokenizer, device="cpu", seed=5, max_speech_seconds=0.25)


def test_decoder_hook_speaks_codes_in_the_clips_voice(editx_with_decoder):
    prepared = editx_with_decoder.prepare_audio(_voice(1.2), RATE)
    codes = [i - 65536 for i in prepared.audio_ids]
    wav = editx_with_decoder._decode(codes, prepared)
    assert editx_with_decoder.sample_rate == 24000
    assert wav.shape == (1, 2880 * len(codes) // 5) and wav.dtype == torch.float32
    assert prepared.decoder_prompt is not None  # computed once, kept for the next call


@pytest.mark.slow
def test_clone_and_iterated_edit_end_to_end(editx_with_decoder):
    # The random LM does not keep the 2 vq02 + 3 vq06 layout; the decoder decodes such codes as the original does.
    wav, rate = editx_with_decoder.clone("hello there", _voice(1.2), "a clip", sample_rate=RATE)
    codes = editx_with_decoder.clone_codes("hello there", _voice(1.2), "a clip", sample_rate=RATE)
    assert rate == 24000 and wav.dtype == torch.float32
    assert wav.shape == (1, 2880 * -(-len(codes[0]) // 5))  # same seed: the codes clone() decoded
    steps = list(editx_with_decoder.edit_steps(_voice(1.5), "hello there", "emotion", "happy", 2, sample_rate=RATE))
    assert [step.iteration for step in steps] == [1, 2]
    for step in steps:
        assert step.sample_rate == 24000 and step.waveform.shape[0] == 1 and step.waveform.shape[1] % 2880 == 0
        assert torch.isfinite(step.waveform).all() and step.text == "hello there"
    final, rate = editx_with_decoder.edit(_voice(1.5), "hello there", "emotion", "happy", 2, sample_rate=RATE)
    assert torch.equal(final, steps[-1].waveform)  # edit() returns the last iteration, reproducibly
