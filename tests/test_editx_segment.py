"""Long inputs of Step-Audio-EditX: audio cut at pauses, transcripts shared out, outputs joined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepaudio.editx.segment import (
    StreamedJoin,
    join_audio,
    segment_audio,
    share_text,
    split_clone_text,
    split_tagged_like,
)


def _speech_with_pauses(rate: int, seconds: float, pauses: list[float]) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wav = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    for at in pauses:
        wav[int((at - 0.1) * rate) : int((at + 0.1) * rate)] = 0.0
    return wav


def test_short_audio_is_one_span():
    wav = np.ones(16000 * 5, dtype=np.float32)
    assert segment_audio(wav, 16000, max_seconds=30) == [(0, 16000 * 5)]


def test_long_audio_is_cut_at_pauses_and_covered_exactly():
    rate = 16000
    wav = _speech_with_pauses(rate, 75.0, pauses=[27.0, 54.0])
    spans = segment_audio(wav, rate, max_seconds=30)
    assert spans[0][0] == 0 and spans[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))
    assert all(end - start <= 30 * rate for start, end in spans)
    cuts = [end / rate for _, end in spans[:-1]]
    assert len(spans) == 3
    assert abs(cuts[0] - 27.0) < 0.1 and abs(cuts[1] - 54.0) < 0.1  # inside the silent stretches


def test_share_text_prefers_sentence_ends_near_proportional_places():
    text = "First sentence here. Second one is longer, with a clause. Third."
    pieces = share_text(text, [1.0, 2.0])
    assert pieces == ["First sentence here.", "Second one is longer, with a clause. Third."]
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    cjk = share_text("今天天气很好。我们去公园玩吧！", [1.0, 1.0])
    assert cjk == ["今天天气很好。", "我们去公园玩吧！"]


def test_share_text_gives_every_span_text():
    pieces = share_text("abc", [1.0, 1.0, 1.0])
    assert pieces == ["a", "b", "c"]
    assert share_text("hello", [3.0]) == ["hello"]


def test_tagged_text_is_cut_like_the_plain_text():
    plain = ["我觉得这个计划大概是可行的，", "不过还需要再仔细考虑一下。"]
    tagged = "我觉得这个计划大概是可行的，[Uhm]不过还需要再仔细考虑一下。"
    assert split_tagged_like(tagged, plain) == ["我觉得这个计划大概是可行的，[Uhm]", "不过还需要再仔细考虑一下。"]


def test_join_crossfades_and_keeps_length():
    rate = 1000
    a, b, c = torch.ones(1, 300), torch.ones(1, 200), torch.ones(1, 5)
    out = join_audio([a, b, c], rate, crossfade_seconds=0.01)
    assert out.shape == (1, 300 + 200 + 5 - 10 - 5)
    assert torch.allclose(out[0, :290], torch.ones(290))
    assert join_audio([torch.zeros(1, 0)], rate).shape == (1, 0)


def test_clone_text_split_keeps_language_prefix():
    pieces = split_clone_text("[Sichuanese]你好。今天天气真好！我们走吧。", max_chars=10)
    assert pieces == ["[Sichuanese]你好。今天天气真好！", "[Sichuanese]我们走吧。"]
    assert split_clone_text("short", 120) == ["short"]


@pytest.mark.parametrize("bad", [0.5, float("nan")])
def test_segment_length_is_checked(bad):
    with pytest.raises(ValueError, match="max_seconds must be a"):
        segment_audio(np.zeros(10, dtype=np.float32), 16000, max_seconds=bad)


@pytest.mark.parametrize(
    "lengths",
    [
        [5000],
        [5000, 7000, 3000],
        [0, 4000, 0, 6000],
        [3000, 100, 2500],  # a piece shorter than the fade: the fade is capped by it
        [150, 100, 5000],  # output shorter than the fade when the next piece comes
        [100],
    ],
)
def test_streamed_join_equals_join_audio_for_any_chunking(lengths):
    rate, generator = 24000, torch.Generator().manual_seed(len(lengths))
    pieces = [torch.randn(1, n, generator=generator) for n in lengths]
    expected = join_audio(pieces, rate)
    for seed in range(3):
        sizes = torch.Generator().manual_seed(seed)
        joiner, out = StreamedJoin(rate), []
        for piece in pieces:
            joiner.start_piece()
            start = 0
            while start < piece.shape[1]:
                size = int(torch.randint(1, 900, (1,), generator=sizes))
                out.append(joiner.feed(piece[:, start : start + size]))
                start += size
            out.append(joiner.end_piece())
        out.append(joiner.close())
        assert torch.equal(torch.cat(out, dim=1), expected)
        assert out[-1].shape[1] <= 240  # at most the 10 ms fade is held back at the end
