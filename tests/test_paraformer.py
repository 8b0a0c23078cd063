"""The native streaming Paraformer (vq02 encoder): official layout, strict loading, stride rules, batching."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stepaudio.errors import CheckpointConfigError, CheckpointError, CheckpointKeyError, CheckpointShapeError
from stepaudio.tokenizer.layout import PARAFORMER_SUBFOLDER
from stepaudio.tokenizer.linguistic import STRIDE_SAMPLES, LinguisticTokenizer
from stepaudio.tokenizer.paraformer import (
    ParaformerEncoderConfig,
    StreamingParaformerEncoder,
    load_paraformer_encoder,
    read_paraformer_config,
)
from stepaudio.tokenizer.paraformer_frontend import OnlineFrontend, pcm_strides, read_am_mvn


def _copy(tiny_tokenizer_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, folder)
    return folder, folder / PARAFORMER_SUBFOLDER


def _load(folder: Path) -> LinguisticTokenizer:
    return LinguisticTokenizer(
        folder / PARAFORMER_SUBFOLDER, folder / "linguistic_tokenizer.npy", torch.device("cpu"), folder
    )


@pytest.fixture(scope="module")
def linguistic(tiny_tokenizer_dir: Path) -> LinguisticTokenizer:
    return _load(tiny_tokenizer_dir)


def _speech(shared_audio_dir: Path, length: int) -> np.ndarray:
    import soundfile

    audio, _ = soundfile.read(str(shared_audio_dir / "BAC009S0764W0122.wav"), dtype="float32")
    return np.ascontiguousarray(np.tile(audio, 1 + length // len(audio))[:length] * 3.0, dtype=np.float32)


# --------------------------------------------------------------------------------------- architecture
def test_official_encoder_has_the_published_keys_and_shapes() -> None:
    with torch.device("meta"):
        encoder = StreamingParaformerEncoder(ParaformerEncoderConfig())
    shapes = encoder.expected_shapes()
    assert shapes["encoder.encoders0.0.self_attn.linear_q_k_v.weight"] == (1536, 560)
    assert shapes["encoder.encoders0.0.self_attn.linear_out.weight"] == (512, 512)
    assert shapes["encoder.encoders0.0.self_attn.fsmn_block.weight"] == (512, 1, 11)
    assert shapes["encoder.encoders0.0.norm1.weight"] == (560,)
    assert shapes["encoder.encoders.48.feed_forward.w_1.weight"] == (2048, 512)
    assert shapes["encoder.encoders.48.feed_forward.w_2.weight"] == (512, 2048)
    assert shapes["encoder.after_norm.bias"] == (512,)
    assert "encoder.encoders.49.norm1.weight" not in shapes  # 1 + 49 blocks
    assert len(shapes) == 13 * 50 + 2


# ------------------------------------------------------------------------------------------ frontend
def test_strides_follow_the_original_cut(linguistic: LinguisticTokenizer) -> None:
    assert [(len(p), f) for p, f in pcm_strides(np.zeros(3840 * 2 + 10, np.float32), 3840)] == [
        (3840, False),
        (3840, False),
        (10, True),
    ]
    # A clip of whole strides has no final stride (the original stops on the empty piece).
    assert [f for _, f in pcm_strides(np.zeros(3840 * 2, np.float32), 3840)] == [False, False]


@pytest.mark.parametrize(
    ("tail", "expected_final_frames"),
    # 320 samples are carried from the full strides and one fbank row stays in the LFR history: 880 more
    # samples make the 6 rows that complete one 7-row window; 1439 make 9 rows -> 2 (the last one padded).
    [(0, None), (1, 0), (399, 0), (879, 0), (880, 1), (1439, 2), (1920, 2), (3839, 4)],
)
def test_frame_counts_per_stride(linguistic: LinguisticTokenizer, tail: int, expected_final_frames: int | None) -> None:
    """Two full strides give 4 LFR frames each; the final stride follows the original's LFR/padding rules."""
    state = linguistic.new_state()
    audio = np.sin(np.arange(3840 * 2 + tail) * 0.05).astype(np.float32) * 0.5
    counts = [
        linguistic.encode_stride_frames(state, piece, final).shape[0] for piece, final in pcm_strides(audio, 3840)
    ]
    assert counts[:2] == [4, 4]
    assert (counts[2] if len(counts) == 3 else None) == expected_final_frames


def test_am_mvn_is_read_and_checked(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    cmvn = read_am_mvn(sub / "am.mvn", 560, folder)
    assert cmvn.shape == (2, 560) and cmvn.dtype == torch.float32
    assert float(cmvn[0].mean()) < -5 and 0 < float(cmvn[1].mean()) < 1  # shift, then scale
    with pytest.raises(CheckpointConfigError, match="has 560 values but the LFR features have 600"):
        read_am_mvn(sub / "am.mvn", 600, folder)
    text = (sub / "am.mvn").read_text().replace("<Rescale>", "<Scale>")
    (sub / "am.mvn").write_text(text)
    with pytest.raises(CheckpointConfigError, match="has no <Rescale> vector"):
        read_am_mvn(sub / "am.mvn", 560, folder)


def test_dither_in_config_is_not_applied_and_warned_once(tiny_tokenizer_dir: Path, tmp_path: Path, caplog) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    config = yaml.safe_load((sub / "config.yaml").read_text())
    assert config["frontend_conf"]["dither"] == 0.0
    config["frontend_conf"]["dither"] = 1.0
    (sub / "config.yaml").write_text(yaml.safe_dump(config))
    _, frontend_config = read_paraformer_config(sub / "config.yaml", folder)
    with caplog.at_level(logging.WARNING):
        frontend = OnlineFrontend(frontend_config, read_am_mvn(sub / "am.mvn", 560, folder))
    assert [r.message for r in caplog.records if "dither" in r.message]
    audio = torch.from_numpy(np.sin(np.arange(3840) * 0.1).astype(np.float32))
    first = frontend.feed(frontend.new_state(), audio, final=True)
    assert torch.equal(first, frontend.feed(frontend.new_state(), audio, final=True))  # deterministic


# ------------------------------------------------------------------------------------------- loading
def test_model_pt_wrapped_in_state_dict_loads_the_same(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    plain, _ = load_paraformer_encoder(sub, folder, torch.device("cpu"))
    torch.save({"state_dict": torch.load(sub / "model.pt", weights_only=True)}, sub / "model.pt")
    wrapped, _ = load_paraformer_encoder(sub, folder, torch.device("cpu"))
    for (name, a), (_, b) in zip(plain.state_dict().items(), wrapped.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def _edit_model(sub: Path, edit) -> None:
    state = torch.load(sub / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, sub / "model.pt")


def test_missing_encoder_tensor_is_named(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    _edit_model(sub, lambda s: s.pop("encoder.encoders.1.norm2.bias"))
    with pytest.raises(
        CheckpointKeyError, match=r"tensor encoder\.encoders\.1\.norm2\.bias is missing from .*model\.pt"
    ):
        _load(folder)


def test_unexpected_encoder_tensor_is_named(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    _edit_model(sub, lambda s: s.__setitem__("encoder.encoders.7.norm1.weight", torch.ones(64)))
    with pytest.raises(CheckpointKeyError, match=r"encoder\.encoders\.7\.norm1\.weight is not an encoder tensor"):
        _load(folder)


def test_decoder_tensors_are_not_needed(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    _edit_model(sub, lambda s: [s.pop(k) for k in list(s) if not k.startswith("encoder.")])
    audio = np.sin(np.arange(9000) * 0.03).astype(np.float32)
    assert _load(folder).encode(audio) == _load(tiny_tokenizer_dir).encode(audio)


def test_wrong_shape_is_named_with_both_shapes(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    _edit_model(sub, lambda s: s.__setitem__("encoder.after_norm.weight", torch.ones(65)))
    with pytest.raises(CheckpointShapeError, match=r"encoder\.after_norm\.weight has shape \[65\] .* needs \[64\]"):
        _load(folder)


def test_truncated_model_pt_is_reported(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    data = (sub / "model.pt").read_bytes()
    (sub / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        _load(folder)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("encoder", "ConformerEncoder", "encoder is 'ConformerEncoder', expected 'SANMEncoderChunkOpt'"),
        ("frontend", "WavFrontend", "frontend is 'WavFrontend', expected 'WavFrontendOnline'"),
        ("encoder_conf.input_layer", "conv2d", "encoder_conf.input_layer is 'conv2d', expected 'pe_online'"),
        ("frontend_conf.window", "kaiser", "frontend_conf.window is 'kaiser', expected one of"),
        ("encoder_conf.output_size", "big", "encoder_conf.output_size is 'big', expected a non-negative int"),
    ],
)
def test_config_errors_name_the_key(tiny_tokenizer_dir: Path, tmp_path: Path, key: str, value: str, message: str):
    folder, sub = _copy(tiny_tokenizer_dir, tmp_path)
    config = yaml.safe_load((sub / "config.yaml").read_text())
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    (sub / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(folder)


# ---------------------------------------------------------------------------------- batch and stream
def test_batch_equals_one_clip_at_a_time(linguistic: LinguisticTokenizer, shared_audio_dir: Path) -> None:
    clips = [_speech(shared_audio_dir, n) for n in (1700, STRIDE_SAMPLES * 3, 20001, 7681, 16000)]
    assert linguistic.encode_batch(clips) == [linguistic.encode(clip) for clip in clips]
    assert linguistic.encode_batch([]) == []


def test_stride_stream_equals_offline_for_any_chunking(linguistic: LinguisticTokenizer, shared_audio_dir: Path):
    from stepaudio.tokenizer.linguistic import LinguisticStream

    audio = _speech(shared_audio_dir, 30001)
    offline = linguistic.encode(audio)
    for chunk in (1, 1000, 3840, 5555):
        stream = LinguisticStream(linguistic)
        codes = []
        for start in range(0, len(audio), chunk if chunk > 1 else 997):
            codes += stream.feed(audio[start : start + (chunk if chunk > 1 else 997)])
        assert codes + stream.close() == offline
    stream.reset()
    assert stream.state.strides_done == 0 and stream.state.encoder.position == 0
