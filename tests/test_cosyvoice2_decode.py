"""Offline and streamed decoding with the Step-Audio-EditX (24 kHz) decoder, on the tiny random folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from cosyvoice2_fixtures import (  # noqa: F401  (pytest fixtures)
    editx_prompt,
    mixed_codes,
    tiny_cosyvoice2_dir,
    tiny_decoder_24k,
)

from stepaudio.cosyvoice2 import ChunkPlan, StreamConfig, check_mixed_tokens, limit_prompt_peak, mixed_to_dual
from stepaudio.errors import AudioTokenError, InvalidArgumentError, PromptError

#: streamed audio equals offline decoding with ``attention="chunked"`` to this absolute tolerance (fp32, CPU);
#: measured differences are about 1e-7 (float rounding of the cached vs. masked attention)
STREAM_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread) -> None:
    """Decode with one intra-op thread (the test machine is shared)."""


@pytest.fixture
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_mixed_codes_become_time_aligned_pairs() -> None:
    steps = mixed_to_dual([1, 2, 1030, 1031, 5119, 7, 8, 1024])
    expected = [[1, 1031], [2, 1032], [1024, 5120], [7, 1025], [8, 1025], [1024, 1025]]
    assert steps.tolist() == expected  # the partial group is completed with vq02 0 / vq06 1024 (row 1025)
    assert mixed_to_dual([3]).tolist() == [[3, 1025], [0, 1025], [1024, 1025]]


def test_code_errors_are_specific() -> None:
    with pytest.raises(AudioTokenError, match=r"^codes\[0\] = 65537 is an LLM token id; pass audio codes \(subtract"):
        check_mixed_tokens([65537], "codes")
    with pytest.raises(AudioTokenError, match=r"^codes\[1\] = 5120 is not an audio code 0..5119"):
        check_mixed_tokens([1, 5120], "codes")
    with pytest.raises(AudioTokenError, match=r"^codes\[0\] = -1 is not an audio code 0..5119"):
        check_mixed_tokens([-1], "codes")
    with pytest.raises(AudioTokenError, match="expected integer audio codes, got dtype torch.float32"):
        check_mixed_tokens(torch.tensor([1.0]), "codes")


def test_misaligned_codes_decode_as_the_original_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Both columns index one 5121-row table, so the original decodes a code of the other codebook without
    # complaint (vq06 5 -> row 6, vq02 2000 -> row 2000); we do the same and say so once.
    with caplog.at_level("WARNING", logger="stepaudio.cosyvoice2.tokens"):
        assert check_mixed_tokens([1, 2, 5, 6, 7], "codes") == [1, 2, 5, 6, 7]
    assert [r.getMessage() for r in caplog.records] == [
        "codes[2] = 5 sits in a vq06 slot (position 2, slot 2 of 5) but is a code of the other codebook: the "
        "sequence is not in groups of 2 vq02 + 3 vq06 codes; decoded as the original does (that audio is not "
        "meaningful)"
    ]
    assert mixed_to_dual([1, 2, 5, 6, 7]).tolist() == [[1, 6], [2, 7], [1024, 8]]
    caplog.clear()
    with caplog.at_level("WARNING", logger="stepaudio.cosyvoice2.tokens"):
        check_mixed_tokens([2000], "piece", start=5)
    assert "piece[0] = 2000 sits in a vq02 slot (position 5, slot 0 of 5)" in caplog.records[0].getMessage()


def test_chunk_plan_follows_the_original_schedule() -> None:
    plan = ChunkPlan((15, 24, 48), 3, 96)
    assert plan.chunks(17) == [17]
    assert plan.chunks(18) == [15, 3]
    assert plan.chunks(15 + 24 + 3) == [15, 24, 3]
    assert plan.chunks(15 + 24 + 48 + 48 + 10) == [15, 24, 48, 48, 10]


@pytest.mark.parametrize("count", [1, 5, 7, 23, 60])
def test_offline_length_is_2880_samples_per_group(tiny_decoder_24k, editx_prompt, count: int) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    wav = tiny_decoder_24k.token_to_wav_offline(mixed_codes(count // 5, 1, count % 5), prompt, feat, embedding)
    assert wav.dtype == torch.float32 and wav.shape == (1, 2880 * -(-count // 5))
    assert torch.isfinite(wav).all() and wav.abs().max() > 0
    assert tiny_decoder_24k.token_to_wav_offline([], prompt, feat, embedding).shape == (1, 0)


def test_offline_is_deterministic_per_seed_and_uses_the_prompt(tiny_decoder_24k, editx_prompt) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    codes = mixed_codes(12, 2)
    first = tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding, seed=5)
    torch.testing.assert_close(
        tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding, seed=5), first, rtol=0, atol=0
    )
    assert not torch.equal(tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding, seed=6), first)
    other_speaker = tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding.flip(1), seed=5)
    assert not torch.equal(other_speaker, first)
    no_prompt = tiny_decoder_24k.token_to_wav_offline(codes, [], torch.zeros(1, 0, 80), embedding, seed=5)
    assert no_prompt.shape == first.shape and not torch.equal(no_prompt, first)


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_streaming_equals_chunked_offline(tiny_decoder_24k, editx_prompt, piece: int) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    codes = mixed_codes(40, 3, extra=2)  # 202 codes = 123 steps: chunks of 15, 24, 48, then the rest (36)
    offline = tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding, attention="chunked")
    pieces = [codes[start : start + piece] for start in range(0, len(codes), piece)]
    chunks = list(tiny_decoder_24k.token_to_wav_stream(iter(pieces), prompt, feat, embedding))
    streamed = torch.cat(chunks, dim=1)
    assert streamed.shape == offline.shape == (1, 2880 * 41)
    torch.testing.assert_close(streamed, offline, rtol=0, atol=STREAM_TOLERANCE)
    # small pieces: one output per flow chunk, the last also flushing the held-back frames; one piece: feed + close
    assert len(chunks) == (2 if piece == 1000 else 4)


def test_first_audio_comes_with_the_first_chunk(tiny_decoder_24k, editx_prompt) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    stream = tiny_decoder_24k.stream(prompt, feat, embedding)
    assert stream.first_audio_codes == 30  # (15 + 3 look-ahead) steps = 6 groups of 5 codes
    fed = 0
    for code in mixed_codes(8, 4):
        audio = stream.feed(code)
        fed += 1
        if audio.shape[1]:
            break
    assert fed == 30 and stream.state.prompt_done
    assert audio.shape == (1, (2 * 15 - StreamConfig().vocoder_lookahead_frames) * 480)  # 0.36 s at once
    assert stream.state.flow.prompt_frames == 2 * 3 * 12  # the prompt went through the flow first


def test_stream_shorter_than_first_chunk_flushes_everything(tiny_decoder_24k, editx_prompt) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    codes = mixed_codes(2, 6, extra=3)
    stream = tiny_decoder_24k.stream(prompt, feat, embedding, seed=9)
    assert stream.feed(codes).shape == (1, 0)
    tail = stream.close()
    offline = tiny_decoder_24k.token_to_wav_offline(codes, prompt, feat, embedding, seed=9, attention="chunked")
    assert tail.shape == (1, 3 * 2880)
    torch.testing.assert_close(tail, offline, rtol=0, atol=STREAM_TOLERANCE)


def test_a_misaligned_stream_warns_once_per_utterance(tiny_decoder_24k, editx_prompt, caplog) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    stream = tiny_decoder_24k.stream(prompt, feat, embedding, seed=9)
    with caplog.at_level("WARNING", logger="stepaudio.cosyvoice2.tokens"):
        for code in [2000, 7, 1500, 1600, 1700] * 3:  # every group starts with a vq06 code in a vq02 slot
            stream.feed([code])
        stream.close()
        assert len(caplog.records) == 1
        stream.reset()  # a new utterance may warn again
        stream.feed([2000])
    assert len(caplog.records) == 2


def test_full_attention_differs_from_chunked_only_after_the_first_chunk(tiny_decoder_24k, editx_prompt) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    short = mixed_codes(5, 7, extra=3)  # 18 steps < first chunk + look-ahead + 1: one chunk, same attention
    full = tiny_decoder_24k.token_to_wav_offline(short, prompt, feat, embedding)
    chunked = tiny_decoder_24k.token_to_wav_offline(short, prompt, feat, embedding, attention="chunked")
    assert not torch.equal(full, chunked)  # the prompt attends to the speech only in the full decode
    with pytest.raises(InvalidArgumentError, match="attention"):
        tiny_decoder_24k.token_to_wav_offline(short, prompt, feat, embedding, attention="causal")


def test_prompt_errors_are_specific(tiny_decoder_24k, editx_prompt) -> None:  # noqa: F811
    prompt, feat, embedding = editx_prompt
    with pytest.raises(PromptError, match=r"^speech_feat must be a prompt mel \[1, T, 80\], got \(75, 80\)"):
        tiny_decoder_24k.token_to_wav_offline([1, 2], prompt, feat[0], embedding)
    with pytest.raises(PromptError, match=r"^embedding must be a \[1, 192\] x-vector, got \(1, 80\)"):
        tiny_decoder_24k.stream(prompt, feat, embedding[:, :80])
    with pytest.raises(PromptError, match=r"prompt_token \(0 codes\) and speech_feat \(75 frames\) must be both"):
        tiny_decoder_24k.token_to_wav_offline([1, 2], [], feat, embedding)
    with pytest.raises(AudioTokenError, match=r"^prompt_token\[0\] = 65536 is an LLM token id"):
        tiny_decoder_24k.token_to_wav_offline([1, 2], [65536] + prompt[1:], feat, embedding)


def test_prompt_features_from_a_clip(tiny_decoder_24k, shared_audio_dir: Path) -> None:  # noqa: F811
    waveform, rate = sf.read(shared_audio_dir / "speakers" / "Tingting_prompt.wav", dtype="float32")
    clip = limit_prompt_peak(waveform[: rate * 2])
    assert float(clip.abs().max()) <= 0.6 + 1e-6
    features = tiny_decoder_24k.prompt_features(clip, rate)
    frames = features.speech_feat.shape[1]
    assert features.speech_feat.shape == (1, frames, 80) and abs(frames - 100) <= 1  # 50 frames per second
    assert features.speech_feat_len.tolist() == [frames] and features.embedding.shape == (1, 192)
    quiet = np.full(1000, 0.1, dtype=np.float32)
    assert torch.equal(limit_prompt_peak(quiet), torch.from_numpy(quiet))
