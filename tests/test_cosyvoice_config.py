"""The hyperpyyaml recipe reader: tags become data (nothing imported), !ref resolves, errors are precise."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys

import pytest
import torch
from cosyvoice_fixtures import RECIPE_SPELLINGS, full_training_recipe

from stepaudio.cosyvoice import ObjectSpec, build_from_recipe, parse_recipe
from stepaudio.cosyvoice.builder import RECIPE_TARGETS, DecoderRecipe
from stepaudio.cosyvoice.config import INFERENCE_KEYS, RefSpec
from stepaudio.cosyvoice.flow import FlowModel
from stepaudio.cosyvoice.hift import HiFTGenerator
from stepaudio.errors import CheckpointConfigError
from stepaudio.testing.cosyvoice_fixture import TINY_HPARAMS, recipe_text

SOURCE = "/models/CosyVoice-300M-25Hz/cosyvoice.yaml"


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
    assert (feat.kind, feat.target) == ("name", "cosyvoice.matcha.audio.mel_spectrogram")  # Step-Audio's tree
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
    text = recipe_text().replace(
        "cosyvoice.flow.length_regulator.InterpolateRegulator", "cosyvoice.flow.length_regulator.MysteryRegulator"
    )
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


# ------------------------------------------------------------------------------------ spellings


def _decoder_config(built: DecoderRecipe) -> dict:
    """Everything that defines the built decoder: module types, parameter shapes and inference settings."""
    return {
        "flow": {key: (type(value).__name__, tuple(value.shape)) for key, value in built.flow.state_dict().items()},
        "hift": {key: (type(value).__name__, tuple(value.shape)) for key, value in built.hift.state_dict().items()},
        "feat_extractor": dataclasses.asdict(built.feat_extractor),
        "cfm_params": dataclasses.asdict(built.flow.decoder.params),
        "input_frame_rate": built.flow.input_frame_rate,
        "vocab_size": built.flow.vocab_size,
        "hift_sampling_rate": built.hift.sampling_rate,
    }


def _build(text: str) -> DecoderRecipe:
    with torch.device("meta"):
        return build_from_recipe(parse_recipe(text, source=SOURCE), source=SOURCE)


def test_fixture_recipe_uses_the_original_step_audio_spelling() -> None:
    text = recipe_text()
    assert "feat_extractor: !name:cosyvoice.matcha.audio.mel_spectrogram" in text
    assert "selfattention_layer_type: 'rel_selfattn'" in text and "selfattn_layer_type" not in text
    assert "matcha.utils" not in text


@pytest.mark.parametrize("spelling", sorted(RECIPE_SPELLINGS))
def test_every_recipe_spelling_builds_the_same_decoder_without_warnings(
    spelling: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing a recipe names may be imported, whatever its prefix
    for name in ("cosyvoice", "matcha", "omegaconf", "hyperpyyaml", "whisper", "vendor"):
        monkeypatch.setitem(sys.modules, name, None)
    reference = _decoder_config(_build(recipe_text()))
    text = RECIPE_SPELLINGS[spelling](recipe_text())
    caplog.set_level(logging.WARNING)
    built = _build(text)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert _decoder_config(built) == reference


@pytest.mark.parametrize(
    ("text", "target"),
    [
        (recipe_text(), "cosyvoice.matcha.audio.mel_spectrogram"),
        (RECIPE_SPELLINGS["cosyvoice-recipe-matcha-utils"](recipe_text()), "matcha.utils.audio.mel_spectrogram"),
        (RECIPE_SPELLINGS["foreign-module-prefix"](recipe_text()), "vendor.step_audio.models.mel_spectrogram"),
    ],
)
def test_classes_and_functions_match_by_final_name(text: str, target: str) -> None:
    recipe = parse_recipe(text)
    assert recipe["feat_extractor"].target == target and recipe["feat_extractor"].name == "mel_spectrogram"
    assert _build(text).feat_extractor.hop_size == 256


def test_sections_inference_does_not_need_are_skipped_with_one_debug_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = full_training_recipe(recipe_text())
    recipe = parse_recipe(text, source=SOURCE)
    skipped = set(recipe) - set(INFERENCE_KEYS)
    assert {"llm", "get_tokenizer", "allowed_special", "tokenize", "filter", "resample", "compute_fbank"} <= skipped
    assert {"parse_embedding", "shuffle", "sort", "batch", "padding", "data_pipeline", "train_conf"} <= skipped
    assert {"optim", "scheduler", "__set_seed1", "__set_seed4"} <= skipped
    caplog.set_level(logging.DEBUG, logger="stepaudio.cosyvoice.builder")
    with torch.device("meta"):
        build_from_recipe(recipe, source=SOURCE)
    lines = [record for record in caplog.records if record.name == "stepaudio.cosyvoice.builder"]
    assert all(record.levelno == logging.DEBUG for record in lines)
    named = [re.search(r"skipping '([^']+)'", record.getMessage()).group(1) for record in lines]
    assert sorted(named) == sorted(skipped)  # exactly one line per skipped section
    seed_line = next(r.getMessage() for r in lines if "'__set_seed3'" in r.getMessage())
    assert "!apply:torch.manual_seed" in seed_line and SOURCE in seed_line


def test_skipped_sections_are_read_as_data_only() -> None:
    recipe = parse_recipe(full_training_recipe(recipe_text()))
    # the text LM's encoder uses chunk masks, which would be an error if it were ever built
    assert recipe["llm"].kwargs["text_encoder"].kwargs["static_chunk_size"] == 1
    assert recipe["compute_fbank"].kwargs["feat_extractor"] is recipe["feat_extractor"]  # !ref to an entry
    assert [spec.name for spec in recipe["data_pipeline"]][:3] == ["parquet_opener", "tokenize", "filter"]
    assert (recipe["activation_module"].kind, recipe["activation_module"].target) == ("module", "torch.nn.functional")
    assert recipe["kernel_pair"] == (3, 5)
    assert recipe["__set_seed2"].tag == "!apply:numpy.random.seed"


def test_broken_ref_outside_the_inference_entries_does_not_fail() -> None:
    text = full_training_recipe(recipe_text()).replace("!ref <allowed_special>", "!ref <allowed_specials>")
    recipe = parse_recipe(text)
    assert isinstance(recipe["tokenize"].kwargs["allowed_special"], RefSpec)  # left unresolved
    assert isinstance(_build(text).flow, FlowModel)


def test_legacy_selfattn_spelling_loads_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    # earlier stepaudio fixtures wrote this; the original ConformerEncoder rejects it
    text = recipe_text().replace("selfattention_layer_type:", "selfattn_layer_type:")
    caplog.set_level(logging.WARNING)
    assert _decoder_config(_build(text)) == _decoder_config(_build(recipe_text()))
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "selfattn_layer_type" in warnings[0] and "selfattention_layer_type" in warnings[0]
    assert SOURCE in warnings[0] and "flow/encoder" in warnings[0]


def test_argument_the_original_rejects_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    text = recipe_text().replace("    nb_harmonics: 8\n", "    nb_harmonics: 8\n    n_harmonics: 8\n")
    caplog.set_level(logging.WARNING)
    _build(text)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "n_harmonics" in warnings[0] and "hift" in warnings[0]


#: the parameters of the original classes/functions (Step-Audio's cosyvoice package, signature order)
ORIGINAL_PARAMETERS = {
    "MaskedDiffWithXvec": "input_size output_size spk_embed_dim output_type vocab_size input_frame_rate "
    "only_mask_loss encoder length_regulator decoder decoder_conf mel_feat_conf",
    "ConformerEncoder": "input_size output_size attention_heads linear_units num_blocks dropout_rate "
    "positional_dropout_rate attention_dropout_rate input_layer pos_enc_layer_type normalize_before "
    "static_chunk_size use_dynamic_chunk global_cmvn use_dynamic_left_chunk positionwise_conv_kernel_size "
    "macaron_style selfattention_layer_type activation_type use_cnn_module cnn_module_kernel causal "
    "cnn_module_norm key_bias gradient_checkpointing",
    "InterpolateRegulator": "channels sampling_ratios out_channels groups",
    "ConditionalCFM": "in_channels cfm_params n_spks spk_emb_dim estimator",
    "ConditionalDecoder": "in_channels out_channels channels dropout attention_head_dim n_blocks num_mid_blocks "
    "num_heads act_fn",
    "HiFTGenerator": "in_channels base_channels nb_harmonics sampling_rate nsf_alpha nsf_sigma nsf_voiced_threshold "
    "upsample_rates upsample_kernel_sizes istft_params resblock_kernel_sizes resblock_dilation_sizes "
    "source_resblock_kernel_sizes source_resblock_dilation_sizes lrelu_slope audio_limit f0_predictor",
    "ConvRNNF0Predictor": "num_class in_channels cond_channels",
    "mel_spectrogram": "y n_fft num_mels sampling_rate hop_size win_size fmin fmax center",
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_PARAMETERS))
def test_builders_take_exactly_the_original_parameters(name: str) -> None:
    assert RECIPE_TARGETS[name].parameters == tuple(ORIGINAL_PARAMETERS[name].split())


def test_every_original_encoder_argument_is_accepted_silently(caplog: pytest.LogCaptureFixture) -> None:
    neutral = (
        "        static_chunk_size: 0\n        use_dynamic_chunk: False\n        use_dynamic_left_chunk: True\n"
        "        global_cmvn: null\n        positionwise_conv_kernel_size: 3\n        activation_type: 'swish'\n"
        "        cnn_module_kernel: 31\n        causal: True\n        cnn_module_norm: 'layer_norm'\n"
        "        key_bias: True\n        gradient_checkpointing: True\n"
    )
    text = recipe_text().replace("        macaron_style: False\n", "        macaron_style: False\n" + neutral, 1)
    flow_text = text.replace(
        "    only_mask_loss: True\n",
        "    only_mask_loss: True\n    mel_feat_conf:\n"
        "        sampling_rate: 22050\n        hop_size: 256\n        n_fft: 1024\n",
        1,
    )
    caplog.set_level(logging.WARNING)
    assert _decoder_config(_build(flow_text)) == _decoder_config(_build(recipe_text()))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("old", "new", "name", "found", "supported"),
    [
        ("macaron_style: False", "macaron_style: True", "macaron_style", "True", "False"),
        ("use_cnn_module: False", "use_cnn_module: True", "use_cnn_module", "True", "False"),
        ("normalize_before: True", "normalize_before: False", "normalize_before", "False", "True"),
        ("input_layer: 'linear'", "input_layer: 'conv2d'", "input_layer", "'conv2d'", "'linear'"),
        (
            "selfattention_layer_type: 'rel_selfattn'",
            "selfattention_layer_type: 'selfattn'",
            "selfattention_layer_type",
            "'selfattn'",
            "'rel_selfattn'",
        ),
        (
            "pos_enc_layer_type: 'rel_pos_espnet'",
            "pos_enc_layer_type: 'rel_pos'",
            "pos_enc_layer_type",
            "'rel_pos'",
            "'rel_pos_espnet'",
        ),
        ("macaron_style: False", "macaron_style: False\n        static_chunk_size: 25", "static_chunk_size", "25", "0"),
        (
            "macaron_style: False",
            "macaron_style: False\n        use_dynamic_chunk: True",
            "use_dynamic_chunk",
            "True",
            "False",
        ),
        ("macaron_style: False", "macaron_style: False\n        key_bias: False", "key_bias", "False", "True"),
        ("        macaron_style: False\n", "", "macaron_style", "True", "False"),  # the original's default
        ("act_fn: 'gelu'", "act_fn: 'snake'", "act_fn", "'snake'", "'gelu'"),
        ("solver: 'euler'", "solver: 'midpoint'", "cfm_params.solver", "'midpoint'", "'euler'"),
        (
            "only_mask_loss: True",
            "only_mask_loss: True\n    mel_feat_conf: {sampling_rate: 22050, hop_size: 300}",
            "mel_feat_conf.hop_size",
            "300",
            "256",
        ),
        ("center: False", "center: True", "center", "True", "False"),
    ],
)
def test_architecture_changes_are_clear_errors(old: str, new: str, name: str, found: str, supported: str) -> None:
    text = recipe_text()
    assert old in text
    with pytest.raises(CheckpointConfigError) as caught:
        _build(text.replace(old, new, 1))
    message = str(caught.value)
    assert SOURCE in message and f"{name}={found}" in message and f"={supported}" in message
    assert "flow" in message or "feat_extractor" in message


def test_wrong_tag_kind_and_executable_tags_are_errors() -> None:
    text = recipe_text().replace("encoder: !new:cosyvoice.transformer", "encoder: !name:cosyvoice.transformer")
    with pytest.raises(CheckpointConfigError, match=r"flow/encoder.*expected !new:cosyvoice.transformer"):
        _build(text)
    text = recipe_text().replace(
        "input_frame_rate: 41.6666666667", "input_frame_rate: !apply:operator.truediv [125, 3]"
    )
    with pytest.raises(CheckpointConfigError, match=r"flow/input_frame_rate.*!apply:operator.truediv.*never"):
        _build(text)
    text = recipe_text().replace("feat_extractor: !name:", "feat_extractor: !new:")
    with pytest.raises(CheckpointConfigError, match=r"feat_extractor.*expected !name:"):
        _build(text)
