"""Builds the project's decoder modules from a parsed ``cosyvoice.yaml`` (see :mod:`.config`).

Every dotted class path of the recipe is mapped to a project class here (:data:`CLASS_MAP`); nothing
named by the recipe is imported.  Training-only arguments (dropouts, loss settings, ...) are dropped;
arguments this project does not know are dropped with one warning, because the official recipe text
is not public and the state-dict shape check after loading catches any architectural difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..errors import CheckpointConfigError
from .config import ObjectSpec
from .encoder import ConformerEncoder
from .estimator import ConditionalDecoder
from .flow import CFMParams, ConditionalCFM, FlowModel, InterpolateRegulator
from .frontend import MelSpectrogramConfig
from .hift import ConvRNNF0Predictor, HiFTGenerator

__all__ = ["CLASS_MAP", "DecoderRecipe", "build_from_recipe", "build_object"]

logger = logging.getLogger(__name__)

# training-only or behaviour-neutral constructor arguments of the upstream classes
_IGNORED_ARGUMENTS = {
    "dropout",
    "dropout_rate",
    "positional_dropout_rate",
    "attention_dropout_rate",
    "only_mask_loss",
    "encoder_type",
    "output_type",
    "static_chunk_size",
    "use_dynamic_chunk",
    "use_dynamic_left_chunk",
    "global_cmvn",
    "gradient_checkpointing",
    "key_bias",
    "decoder_conf",
    "mel_feat_conf",
    "lsm_weight",
    "length_normalized_loss",
}


def _build_encoder(input_size: int, output_size: int = 256, attention_heads: int = 4, linear_units: int = 2048,
                   num_blocks: int = 6, input_layer: str = "linear", pos_enc_layer_type: str = "rel_pos_espnet",
                   selfattn_layer_type: str = "rel_selfattn", normalize_before: bool = True,
                   macaron_style: bool = False, use_cnn_module: bool = False, activation_type: str = "swish",
                   **_: Any) -> ConformerEncoder:
    supported = {
        "input_layer": (input_layer, "linear"),
        "pos_enc_layer_type": (pos_enc_layer_type, "rel_pos_espnet"),
        "selfattn_layer_type": (selfattn_layer_type, "rel_selfattn"),
        "normalize_before": (bool(normalize_before), True),
        "macaron_style": (bool(macaron_style), False),
        "use_cnn_module": (bool(use_cnn_module), False),
        "activation_type": (activation_type, "swish"),
    }
    for name, (found, expected) in supported.items():
        if found != expected:
            raise CheckpointConfigError(
                f"ConformerEncoder option {name}={found!r} is not supported; the CosyVoice-300M-25Hz flow uses "
                f"{name}={expected!r}. Use the official cosyvoice.yaml or extend stepaudio.cosyvoice.encoder"
            )
    return ConformerEncoder(input_size, output_size, attention_heads, linear_units, num_blocks)


def _build_estimator(in_channels: int, out_channels: int, channels: list[int] = (256, 256),
                     attention_head_dim: int = 64, n_blocks: int = 1, num_mid_blocks: int = 2, num_heads: int = 4,
                     act_fn: str = "snake", **_: Any) -> ConditionalDecoder:
    if act_fn != "gelu":
        raise CheckpointConfigError(
            f"ConditionalDecoder act_fn={act_fn!r} is not supported (CosyVoice-300M-25Hz uses 'gelu')"
        )
    return ConditionalDecoder(in_channels, out_channels, channels, attention_head_dim, n_blocks, num_mid_blocks,
                              num_heads)


def _build_cfm(in_channels: int, cfm_params: Any = None, n_spks: int = 1, spk_emb_dim: int = 64,
               estimator: ConditionalDecoder | None = None, **_: Any) -> ConditionalCFM:
    if estimator is None:
        raise CheckpointConfigError("ConditionalCFM needs an 'estimator' entry (the ConditionalDecoder)")
    params = dict(cfm_params or {})
    if set(params) == {"content"} and isinstance(params["content"], dict):  # omegaconf.DictConfig(content=...)
        params = params["content"]
    known = {f.name for f in fields(CFMParams)}
    parsed = CFMParams(**{k: v for k, v in params.items() if k in known})
    if parsed.solver != "euler" or parsed.t_scheduler not in ("cosine", "linear"):
        raise CheckpointConfigError(
            f"cfm_params solver={parsed.solver!r}, t_scheduler={parsed.t_scheduler!r}: only the euler solver with "
            "a cosine or linear schedule is implemented"
        )
    return ConditionalCFM(in_channels, parsed, n_spks, spk_emb_dim, estimator)


def _build_flow(input_size: int = 512, output_size: int = 80, spk_embed_dim: int = 192, vocab_size: int = 4096,
                input_frame_rate: float = 50, encoder: ConformerEncoder | None = None,
                length_regulator: InterpolateRegulator | None = None, decoder: ConditionalCFM | None = None,
                **_: Any) -> FlowModel:
    missing = [name for name, value in (("encoder", encoder), ("length_regulator", length_regulator),
                                          ("decoder", decoder)) if value is None]
    if missing:
        raise CheckpointConfigError(f"the flow section of the recipe lacks {missing}")
    return FlowModel(input_size, output_size, spk_embed_dim, vocab_size, input_frame_rate, encoder,
                     length_regulator, decoder)


def _build_dict(content: Any = None, **kwargs: Any) -> dict[str, Any]:
    return dict(content if content is not None else kwargs)


#: dotted class path in the recipe -> project builder (``!new:`` and ``!name:`` targets)
CLASS_MAP: dict[str, Callable[..., Any]] = {
    "cosyvoice.flow.flow.MaskedDiffWithXvec": _build_flow,
    "cosyvoice.transformer.encoder.ConformerEncoder": _build_encoder,
    "cosyvoice.flow.length_regulator.InterpolateRegulator": InterpolateRegulator,
    "cosyvoice.flow.flow_matching.ConditionalCFM": _build_cfm,
    "cosyvoice.flow.decoder.ConditionalDecoder": _build_estimator,
    "cosyvoice.hifigan.generator.HiFTGenerator": HiFTGenerator,
    "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor": ConvRNNF0Predictor,
    "matcha.utils.audio.mel_spectrogram": MelSpectrogramConfig.from_recipe,
    "omegaconf.DictConfig": _build_dict,
}

_ACCEPTED_ARGUMENTS: dict[str, set[str]] = {
    "cosyvoice.flow.flow.MaskedDiffWithXvec": {"input_size", "output_size", "spk_embed_dim", "vocab_size",
                                               "input_frame_rate", "encoder", "length_regulator", "decoder"},
    "cosyvoice.transformer.encoder.ConformerEncoder": {
        "input_size", "output_size", "attention_heads", "linear_units", "num_blocks", "input_layer",
        "pos_enc_layer_type", "selfattn_layer_type", "normalize_before", "macaron_style", "use_cnn_module",
        "activation_type", "cnn_module_kernel"},
    "cosyvoice.flow.length_regulator.InterpolateRegulator": {"channels", "sampling_ratios", "out_channels",
                                                             "groups"},
    "cosyvoice.flow.flow_matching.ConditionalCFM": {"in_channels", "cfm_params", "n_spks", "spk_emb_dim",
                                                    "estimator"},
    "cosyvoice.flow.decoder.ConditionalDecoder": {"in_channels", "out_channels", "channels", "attention_head_dim",
                                                  "n_blocks", "num_mid_blocks", "num_heads", "act_fn"},
    "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor": {"num_class", "in_channels", "cond_channels"},
    "matcha.utils.audio.mel_spectrogram": {"n_fft", "num_mels", "sampling_rate", "hop_size", "win_size", "fmin",
                                           "fmax", "center"},
}


def build_object(value: Any, path: str = "") -> Any:
    """Recursively turn :class:`ObjectSpec` values into project objects (children first).

    Raises:
        CheckpointConfigError: a tag names a class path that has no project implementation.
    """
    if isinstance(value, dict):
        return {key: build_object(item, f"{path}/{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [build_object(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, ObjectSpec):
        return value
    builder = CLASS_MAP.get(value.target)
    if builder is None:
        raise CheckpointConfigError(
            f"recipe entry {path or '/'} is tagged !{value.kind}:{value.target}, a class path stepaudio does not "
            f"implement; known class paths: {sorted(CLASS_MAP)}. Use the cosyvoice.yaml of the official "
            "CosyVoice-300M-25Hz folder (the project never imports the classes a recipe names)"
        )
    kwargs = {key: build_object(item, f"{path}/{key}") for key, item in value.kwargs.items()}
    args = [build_object(item, f"{path}[{index}]") for index, item in enumerate(value.args)]
    accepted = _ACCEPTED_ARGUMENTS.get(value.target)
    if accepted is None and value.target == "cosyvoice.hifigan.generator.HiFTGenerator":
        accepted = set(HiFTGenerator.__init__.__code__.co_varnames[1 : HiFTGenerator.__init__.__code__.co_argcount])
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted - _IGNORED_ARGUMENTS)
        if unknown:
            logger.warning("recipe entry %s (%s): ignoring arguments %s that stepaudio does not use",
                           path, value.target, unknown)
        kwargs = {key: item for key, item in kwargs.items() if key in accepted}
    try:
        return builder(*args, **kwargs)
    except TypeError as error:
        raise CheckpointConfigError(f"recipe entry {path} ({value.target}) has unusable arguments: {error}") from error


@dataclass
class DecoderRecipe:
    """The three recipe entries the decoder needs, built into project objects."""

    flow: FlowModel
    hift: HiFTGenerator
    feat_extractor: MelSpectrogramConfig


def build_from_recipe(recipe: dict[str, Any], source: str = "cosyvoice.yaml") -> DecoderRecipe:
    """Build ``flow``, ``hift`` and ``feat_extractor`` from a parsed recipe (other entries are not touched).

    Raises:
        CheckpointConfigError: a required entry is missing, has the wrong class or names an unknown class.
    """
    expected = {
        "flow": ("new", FlowModel, "!new:cosyvoice.flow.flow.MaskedDiffWithXvec"),
        "hift": ("new", HiFTGenerator, "!new:cosyvoice.hifigan.generator.HiFTGenerator"),
        "feat_extractor": ("name", MelSpectrogramConfig, "!name:matcha.utils.audio.mel_spectrogram"),
    }
    built: dict[str, Any] = {}
    for key, (kind, cls, tag) in expected.items():
        if key not in recipe:
            raise CheckpointConfigError(
                f"{source} has no '{key}' entry (expected '{key}: {tag}'); top-level keys: {sorted(recipe)}"
            )
        spec = recipe[key]
        if not isinstance(spec, ObjectSpec) or spec.kind != kind:
            raise CheckpointConfigError(f"{source}: '{key}' must be a {tag} entry, found {spec!r}"[:400])
        obj = build_object(spec, key)
        if not isinstance(obj, cls):
            raise CheckpointConfigError(
                f"{source}: '{key}' is tagged {spec.target}, which builds {type(obj).__name__}, expected {tag}"
            )
        built[key] = obj
    return DecoderRecipe(**built)
