"""Token-to-waveform decoding: output length, determinism, streaming vs offline, first-chunk latency."""

from __future__ import annotations

import pytest
import torch
from cosyvoice_fixtures import one_torch_thread, tingting_prompt, tiny_cosyvoice_dir, tiny_decoder  # noqa: F401

from stepaudio.cosyvoice import StreamingConfig
from stepaudio.errors import AudioTokenError, PromptError, StreamClosedError

TOKEN_RATE = 41.6666666667

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tokens(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 5120, (1, count), generator=torch.Generator().manual_seed(seed))


def _short_prompt(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, 40, 80, generator=generator) - 5
    return mel, torch.tensor([40], dtype=torch.int32), _tokens(20, seed), torch.tensor([20]), torch.randn(1, 192)


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


@pytest.mark.parametrize("count", [1, 2, 41, 97])
def test_offline_length_follows_token_to_frame_rule(tiny_decoder, count: int) -> None:  # noqa: F811
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    waveform = tiny_decoder.token_to_wav_offline(_tokens(count), mel, mel_len, prompt, prompt_len, embedding)
    frames = int(count / TOKEN_RATE * 22050 / 256)
    assert waveform.shape == (1, frames * 256)
    assert waveform.dtype == torch.float32
    assert bool(torch.isfinite(waveform).all())
    if frames:
        assert float(waveform.abs().max()) <= 0.99 and float(waveform.std()) > 1e-4


def test_offline_is_deterministic_per_seed_and_uses_the_prompt(tiny_decoder) -> None:  # noqa: F811
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    tokens = _tokens(60)
    first = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, embedding)
    again = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, embedding)
    other_seed = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, embedding, seed=5)
    other_speaker = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, -embedding)
    assert torch.equal(first, again)

    def relative_change(other: torch.Tensor) -> float:
        return float((other - first).norm() / first.norm())

    assert relative_change(other_seed) > 0.05
    assert relative_change(other_speaker) > 5e-4


def test_zero_shot_without_prompt(tiny_decoder) -> None:  # noqa: F811
    waveform = tiny_decoder.token_to_wav_offline(_tokens(50), torch.zeros(1, 0, 80), 0,
                                                 torch.zeros(1, 0, dtype=torch.long), 0, torch.randn(1, 192))
    assert waveform.shape == (1, int(50 / TOKEN_RATE * 22050 / 256) * 256)


def test_input_errors_are_specific(tiny_decoder) -> None:  # noqa: F811
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    with pytest.raises(AudioTokenError, match="5121"):
        tiny_decoder.token_to_wav_offline(torch.tensor([[5121]]), mel, mel_len, prompt, prompt_len, embedding)
    with pytest.raises(PromptError, match=r"\[1, T, 80\]"):
        tiny_decoder.token_to_wav_offline(_tokens(5), mel[0], mel_len, prompt, prompt_len, embedding)
    with pytest.raises(PromptError, match="both present or both empty"):
        tiny_decoder.token_to_wav_offline(_tokens(5), mel, mel_len, prompt[:, :0], 0, embedding)


@pytest.mark.parametrize(
    "config",
    [StreamingConfig(), StreamingConfig(first_chunk_tokens=10, chunk_tokens=20, chunk_growth=1.0, lookahead_tokens=8,
                                        left_context_tokens=40)],
    ids=["default", "small-chunks"],
)
def test_streaming_matches_offline(tiny_decoder, tingting_prompt, config: StreamingConfig) -> None:  # noqa: F811
    """Bound: SNR of the concatenated stream against the offline waveform >= 20 dB, same length, same seed."""
    features, prompt_tokens = tingting_prompt
    tokens = _tokens(250)  # 6 s of speech tokens: 8 flow windows
    args = (features.speech_feat, features.speech_feat_len, prompt_tokens, torch.tensor([prompt_tokens.shape[1]]),
            features.embedding)
    offline = tiny_decoder.token_to_wav_offline(tokens, *args)
    chunks = list(tiny_decoder.token_to_wav_stream(iter(tokens[0].tolist()), *args, config=config))
    streamed = torch.cat(chunks, dim=1)
    assert len(chunks) >= 5
    assert streamed.shape == offline.shape
    assert _snr_db(offline, streamed) >= 20.0
    # no clicks: the largest sample step at chunk borders is no larger than the largest step inside the offline audio
    borders = torch.tensor([c.shape[1] for c in chunks[:-1]]).cumsum(0)
    steps = (streamed[0, 1:] - streamed[0, :-1]).abs()
    assert float(steps[borders - 1].max()) <= float((offline[0, 1:] - offline[0, :-1]).abs().max())


def test_stream_output_does_not_depend_on_piece_sizes(tiny_decoder) -> None:  # noqa: F811
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    tokens = _tokens(130)[0].tolist()
    one_by_one = torch.cat(list(tiny_decoder.token_to_wav_stream(tokens, mel, mel_len, prompt, prompt_len,
                                                                 embedding)), dim=1)
    pieces = [tokens[:7], tokens[7:70], tokens[70:71], tokens[71:]]
    in_pieces = torch.cat(list(tiny_decoder.token_to_wav_stream(pieces, mel, mel_len, prompt, prompt_len,
                                                                embedding)), dim=1)
    torch.testing.assert_close(one_by_one, in_pieces, rtol=0, atol=1e-6)


@pytest.mark.parametrize("count", [80, 200])
def test_first_chunk_after_bounded_token_count(tiny_decoder, count: int) -> None:  # noqa: F811
    config = StreamingConfig()
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    stream = tiny_decoder.stream(mel, mel_len, prompt, prompt_len, embedding, config)
    first_audio_at = None
    for index, token in enumerate(_tokens(count)[0].tolist(), start=1):
        if stream.feed(token).shape[1] and first_audio_at is None:
            first_audio_at = index
    stream.close()
    assert first_audio_at == config.tokens_before_first_audio == 25
    assert stream.state.emitted_samples == int(count / TOKEN_RATE * 22050 / 256) * 256
    # windows while feeding commit first_chunk_tokens, then chunk_tokens each, once their look-ahead has
    # arrived; close() commits the rest in one more window
    targets = torch.tensor([config.window_tokens(k) for k in range(count)]).cumsum(0).tolist()
    fed_windows = sum(1 for t in targets if t + config.lookahead_tokens <= count)
    expected_windows = fed_windows + (targets[fed_windows - 1] < count)
    assert [config.window_tokens(k) for k in range(5)] == [15, 30, 60, 120, 120]
    assert stream.state.flow_windows == expected_windows
    with pytest.raises(StreamClosedError):
        stream.feed(1)


def test_stream_shorter_than_first_chunk_flushes_everything(tiny_decoder) -> None:  # noqa: F811
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    tokens = _tokens(12)
    stream = tiny_decoder.stream(mel, mel_len, prompt, prompt_len, embedding)
    assert stream.feed(tokens).shape == (1, 0)
    tail = stream.close()
    offline = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, embedding)
    assert tail.shape == offline.shape
    assert _snr_db(offline, tail) >= 20.0


def test_bfloat16_flow_matches_float32(tiny_cosyvoice_dir, tiny_decoder) -> None:  # noqa: F811
    from stepaudio.cosyvoice import CosyVoiceDecoder

    bf16 = CosyVoiceDecoder.from_pretrained(tiny_cosyvoice_dir, device="cpu", dtype=torch.bfloat16)
    assert next(bf16.flow.parameters()).dtype == torch.bfloat16
    assert next(bf16.hift.parameters()).dtype == torch.float32
    mel, mel_len, prompt, prompt_len, embedding = _short_prompt()
    tokens = _tokens(40)
    reference = tiny_decoder.token_to_wav_offline(tokens, mel, mel_len, prompt, prompt_len, embedding)
    reduced = bf16.token_to_wav_offline(tokens, mel.bfloat16(), mel_len, prompt, prompt_len, embedding.bfloat16())
    assert reduced.dtype == torch.float32 and reduced.shape == reference.shape
    assert _snr_db(reference, reduced) >= 20.0
