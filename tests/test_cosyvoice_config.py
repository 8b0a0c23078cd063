"""The hyperpyyaml recipe reader: tags become data (nothing imported), !ref resolves, errors are precise."""

from __future__ import annotations

import sys

import pytest
import torch

from stepaudio.cosyvoice import ObjectSpec, build_from_recipe, parse_recipe
from stepaudio.cosyvoice.flow import FlowModel
from stepaudio.cosyvoice.hift import HiFTGenerator
from stepaudio.errors import CheckpointConfigError
from stepaudio.testing.cosyvoice_fixture import TINY_HPARAMS, recipe_text


def test_recipe_tags_become_specs_without_importing_named_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    # a None entry in sys.modules makes any import of that name raise ImportError
    for name in ("cosyvoice", "matcha", "omegaconf", "hyperpyyaml"):
        monkeypatch.setitem(sys.modules, name, None)
    recipe = parse_recipe(recipe_text())
    with torch.device("meta"):
        build_from_recipe(recipe)
    flow = recipe["flow"]
    assert isinstance(flow, ObjectSpec)
    assert (flow.kind, flow.target) == ("new", "cosyvoice.flow.flow.MaskedDiffWithXvec")
    assert flow.kwargs["spk_embed_dim"] == 192  # !ref <spk_embed_dim>
    assert flow.kwargs["encoder"].kwargs["input_size"] == TINY_HPARAMS["token_dim"]  # !ref <text_encoder_input_size>
    assert recipe["hift"].kwargs["sampling_rate"] == 22050
    cfm_params = flow.kwargs["decoder"].kwargs["cfm_params"]
    assert cfm_params.target == "omegaconf.DictConfig"
    assert cfm_params.kwargs["content"]["sigma_min"] == pytest.approx(1e-6)  # YAML 1.2 float, not a string
    seed_line = recipe["__set_seed3"]
    assert (seed_line.kind, seed_line.target, seed_line.args) == ("apply", "torch.manual_seed", [1986])
    feat = recipe["feat_extractor"]
    assert (feat.kind, feat.target) == ("name", "matcha.utils.audio.mel_spectrogram")
    assert feat.kwargs["sampling_rate"] == 22050


def test_ref_arithmetic_nested_keys_and_copy() -> None:
    recipe = parse_recipe(
        "base: 4\nblock: {width: 8}\ndouble: !ref <base> * 2\nnested: !ref <block[width]>\n"
        "label: !ref <base>-wide\ncopied: !copy <block>\n"
    )
    assert recipe["double"] == 8
    assert recipe["nested"] == 8
    assert recipe["label"] == "4-wide"
    assert recipe["copied"] == {"width": 8} and recipe["copied"] is not recipe["block"]


def test_undefined_ref_names_the_key() -> None:
    with pytest.raises(CheckpointConfigError, match="sample_rat"):
        parse_recipe("hift: !new:cosyvoice.hifigan.generator.HiFTGenerator\n    sampling_rate: !ref <sample_rat>\n")


def test_invalid_yaml_and_non_mapping_are_config_errors() -> None:
    with pytest.raises(CheckpointConfigError, match="not a readable hyperpyyaml"):
        parse_recipe("flow: [unclosed\n")
    with pytest.raises(CheckpointConfigError, match="mapping"):
        parse_recipe("- 1\n- 2\n")


def test_recipe_builds_project_modules() -> None:
    with torch.device("meta"):
        built = build_from_recipe(parse_recipe(recipe_text()))
    assert isinstance(built.flow, FlowModel) and isinstance(built.hift, HiFTGenerator)
    assert built.flow.vocab_size == 5121 and built.flow.input_frame_rate == pytest.approx(41.6666666667)
    assert built.flow.decoder.params.inference_cfg_rate == pytest.approx(0.7)
    assert built.feat_extractor.fmax == 8000 and built.feat_extractor.hop_size == 256


def test_unknown_class_path_is_a_clear_error() -> None:
    text = recipe_text().replace("cosyvoice.flow.length_regulator.InterpolateRegulator",
                                 "cosyvoice.flow.length_regulator.MysteryRegulator")
    with pytest.raises(CheckpointConfigError, match=r"flow/length_regulator.*MysteryRegulator"):
        build_from_recipe(parse_recipe(text))


def test_unsupported_encoder_option_is_rejected() -> None:
    text = recipe_text().replace("pos_enc_layer_type: 'rel_pos_espnet'", "pos_enc_layer_type: 'abs_pos'")
    with pytest.raises(CheckpointConfigError, match="pos_enc_layer_type='abs_pos'"):
        build_from_recipe(parse_recipe(text))


def test_missing_required_entry_is_named() -> None:
    text = recipe_text().split("hift: !new:")[0]
    with pytest.raises(CheckpointConfigError, match="no 'hift' entry"):
        build_from_recipe(parse_recipe(text))
