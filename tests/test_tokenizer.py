"""StepAudioTokenizer on the tiny official-layout fixture folder and the real speech in ../shared/audio."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import stepaudio.resample
from stepaudio.errors import (
    AudioInputError,
    AudioTokenError,
    CheckpointFileNotFoundError,
    InputFileError,
    InvalidArgumentError,
)
from stepaudio.testing.tokenizer_fixture import build_tiny_tokenizer_checkpoint
from stepaudio.tokenizer import StepAudioTokenizer, deinterleave, ids_to_string, interleave, string_to_ids
from stepaudio.tokenizer.layout import PARAFORMER_SUBFOLDER

RATE_CLIPS = ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav", "speakers/Tingting_prompt.wav")


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir: Path) -> Iterator[StepAudioTokenizer]:
    # One torch thread: the tiny encoder's ops are far too small to gain from threads, and on a
    # shared 2-core machine OpenMP barriers make two threads ~50x slower. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    torch.set_num_threads(threads)


def _read(path: Path) -> tuple[np.ndarray, int]:
    audio, sr = soundfile.read(str(path), dtype="float32")
    return audio, sr


def _stream(tok: StepAudioTokenizer, audio: np.ndarray, sr: int, chunk: int, **kwargs: object) -> list[int]:
    session = tok.stream(sr, **kwargs)
    ids: list[int] = []
    for start in range(0, len(audio), chunk):
        ids += session.feed(audio[start : start + chunk])
    return ids + session.close()


# ------------------------------------------------------------------------------------------ fixture
def test_fixture_paraformer_folder_has_the_official_form(tiny_tokenizer_dir: Path) -> None:
    import json

    import yaml

    sub = tiny_tokenizer_dir / PARAFORMER_SUBFOLDER
    assert sorted(p.name for p in sub.iterdir()) == [
        "am.mvn",
        "config.yaml",
        "configuration.json",
        "model.pt",
        "tokens.json",
    ]
    metas = json.loads((sub / "configuration.json").read_text())["file_path_metas"]
    assert metas["init_param"] == "model.pt" and metas["config"] == "config.yaml"
    assert metas["frontend_conf"]["cmvn_file"] == "am.mvn"
    config = yaml.safe_load((sub / "config.yaml").read_text())
    assert config["frontend_conf"]["dither"] == 0.0
    assert (config["model"], config["encoder"], config["frontend"]) == (
        "ParaformerStreaming",
        "SANMEncoderChunkOpt",
        "WavFrontendOnline",
    )
    saved = torch.load(sub / "model.pt", weights_only=True)
    prefixes = {key.split(".")[0] for key in saved}
    assert prefixes == {"encoder", "decoder", "predictor"}  # the whole model, as the official file
    centroids = np.load(tiny_tokenizer_dir / "linguistic_tokenizer.npy")
    assert centroids.shape == (1024, config["encoder_conf"]["output_size"]) and centroids.dtype == np.float32


def test_fixture_onnx_has_official_io(tiny_tokenizer_dir: Path) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tiny_tokenizer_dir / "speech_tokenizer_v1.onnx"))
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["feats", "feats_length"]
    assert inputs["feats"].type == "tensor(float)" and inputs["feats"].shape[:2] == [1, 128]
    assert inputs["feats_length"].type == "tensor(int32)"
    (output,) = session.get_outputs()
    assert output.name == "indices" and output.type in ("tensor(int64)", "tensor(int32)")
    for frames, expected in ((3000, 750), (421, 106), (7, 2)):
        feats = np.zeros((1, 128, frames), np.float32)
        (codes,) = session.run(None, {"feats": feats, "feats_length": np.array([frames], np.int32)})
        assert codes.shape == (1, expected)


def test_fixture_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_tokenizer_checkpoint(tmp_path / "a", seed=3)
    second = build_tiny_tokenizer_checkpoint(tmp_path / "b", seed=3)
    other = build_tiny_tokenizer_checkpoint(tmp_path / "c", seed=4)
    npy = "linguistic_tokenizer.npy"
    assert (first / npy).read_bytes() == (second / npy).read_bytes() != (other / npy).read_bytes()
    a = torch.load(first / PARAFORMER_SUBFOLDER / "model.pt", weights_only=True)
    b = torch.load(second / PARAFORMER_SUBFOLDER / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (first / PARAFORMER_SUBFOLDER / "am.mvn").read_text() == (
        second / PARAFORMER_SUBFOLDER / "am.mvn"
    ).read_text()


# ---------------------------------------------------------------------------------- rates and layout
@pytest.mark.parametrize("clip", RATE_CLIPS)
def test_token_rates_on_real_speech(tokenizer: StepAudioTokenizer, shared_audio_dir: Path, clip: str) -> None:
    path = shared_audio_dir / clip
    duration = soundfile.info(str(path)).duration
    ids, vq02, vq06 = tokenizer.wav2token(path, enable_trim=False)
    assert abs(len(vq02) - duration * 1000 / 60) <= 2  # 16.67 Hz
    assert abs(len(vq06) - duration * 25) <= 2  # 25 Hz
    groups = min(len(vq02) // 2, len(vq06) // 3)
    assert len(ids) == 5 * groups
    # 41.67 ids/s; whole 2+3 groups only, so up to one group (5 ids) plus rounding can be missing.
    assert abs(len(ids) - duration * 125 / 3) <= 7
    assert all(0 <= c < 1024 for c in vq02) and all(0 <= c < 4096 for c in vq06)
    assert len(set(vq02)) > 5 and len(set(vq06)) > 5  # real speech gives varied codes


def test_interleave_order_and_offsets() -> None:
    vq02 = [0, 1, 2, 3, 1023]
    vq06 = [10, 11, 12, 13, 14, 4095, 7]
    ids = interleave(vq02, vq06)
    assert ids == [65536, 65537, 66570, 66571, 66572, 65538, 65539, 66573, 66574, 70655]
    assert deinterleave(ids) == ([0, 1, 2, 3], [10, 11, 12, 13, 14, 4095])
    assert ids_to_string(ids[:3]) == "<audio_0><audio_1><audio_1034>"


def test_wav2token_ids_match_codes_and_string_round_trip(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    path = shared_audio_dir / "BAC009S0764W0122.wav"
    ids, vq02, vq06 = tokenizer.wav2token(path, enable_trim=False)
    split02, split06 = deinterleave(ids)
    assert split02 == vq02[: len(split02)] and split06 == vq06[: len(split06)]
    text = tokenizer(path)
    assert text == ids_to_string(ids)  # tok(path) = no trim, energy norm on
    assert string_to_ids(text) == ids
    audio, sr = _read(path)
    assert tokenizer(audio, sr) == text
    with pytest.raises(AudioTokenError, match=f"malformed audio string at character {len(text)}"):
        string_to_ids(text + "x")


def test_trim_changes_length_not_rate(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    path = shared_audio_dir / "speakers" / "Tingting_prompt.wav"
    untrimmed = tokenizer.wav2token(path, enable_trim=False)[0]
    trimmed = tokenizer.wav2token(path, enable_trim=True)[0]
    assert 0 < len(trimmed) <= len(untrimmed) + 5


# -------------------------------------------------------------------------------------- streaming
def test_stream_exact_context_equals_offline(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    audio, sr = _read(shared_audio_dir / "prompt_wav_yuqian.wav")  # 44.1 kHz, resampled in the stream
    offline = tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=False)[0]
    streamed = _stream(tokenizer, audio, sr, 4410, semantic_right_context_s=30)
    assert streamed == offline


def test_stream_default_context_bound(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    """Default bounded context: same length, vq02 identical, vq06 differs in at most 5% of codes."""
    for clip, chunk in (("BAC009S0764W0121.wav", 1600), ("prompt_wav_yuqian.wav", 7777)):
        audio, sr = _read(shared_audio_dir / clip)
        offline = tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=False)[0]
        streamed = _stream(tokenizer, audio, sr, chunk)
        assert len(streamed) == len(offline)
        s02, s06 = deinterleave(streamed)
        o02, o06 = deinterleave(offline)
        assert s02 == o02
        mismatches = sum(a != b for a, b in zip(s06, o06, strict=True))
        assert mismatches <= 0.05 * len(o06), f"{clip}: {mismatches}/{len(o06)} vq06 codes differ"


def test_stream_with_known_peak_equals_energy_normalised_offline(
    tokenizer: StepAudioTokenizer, shared_audio_dir: Path
) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    offline = tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=True)[0]
    peak = float(np.abs(audio).max())  # 16 kHz input: the 16 kHz peak is the input peak
    streamed = _stream(tokenizer, audio, sr, 3000, peak=peak, semantic_right_context_s=30)
    assert streamed == offline


def test_causal_gain_on_the_whole_clip_equals_energy_normalised_offline(
    tokenizer: StepAudioTokenizer, shared_audio_dir: Path
) -> None:
    """One chunk holds the clip's peak, so the running peak is the clip's peak from the start."""
    for clip in ("BAC009S0764W0121.wav", "piper_en_22k.wav"):  # 16 kHz, and 22.05 kHz through the resampler
        audio, sr = _read(shared_audio_dir / clip)
        offline = tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=True)[0]
        assert offline != tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=False)[0]
        session = tokenizer.stream(sr, causal_gain=True, semantic_right_context_s=30)
        assert session.feed(audio) + session.close() == offline
        peak_16k = float(np.abs(stepaudio.resample.resample(audio, sr, 16000)).max())
        assert session.state.running_peak == peak_16k and session.state.gain == 0.999 / peak_16k


def test_causal_gain_does_not_depend_on_the_input_level(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    """Same ids at x0.05 and x1.0 when every encode sees a running peak above the 0.01 floor at both levels.

    piper_en_22k reaches peak 0.36 in its first 240 ms (0.018 at x0.05) before the first vq02 stride
    is encoded.  The AISHELL clip stays below 0.005 for its first 240 ms: at x0.05 the floor makes the
    early gain differ from the x1.0 one (as offline energy_norm differs when a peak is below 0.01), so
    there the invariance holds only between levels where the floor never binds (x4 and x16: power-of-two
    factors, so even float rounding is the same).
    """

    def ids(audio: np.ndarray, sr: int, level: float) -> list[int]:
        return _stream(tokenizer, (audio * np.float32(level)).astype(np.float32), sr, 512, causal_gain=True)

    audio, sr = _read(shared_audio_dir / "piper_en_22k.wav")
    loud = ids(audio, sr, 1.0)
    assert ids(audio, sr, 0.05) == loud
    assert loud != _stream(tokenizer, audio * np.float32(0.05), sr, 512)  # without the gain the level matters

    audio, sr = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    assert float(np.abs(audio[:3840]).max()) < 0.005  # the floor binds at x0.05 ...
    assert ids(audio, sr, 4.0) == ids(audio, sr, 16.0)  # ... but not at x4 or x16


def test_causal_gain_follows_the_running_peak(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0122.wav")
    audio = np.concatenate([np.zeros(4800, np.float32), audio * np.float32(0.5)])  # peak 0.036
    session = tokenizer.stream(sr, causal_gain=True, semantic_right_context_s=0.3)
    gains = []
    for start in range(0, len(audio), 512):
        session.feed(audio[start : start + 512])
        gains.append(session.state.gain)
        assert session.state.running_peak == float(np.abs(audio[: start + 512]).max())
        assert session.state.running_peak * session.state.gain <= 0.999 + 1e-12  # nothing scaled above 0.999
    session.close()
    assert gains[0] == 0.999 / 0.01  # silence: the floor
    assert all(later <= earlier for earlier, later in zip(gains[:-1], gains[1:], strict=True))
    assert session.state.running_peak * session.state.gain == pytest.approx(0.999)


def test_peak_and_causal_gain_are_refused_together(tokenizer: StepAudioTokenizer) -> None:
    message = (
        "peak must be None when causal_gain=True, got 0.5; pass peak (the clip's peak, known in advance) "
        "or causal_gain=True (a running peak), not both"
    )
    with pytest.raises(InvalidArgumentError) as caught:
        tokenizer.stream(16000, peak=0.5, causal_gain=True)
    assert str(caught.value) == message
    assert caught.value.name == "peak" and caught.value.value == 0.5
    with pytest.raises(InvalidArgumentError, match=r"^causal_gain must be"):
        tokenizer.stream(16000, causal_gain="yes")


def test_stream_emits_early_and_irregular_chunks(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0122.wav")
    session = tokenizer.stream(sr, semantic_right_context_s=30)
    rng = np.random.default_rng(0)
    position, first_output_at, ids = 0, None, []
    while position < len(audio):
        size = int(rng.integers(0, 5000))
        new = session.feed(audio[position : position + size])
        position += size
        if new and first_output_at is None:
            first_output_at = position
        ids += new
        assert len(new) % 5 == 0  # only whole 2+3 groups are emitted
    ids += session.close()
    assert ids == tokenizer.wav2token(audio, sr, enable_trim=False, energy_norm=False)[0]
    # With the default context, output starts about 1 s (right context) into the audio, not at the end.
    session = tokenizer.stream(sr)
    first = None
    for start in range(0, len(audio), 1600):
        if session.feed(audio[start : start + 1600]) and first is None:
            first = start + 1600
    session.close()
    assert first is not None and first <= 1.6 * sr


def test_stream_state_is_bounded_on_long_input(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    """Per-chunk work does not grow with history: buffered audio and the encoder's cache stay bounded."""
    clips = [_read(shared_audio_dir / name)[0] for name in ("BAC009S0764W0121.wav", "BAC009S0764W0122.wav")]
    long_audio = np.concatenate(clips * 5)  # ~42 s, crosses a 30 s vq06 window
    session = tokenizer.stream(16000)
    sizes = []
    for start in range(0, len(long_audio), 4000):
        session.feed(long_audio[start : start + 4000])
        encoder_state = session.linguistic.state.encoder  # per-layer look-back keys / values
        cached_values = sum(
            k.numel() + v.numel() for k, v in zip(encoder_state.keys, encoder_state.values, strict=True)
        )
        sizes.append((len(session.semantic.state.buffer), len(session.linguistic.state.pending), cached_values))
    session.close()
    assert max(s[0] for s in sizes) <= (3.0 + 1.0 + 0.5) * 16000  # left + right context + one chunk
    assert max(s[1] for s in sizes) < 3840  # less than one Paraformer stride waits
    late = {s[2] for s in sizes[len(sizes) // 4 :]}
    assert len(late) == 1 and late.pop() > 0  # the encoder cache stops growing after the look-back fills


def test_concurrent_sessions_are_independent(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    a, sr = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    b, _ = _read(shared_audio_dir / "BAC009S0764W0122.wav")
    alone_a = _stream(tokenizer, a, sr, 2000)
    alone_b = _stream(tokenizer, b, sr, 2000)
    sa, sb = tokenizer.stream(sr), tokenizer.stream(sr)
    out_a, out_b = [], []
    for start in range(0, max(len(a), len(b)), 2000):
        out_a += sa.feed(a[start : start + 2000])
        out_b += sb.feed(b[start : start + 2000])
    out_a += sa.close()
    out_b += sb.close()
    assert out_a == alone_a and out_b == alone_b and out_a != out_b


# ---------------------------------------------------------------------------------- sample rates
def test_sample_rates_give_equal_lengths(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    assert sr == 16000
    reference = tokenizer.wav2token(audio, sr, enable_trim=False)[0]
    for rate in (8000, 22050, 44100, 48000):
        ids = tokenizer.wav2token(stepaudio.resample.resample(audio, sr, rate), rate, enable_trim=False)[0]
        assert abs(len(ids) - len(reference)) <= 5, rate


def test_16k_input_is_never_resampled(
    tokenizer: StepAudioTokenizer, shared_audio_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0122.wav")
    before = tokenizer.wav2token(audio, sr, enable_trim=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the resampler was used for 16 kHz input")

    # every resampling path (offline and streaming) builds a kernel and convolves with it
    monkeypatch.setattr(stepaudio.resample, "_kernel", refuse)
    monkeypatch.setattr(stepaudio.resample, "_convolve", refuse)
    assert tokenizer.wav2token(audio, sr, enable_trim=False) == before
    assert tokenizer.preprocess_wav(audio, sr, enable_trim=False, normalize=False) is not None
    np.testing.assert_array_equal(tokenizer.preprocess_wav(audio, sr, enable_trim=False, normalize=False), audio)
    assert _stream(tokenizer, audio, sr, 4000)


# --------------------------------------------------------------------------------------- bad input
def test_bad_array_inputs(tokenizer: StepAudioTokenizer) -> None:
    with pytest.raises(AudioInputError, match="empty"):
        tokenizer.wav2token(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioInputError, match="all zeros"):
        tokenizer.wav2token(np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioInputError, match="at least 0.1 s"):
        tokenizer.wav2token(np.full(1500, 0.1, np.float32), 16000)
    noisy = np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        broken = noisy.copy()
        broken[100] = bad
        with pytest.raises(AudioInputError, match="NaN/inf"):
            tokenizer.wav2token(broken, 16000)
    with pytest.raises(AudioInputError, match=r"\[T, C\]"):
        tokenizer.wav2token(np.stack([noisy, noisy], axis=1), 16000)
    with pytest.raises(AudioInputError, match="sample rate"):
        tokenizer.wav2token(noisy)
    session = tokenizer.stream(16000)
    with pytest.raises(AudioInputError, match="NaN/inf"):
        session.feed(np.array([0.0, np.nan], np.float32))


def test_three_channel_audio_is_mixed_to_mono(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    audio, sr = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    channels = np.stack([audio, 0.5 * audio, np.roll(audio, 800)])
    mixed = channels.mean(axis=0).astype(np.float32)
    assert tokenizer.wav2token(channels, sr) == tokenizer.wav2token(mixed, sr)


def test_int_pcm_and_torch_inputs(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    path = shared_audio_dir / "BAC009S0764W0122.wav"
    pcm, sr = soundfile.read(str(path), dtype="int16")
    expected = tokenizer.wav2token(path, enable_trim=False)
    assert tokenizer.wav2token(pcm, sr, enable_trim=False) == expected
    assert (
        tokenizer.wav2token(torch.from_numpy(pcm.astype(np.float32) / 32768)[None], sr, enable_trim=False) == expected
    )


def test_bad_files(tokenizer: StepAudioTokenizer, shared_audio_dir: Path, tmp_path: Path) -> None:
    hum = tokenizer.wav2token(shared_audio_dir / "speakers" / "Tingting哼唱_prompt.wav", enable_trim=False)  # 24-bit
    assert len(hum[0]) > 400
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes((shared_audio_dir / "BAC009S0764W0121.wav").read_bytes()[:40])
    not_audio = tmp_path / "readme.wav"
    not_audio.write_text("not audio at all\n" * 50)
    for path in (corrupt, not_audio, shared_audio_dir, tmp_path / "missing.flac"):
        with pytest.raises(AudioInputError, match=str(path.name)):
            tokenizer.wav2token(path)


@pytest.mark.parametrize(
    "relative",
    [
        "linguistic_tokenizer.npy",
        "speech_tokenizer_v1.onnx",
        f"{PARAFORMER_SUBFOLDER}/model.pt",
        f"{PARAFORMER_SUBFOLDER}/am.mvn",
        f"{PARAFORMER_SUBFOLDER}/config.yaml",
    ],
)
def test_missing_checkpoint_file_names_path_and_layout(tiny_tokenizer_dir: Path, tmp_path: Path, relative: str) -> None:
    folder = tmp_path / "Step-Audio-Tokenizer"
    shutil.copytree(tiny_tokenizer_dir, folder)
    (folder / relative).unlink()
    with pytest.raises(CheckpointFileNotFoundError) as caught:
        StepAudioTokenizer(folder, device="cpu")
    message = str(caught.value)
    assert str(folder.resolve() / relative) in message
    assert "Step-Audio-Tokenizer folder" in message and PARAFORMER_SUBFOLDER in message
    assert "speech_tokenizer_v1.onnx" in message and "huggingface.co" in message and "\n" not in message
    assert caught.value.file == folder.resolve() / relative


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFileNotFoundError, match="does not exist"):
        StepAudioTokenizer(tmp_path / "nowhere", device="cpu")


# ------------------------------------------------------------------------------- batch, mel, CLI
def test_batch_wav2token_equals_single_calls(tokenizer: StepAudioTokenizer, shared_audio_dir: Path) -> None:
    paths = [shared_audio_dir / "BAC009S0764W0121.wav", shared_audio_dir / "espeak_en.flac"]
    audio, sr = _read(shared_audio_dir / "piper_en_22k.wav")
    batch = tokenizer.batch_wav2token([*paths, (audio, sr)], enable_trim=False, progress=True)
    assert batch == [tokenizer.wav2token(p, enable_trim=False) for p in paths] + [
        tokenizer.wav2token(audio, sr, enable_trim=False)
    ]


def test_whisper_log_mel_matches_transformers(shared_audio_dir: Path) -> None:
    from transformers import WhisperFeatureExtractor

    from stepaudio.tokenizer.mel import whisper_log_mel

    audio, _ = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    reference = WhisperFeatureExtractor(feature_size=128)(
        audio, sampling_rate=16000, padding="longest", return_tensors="np"
    ).input_features[0]
    ours = whisper_log_mel(audio).numpy()
    assert ours.shape == reference.shape == (128, len(audio) // 160)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_cli_tokenize(
    tiny_tokenizer_dir: Path, shared_audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from stepaudio.tokenizer.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    files = [shared_audio_dir / "BAC009S0764W0121.wav", shared_audio_dir / "espeak_en.mp3"]
    output = tmp_path / "out.jsonl"
    args = parser.parse_args(
        ["tokenize", "--model-path", str(tiny_tokenizer_dir), *map(str, files), "--output", str(output)]
    )
    assert args.func(args) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["path"] for r in records] == [str(f) for f in files]
    for record in records:
        assert record["num_tokens"] == len(string_to_ids(record["tokens"])) > 0
    args = parser.parse_args(["tokenize", "--model-path", str(tiny_tokenizer_dir), str(files[0]), "--no-progress"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.strip())["tokens"] == records[0]["tokens"]
    args = parser.parse_args(["tokenize", "--model-path", str(tmp_path / "nowhere"), str(files[0])])
    with pytest.raises(InputFileError, match="--model-path .*nowhere does not exist"):  # checked before loading
        args.func(args)


def test_compare_ids_counts_positional_differences_and_the_length_difference():
    from stepaudio.tokenizer.interleave import compare_ids

    assert compare_ids([1, 2, 3], [1, 2, 3]) == (0, 0)
    assert compare_ids([1, 9, 3, 4, 5], [1, 2, 3]) == (1, 2)
    assert compare_ids([7], [1, 2, 3]) == (1, -2)
    assert compare_ids([], []) == (0, 0)
