"""Strict loading of flow.pt / hift.pt from a CosyVoice-300M-25Hz folder, and its error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from cosyvoice_fixtures import (  # noqa: F401  (pytest fixtures)
    RECIPE_SPELLINGS,
    assert_weights_equal_files,
    copy_decoder_folder,
    tiny_cosyvoice_dir,
    tiny_decoder,
)

from stepaudio.cosyvoice import CosyVoiceDecoder
from stepaudio.errors import (
    CheckpointConfigError,
    CheckpointFileNotFoundError,
    CheckpointKeyError,
    CheckpointShapeError,
)


def test_loaded_weights_equal_the_files(tiny_cosyvoice_dir: Path, tiny_decoder) -> None:  # noqa: F811
    assert_weights_equal_files(tiny_cosyvoice_dir, tiny_decoder)
    assert tiny_decoder.flow_dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in tiny_decoder.hift.parameters())


def test_legacy_weight_norm_pairs_define_the_conv_weight(tiny_cosyvoice_dir: Path, tiny_decoder) -> None:  # noqa: F811
    hift_file = torch.load(tiny_cosyvoice_dir / "hift.pt", weights_only=True)
    assert "conv_pre.weight_g" in hift_file and "conv_pre.weight_v" in hift_file
    assert "conv_pre.weight" not in hift_file
    g, v = hift_file["conv_pre.weight_g"], hift_file["conv_pre.weight_v"]
    expected = g * v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
    torch.testing.assert_close(tiny_decoder.hift.conv_pre.weight, expected)


def test_missing_file_names_full_path_and_layout(tiny_cosyvoice_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    (folder / "hift.pt").unlink()
    with pytest.raises(CheckpointFileNotFoundError) as caught:
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")
    message = str(caught.value)
    assert str(folder / "hift.pt") in message and "campplus.onnx" in message and "cosyvoice.yaml" in message


def test_wrong_shape_names_key_and_both_shapes(tiny_cosyvoice_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    state = torch.load(folder / "flow.pt", weights_only=True)
    state["encoder_proj.weight"] = torch.zeros(80, 31)
    torch.save(state, folder / "flow.pt")
    with pytest.raises(CheckpointShapeError, match=r"'encoder_proj.weight' has shape \[80, 31\].*expects \[80, 32\]"):
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")


def test_recipe_hyper_parameter_mismatch_is_reported_as_shape_error(
    tiny_cosyvoice_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    recipe = folder / "cosyvoice.yaml"
    recipe.write_text(recipe.read_text().replace("vocab_size: 5121", "vocab_size: 5120"))
    with pytest.raises(CheckpointShapeError, match=r"'input_embedding.weight' has shape \[5121, 32\].*\[5120, 32\]"):
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")


def test_missing_key_is_named(tiny_cosyvoice_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    state = torch.load(folder / "hift.pt", weights_only=True)
    del state["ups.1.weight_v"]
    torch.save(state, folder / "hift.pt")
    with pytest.raises(CheckpointKeyError, match=r"missing key 'ups.1.weight_v'") as caught:
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")
    assert caught.value.key == "ups.1.weight_v"


def test_extra_key_is_named(tiny_cosyvoice_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    state = torch.load(folder / "flow.pt", weights_only=True)
    state["encoder.encoders.0.conv_module.depthwise_conv.weight"] = torch.zeros(32, 1, 15)
    torch.save(state, folder / "flow.pt")
    with pytest.raises(CheckpointKeyError, match=r"unexpected key 'encoder.encoders.0.conv_module.depthwise_conv"):
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")


def test_music_variant_loads_with_different_weights(tmp_path: Path, tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    from stepaudio.testing.cosyvoice_fixture import build_tiny_cosyvoice_folder

    music = build_tiny_cosyvoice_folder(tmp_path / "CosyVoice-300M-25Hz-Music", seed=0, music=True)
    assert (music / "VERSION_Vq0206Vocoder_1202").stat().st_size == 0
    decoder = CosyVoiceDecoder.from_pretrained(music, device="cpu")
    normal = torch.load(tiny_cosyvoice_dir / "flow.pt", weights_only=True)
    assert not torch.equal(decoder.flow.input_embedding.weight, normal["input_embedding.weight"])


def test_fixture_is_deterministic(tmp_path: Path, tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    from stepaudio.testing.cosyvoice_fixture import build_tiny_cosyvoice_folder

    again = build_tiny_cosyvoice_folder(tmp_path / "again", seed=0)
    for name in ("cosyvoice.yaml", "campplus.onnx", "speech_tokenizer_v1.onnx"):
        assert (again / name).read_bytes() == (tiny_cosyvoice_dir / name).read_bytes()
    for name in ("flow.pt", "hift.pt"):
        first = torch.load(again / name, weights_only=True)
        second = torch.load(tiny_cosyvoice_dir / name, weights_only=True)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("spelling", sorted(RECIPE_SPELLINGS))
def test_from_pretrained_loads_every_recipe_spelling_without_warnings(
    spelling: str,
    tiny_cosyvoice_dir: Path,  # noqa: F811
    tiny_decoder,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    recipe = folder / "cosyvoice.yaml"
    recipe.write_text(RECIPE_SPELLINGS[spelling](recipe.read_text(encoding="utf-8")), encoding="utf-8")
    caplog.set_level(logging.WARNING)
    decoder = CosyVoiceDecoder.from_pretrained(folder, device="cpu")
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert decoder.mel_config == tiny_decoder.mel_config
    assert decoder.flow.input_frame_rate == tiny_decoder.flow.input_frame_rate
    assert decoder.flow.decoder.params == tiny_decoder.flow.decoder.params
    for mine, reference in ((decoder.flow, tiny_decoder.flow), (decoder.hift, tiny_decoder.hift)):
        state, expected = mine.state_dict(), reference.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)


def test_unsupported_recipe_value_names_file_entry_and_values(
    tiny_cosyvoice_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = copy_decoder_folder(tiny_cosyvoice_dir, tmp_path)
    recipe = folder / "cosyvoice.yaml"
    recipe.write_text(recipe.read_text().replace("use_cnn_module: False", "use_cnn_module: True"))
    with pytest.raises(CheckpointConfigError) as caught:
        CosyVoiceDecoder.from_pretrained(folder, device="cpu")
    message = str(caught.value)
    assert str(recipe) in message and "flow/encoder" in message
    assert "use_cnn_module=True" in message and "use_cnn_module=False" in message
    assert caught.value.file == recipe
