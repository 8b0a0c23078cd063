"""Strict loading of the Step-Audio-EditX (24 kHz) decoder folder, recipe reading, and decoder selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cosyvoice2_fixtures import tiny_cosyvoice2_dir, tiny_decoder_24k  # noqa: F401  (pytest fixtures)
from cosyvoice_fixtures import assert_weights_equal_files, copy_decoder_folder, tiny_cosyvoice_dir  # noqa: F401

from stepaudio.cosyvoice import CosyVoiceDecoder
from stepaudio.cosyvoice.config import parse_recipe
from stepaudio.cosyvoice2 import CosyVoice2Decoder, build_24k_recipe, decoder_kind, load_speech_decoder
from stepaudio.errors import (
    CheckpointConfigError,
    CheckpointFileNotFoundError,
    CheckpointKeyError,
    CheckpointShapeError,
)
from stepaudio.testing.cosyvoice2_fixture import OFFICIAL_HPARAMS_24K, recipe_text_24k


def test_loaded_weights_equal_the_files(tiny_cosyvoice2_dir: Path, tiny_decoder_24k) -> None:  # noqa: F811
    assert_weights_equal_files(tiny_cosyvoice2_dir, tiny_decoder_24k)
    assert tiny_decoder_24k.sample_rate == 24000 and tiny_decoder_24k.samples_per_step == 960


def test_official_key_names(tiny_cosyvoice2_dir: Path) -> None:  # noqa: F811
    flow = torch.load(tiny_cosyvoice2_dir / "flow.pt", weights_only=True)
    hift = torch.load(tiny_cosyvoice2_dir / "hift.pt", weights_only=True)
    for key in (
        "input_embedding.embedding.weight",
        "encoder.embed.out.0.weight",
        "encoder.pre_lookahead_layer.conv1.weight",
        "encoder.encoders.0.self_attn.pos_bias_u",
        "encoder.up_layer.conv.weight",
        "encoder.up_embed.out.1.bias",
        "encoder.up_encoders.0.feed_forward.w_1.weight",
        "decoder.estimator.t_embedder.mlp.2.weight",
        "decoder.estimator.blocks.1.attn.q_norm.weight",
        "decoder.estimator.blocks.0.conv.block.6.weight",
        "decoder.estimator.blocks.0.adaLN_modulation.1.weight",
        "decoder.estimator.final_layer.adaLN_modulation.1.bias",
    ):
        assert key in flow, key
    assert flow["input_embedding.embedding.weight"].shape == (5121, 16)
    assert "conv_pre.parametrizations.weight.original0" in hift and "conv_pre.weight_g" not in hift
    assert "f0_predictor.condnet.8.parametrizations.weight.original1" in hift and "m_source.l_linear.weight" in hift


def test_official_sizes_build_on_meta() -> None:
    with torch.device("meta"):
        built = build_24k_recipe(parse_recipe(recipe_text_24k(OFFICIAL_HPARAMS_24K)))
    flow = built.flow.state_dict()
    assert flow["input_embedding.embedding.weight"].shape == (5121, 256)
    assert flow["decoder.estimator.in_proj.weight"].shape == (512, 320)
    assert flow["decoder.estimator.blocks.15.adaLN_modulation.1.weight"].shape == (9 * 512, 512)
    assert flow["encoder.pre_lookahead_layer.conv1.weight"].shape == (512, 512, 4)
    assert flow["encoder.up_layer.conv.weight"].shape == (512, 512, 5)
    hift = built.hift.state_dict()
    assert hift["ups.2.parametrizations.weight.original1"].shape == (128, 64, 7)
    assert built.hift.samples_per_frame == 480 and built.mel_config.hop_size == 480


def test_missing_file_names_full_path(tiny_cosyvoice2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice2_dir, tmp_path)
    (folder / "hift.pt").unlink()
    with pytest.raises(CheckpointFileNotFoundError, match="hift.pt not found; the 24 kHz decoder expects") as caught:
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")
    assert caught.value.file == folder / "hift.pt" and caught.value.folder == folder
    assert str(folder / "hift.pt") in str(caught.value)


def test_missing_key_names_file_and_key(tiny_cosyvoice2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice2_dir, tmp_path)
    state = torch.load(folder / "flow.pt", weights_only=True)
    del state["decoder.estimator.blocks.1.attn.k_norm.bias"]
    torch.save(state, folder / "flow.pt")
    with pytest.raises(CheckpointKeyError) as caught:
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")
    assert str(caught.value).startswith(
        "flow.pt: missing key 'decoder.estimator.blocks.1.attn.k_norm.bias' (expected shape [16])"
    )
    assert caught.value.key == "decoder.estimator.blocks.1.attn.k_norm.bias"
    assert caught.value.file == folder / "flow.pt" and caught.value.folder == folder


def test_wrong_shape_names_key_and_both_shapes(tiny_cosyvoice2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice2_dir, tmp_path)
    state = torch.load(folder / "hift.pt", weights_only=True)
    state["source_downs.2.weight"] = torch.zeros(4, 18, 3)
    torch.save(state, folder / "hift.pt")
    with pytest.raises(CheckpointShapeError) as caught:
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")
    assert str(caught.value).startswith("hift.pt: key 'source_downs.2.weight' has shape [4, 18, 3] but the model")
    assert caught.value.key == "source_downs.2.weight" and caught.value.file == folder / "hift.pt"


def test_legacy_weight_norm_names_are_refused(tiny_cosyvoice2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice2_dir, tmp_path)
    state = torch.load(folder / "hift.pt", weights_only=True)
    state = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in state.items()
    }
    torch.save(state, folder / "hift.pt")
    with pytest.raises(CheckpointKeyError, match=r"^hift.pt: missing key '.*parametrizations\.weight\.original"):
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")


def test_recipe_errors_name_file_and_entry(tiny_cosyvoice2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = copy_decoder_folder(tiny_cosyvoice2_dir, tmp_path)
    recipe = folder / "cosyvoice.yaml"
    text = recipe.read_text()
    recipe.write_text(text.replace("pos_enc_layer_type: 'rel_pos_espnet'", "pos_enc_layer_type: 'rel_pos'"))
    with pytest.raises(CheckpointConfigError) as caught:
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")
    assert str(caught.value) == (
        f"{recipe}: recipe entry flow/encoder (stepvocoder.cosyvoice2.transformer.upsample_encoder_v2."
        "UpsampleConformerEncoderV2): pos_enc_layer_type='rel_pos' is not supported, stepaudio implements "
        "pos_enc_layer_type='rel_pos_espnet'"
    )
    recipe.write_text(
        text.replace(
            "hift: !new:stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator",
            "hift: !new:stepvocoder.cosyvoice2.bigvgan.bigvgan.BigVGAN",
        )
    )
    with pytest.raises(CheckpointConfigError, match="the BigVGAN vocoder is not implemented"):
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")
    recipe.write_text(text.split("\nmel_conf:")[0])
    with pytest.raises(CheckpointConfigError, match=r"has no 'mel_conf' entry \(the prompt mel settings\)"):
        CosyVoice2Decoder.from_pretrained(folder, device="cpu")


def test_load_speech_decoder_picks_the_class_from_the_recipe(
    tiny_cosyvoice_dir: Path,  # noqa: F811
    tiny_cosyvoice2_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert decoder_kind(tiny_cosyvoice_dir) == "cosyvoice-22k"
    assert decoder_kind(tiny_cosyvoice2_dir) == "cosyvoice2-24k"
    old = load_speech_decoder(tiny_cosyvoice_dir, device="cpu")
    new = load_speech_decoder(tiny_cosyvoice2_dir, device="cpu", seed=3, n_timesteps=4)
    assert type(old) is CosyVoiceDecoder and old.sample_rate == 22050
    assert type(new) is CosyVoice2Decoder and new.sample_rate == 24000 and new.seed == 3 and new.n_timesteps == 4
    with pytest.raises(CheckpointFileNotFoundError, match="cosyvoice.yaml not found; pass a CosyVoice-300M-25Hz"):
        load_speech_decoder(tmp_path)
    (tmp_path / "cosyvoice.yaml").write_text("flow: !new:my.Thing\n    a: 1\n")
    with pytest.raises(CheckpointConfigError, match=r"'flow' is !new:my.Thing; expected !new:...MaskedDiffWithXvec"):
        load_speech_decoder(tmp_path)
