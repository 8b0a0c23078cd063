"""Builds the project's decoder modules from a parsed ``cosyvoice.yaml`` (see :mod:`.config`).

Recipe classes and functions are matched by their **final name** under any module prefix, so
``!name:cosyvoice.matcha.audio.mel_spectrogram`` (Step-Audio's tree), ``!name:matcha.utils.audio.mel_spectrogram``
(the CosyVoice recipes) and ``!new:my_fork.flow.MaskedDiffWithXvec`` all resolve; nothing a recipe
names is ever imported (:data:`RECIPE_TARGETS` lists the names).

Each builder takes exactly the parameters of the original class (Step-Audio's ``cosyvoice`` package,
names and defaults as in its signatures), so every argument the original loader accepts is accepted
here without a warning.  Arguments that only matter for training (dropouts, losses, gradient
checkpointing, ...) are accepted and unused; values that would change the network or its inference
in ways this project does not implement (``macaron_style: True``, chunk masks, another attention or
positional encoding, ...) raise :class:`~stepaudio.errors.CheckpointConfigError` naming the file,
the entry, the value found and the value supported.  An argument the original does not accept is
dropped with one warning (the original's loader would fail on it).  Top-level entries other than
``flow``, ``hift`` and ``feat_extractor`` (the text LM, data pipeline, training settings, seed lines)
are skipped with one debug line each and never built.  The state-dict shape check after loading
(:mod:`.checkpoint`) still cross-checks every hyper-parameter against the weights.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import CheckpointConfigError
from .config import INFERENCE_KEYS, ObjectSpec
from .encoder import ConformerEncoder
from .estimator import ConditionalDecoder
from .flow import MEL_HOP, MEL_SAMPLE_RATE, CFMParams, ConditionalCFM, FlowModel, InterpolateRegulator
from .frontend import MelSpectrogramConfig
from .hift import ConvRNNF0Predictor, HiFTGenerator

__all__ = ["CLASS_MAP", "RECIPE_TARGETS", "DecoderRecipe", "RecipeTarget", "build_from_recipe", "build_object"]

logger = logging.getLogger(__name__)


class _Unsupported(Exception):
    """Raised by a builder for a value it cannot honour; :func:`build_object` adds file and entry."""


def _require(settings: Mapping[str, tuple[Any, Any]], why: str) -> None:
    """Raise :class:`_Unsupported` for the first ``name: (found, supported)`` pair that differs."""
    for name, (found, supported) in settings.items():
        if found != supported:
            raise _Unsupported(f"{name}={found!r} is not supported, stepaudio implements {name}={supported!r} ({why})")


# ---------------------------------------------------------------------------------------------- builders
# Every signature below lists the original class's parameters with the original defaults.


def _build_flow(
    input_size: int = 512,
    output_size: int = 80,
    spk_embed_dim: int = 192,
    output_type: str = "mel",
    vocab_size: int = 4096,
    input_frame_rate: float = 50,
    only_mask_loss: bool = True,
    encoder: ConformerEncoder | None = None,
    length_regulator: InterpolateRegulator | None = None,
    decoder: ConditionalCFM | None = None,
    decoder_conf: Mapping[str, Any] | None = None,
    mel_feat_conf: Mapping[str, Any] | None = None,
) -> FlowModel:
    # output_type, only_mask_loss and decoder_conf are training settings; mel_feat_conf sets the frame
    # count of the generated mel in the original's inference, which this project fixes at 22050 / 256
    missing = [
        name
        for name, value in (("encoder", encoder), ("length_regulator", length_regulator), ("decoder", decoder))
        if value is None
    ]
    if missing:
        raise _Unsupported(f"the flow entry lacks {missing} (each must be a !new: entry)")
    if isinstance(input_frame_rate, bool) or not isinstance(input_frame_rate, (int, float)) or input_frame_rate <= 0:
        raise _Unsupported(
            f"input_frame_rate must be a positive number of tokens per second, found {input_frame_rate!r}"
        )
    if mel_feat_conf is not None:
        if not isinstance(mel_feat_conf, Mapping):
            raise _Unsupported(f"mel_feat_conf must be a mapping, found {mel_feat_conf!r}")
        _require(
            {
                "mel_feat_conf.sampling_rate": (mel_feat_conf.get("sampling_rate"), MEL_SAMPLE_RATE),
                "mel_feat_conf.hop_size": (mel_feat_conf.get("hop_size"), MEL_HOP),
            },
            "the generated mel has 22050 / 256 frames per second",
        )
    return FlowModel(
        input_size, output_size, spk_embed_dim, vocab_size, input_frame_rate, encoder, length_regulator, decoder
    )


def _build_encoder(
    input_size: int,
    output_size: int = 256,
    attention_heads: int = 4,
    linear_units: int = 2048,
    num_blocks: int = 6,
    dropout_rate: float = 0.1,
    positional_dropout_rate: float = 0.1,
    attention_dropout_rate: float = 0.0,
    input_layer: str = "conv2d",
    pos_enc_layer_type: str = "rel_pos",
    normalize_before: bool = True,
    static_chunk_size: int = 0,
    use_dynamic_chunk: bool = False,
    global_cmvn: Any = None,
    use_dynamic_left_chunk: bool = False,
    positionwise_conv_kernel_size: int = 1,
    macaron_style: bool = True,
    selfattention_layer_type: str = "rel_selfattn",
    activation_type: str = "swish",
    use_cnn_module: bool = True,
    cnn_module_kernel: int = 15,
    causal: bool = False,
    cnn_module_norm: str = "batch_norm",
    key_bias: bool = True,
    gradient_checkpointing: bool = False,
) -> ConformerEncoder:
    # dropouts, use_dynamic_left_chunk and gradient_checkpointing only act in training;
    # positionwise_conv_kernel_size is unused by the original; the cnn_module_* / causal settings
    # only matter with use_cnn_module, which is rejected below
    _require(
        {
            "input_layer": (input_layer, "linear"),
            "pos_enc_layer_type": (pos_enc_layer_type, "rel_pos_espnet"),
            "selfattention_layer_type": (selfattention_layer_type, "rel_selfattn"),
            "normalize_before": (normalize_before, True),
            "macaron_style": (macaron_style, False),
            "use_cnn_module": (use_cnn_module, False),
            "activation_type": (activation_type, "swish"),
            "key_bias": (key_bias, True),
            "global_cmvn": (global_cmvn, None),
        },
        "the CosyVoice-300M-25Hz flow encoder; use the official cosyvoice.yaml or extend stepaudio.cosyvoice.encoder",
    )
    _require(
        {"static_chunk_size": (static_chunk_size, 0), "use_dynamic_chunk": (use_dynamic_chunk, False)},
        "the flow encoder attends over the full sequence; chunk masks are not implemented",
    )
    return ConformerEncoder(input_size, output_size, attention_heads, linear_units, num_blocks)


def _build_regulator(
    channels: int, sampling_ratios: Any, out_channels: int | None = None, groups: int = 1
) -> InterpolateRegulator:
    return InterpolateRegulator(channels, sampling_ratios, out_channels, groups)


def _build_cfm(
    in_channels: int,
    cfm_params: Any = None,
    n_spks: int = 1,
    spk_emb_dim: int = 64,
    estimator: ConditionalDecoder | None = None,
) -> ConditionalCFM:
    if estimator is None:
        raise _Unsupported("ConditionalCFM needs an 'estimator' entry (!new:...ConditionalDecoder)")
    params = dict(cfm_params or {})
    if set(params) == {"content"} and isinstance(params["content"], Mapping):  # an unbuilt DictConfig(content=...)
        params = dict(params["content"])
    known = {f.name for f in fields(CFMParams)}
    parsed = CFMParams(**{key: value for key, value in params.items() if key in known})
    _require({"cfm_params.solver": (parsed.solver, "euler")}, "the flow ODE is solved with Euler steps")
    if parsed.t_scheduler not in ("cosine", "linear"):
        raise _Unsupported(
            f"cfm_params.t_scheduler={parsed.t_scheduler!r} is not supported, stepaudio implements 'cosine' "
            "(CosyVoice-300M-25Hz) and 'linear'"
        )
    return ConditionalCFM(in_channels, parsed, n_spks, spk_emb_dim, estimator)


def _build_estimator(
    in_channels: int,
    out_channels: int,
    channels: Any = (256, 256),
    dropout: float = 0.05,
    attention_head_dim: int = 64,
    n_blocks: int = 1,
    num_mid_blocks: int = 2,
    num_heads: int = 4,
    act_fn: str = "snake",
) -> ConditionalDecoder:
    _require({"act_fn": (act_fn, "gelu")}, "the CosyVoice-300M-25Hz estimator's transformer blocks")
    return ConditionalDecoder(
        in_channels, out_channels, channels, attention_head_dim, n_blocks, num_mid_blocks, num_heads
    )


def _build_hift(*args: Any, f0_predictor: Any = None, **kwargs: Any) -> HiFTGenerator:
    """``HiFTGenerator`` with its ``f0_predictor`` entry checked; the parameters are HiFTGenerator's own."""
    if f0_predictor is not None and not isinstance(f0_predictor, ConvRNNF0Predictor):
        raise _Unsupported(f"f0_predictor must be a !new:...ConvRNNF0Predictor entry, found {f0_predictor!r}")
    return HiFTGenerator(*args, f0_predictor=f0_predictor, **kwargs)


# HiFTGenerator and ConvRNNF0Predictor already take exactly the original's parameters and defaults; the
# recipe reader reads the accepted names from this signature (RecipeTarget.parameters).
_build_hift.__signature__ = inspect.signature(HiFTGenerator)  # type: ignore[attr-defined]


def _build_mel(
    y: Any = None,
    n_fft: int = 1024,
    num_mels: int = 80,
    sampling_rate: int = 22050,
    hop_size: int = 256,
    win_size: int = 1024,
    fmin: float = 0.0,
    fmax: float | None = 8000.0,
    center: bool = False,
) -> MelSpectrogramConfig:
    if y is not None:
        raise _Unsupported("the recipe binds the waveform argument 'y'; feat_extractor must leave it to the caller")
    return MelSpectrogramConfig.from_recipe(
        n_fft=n_fft,
        num_mels=num_mels,
        sampling_rate=sampling_rate,
        hop_size=hop_size,
        win_size=win_size,
        fmin=fmin,
        fmax=fmax,
        center=center,
    )


def _build_dict_config(
    content: Any = None,
    key_type: Any = None,
    element_type: Any = None,
    parent: Any = None,
    ref_type: Any = None,
    is_optional: bool = True,
    flags: Any = None,
) -> dict[str, Any]:
    if content is not None and not isinstance(content, Mapping):
        raise _Unsupported(f"DictConfig content must be a mapping, found {type(content).__name__}")
    return dict(content or {})


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class RecipeTarget:
    """One class or function a recipe may name, and how the project builds it.

    Attributes:
        name: the final component of the dotted path (matched under any module prefix).
        kind: the tag the original needs: ``"new"`` (a class instance) or ``"name"`` (a function reference).
        build: builds the project object; its parameters are exactly the original's.
        upstream: the dotted path in Step-Audio's source tree (for messages).
        aliases: parameter spellings the original rejects but that are read as the canonical name (with
            a warning), e.g. ``selfattn_layer_type`` for ``selfattention_layer_type``.
    """

    name: str
    kind: str
    build: Callable[..., Any]
    upstream: str
    aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The original's parameter names, in signature order."""
        return tuple(inspect.signature(self.build).parameters)


#: final class/function name -> how to build it (the Step-Audio tree's module paths in ``upstream``)
RECIPE_TARGETS: dict[str, RecipeTarget] = {
    target.name: target
    for target in (
        RecipeTarget("MaskedDiffWithXvec", "new", _build_flow, "cosyvoice.flow.flow.MaskedDiffWithXvec"),
        RecipeTarget(
            "ConformerEncoder",
            "new",
            _build_encoder,
            "cosyvoice.transformer.encoder.ConformerEncoder",
            aliases={"selfattn_layer_type": "selfattention_layer_type"},
        ),
        RecipeTarget(
            "InterpolateRegulator", "new", _build_regulator, "cosyvoice.flow.length_regulator.InterpolateRegulator"
        ),
        RecipeTarget("ConditionalCFM", "new", _build_cfm, "cosyvoice.flow.flow_matching.ConditionalCFM"),
        RecipeTarget("ConditionalDecoder", "new", _build_estimator, "cosyvoice.flow.decoder.ConditionalDecoder"),
        RecipeTarget("HiFTGenerator", "new", _build_hift, "cosyvoice.hifigan.generator.HiFTGenerator"),
        RecipeTarget(
            "ConvRNNF0Predictor", "new", ConvRNNF0Predictor, "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor"
        ),
        RecipeTarget("mel_spectrogram", "name", _build_mel, "cosyvoice.matcha.audio.mel_spectrogram"),
        RecipeTarget("DictConfig", "new", _build_dict_config, "omegaconf.DictConfig"),
    )
}

#: final class/function name -> project builder (kept for callers of the earlier API)
CLASS_MAP: dict[str, Callable[..., Any]] = {name: target.build for name, target in RECIPE_TARGETS.items()}


def _canonical_kwargs(target: RecipeTarget, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Map alias spellings to the original's names and drop (with one warning) names the original rejects."""
    accepted = set(target.parameters)
    renamed: dict[str, Any] = {}
    for key, value in kwargs.items():
        canonical = target.aliases.get(key)
        if canonical is None:
            continue
        if canonical in kwargs and kwargs[canonical] != value:
            raise CheckpointConfigError(
                f"{where} sets both {key}={value!r} and {canonical}={kwargs[canonical]!r}; keep only "
                f"{canonical} (the spelling of the original {target.name})"
            )
        logger.warning(
            "%s spells %r, which the original %s rejects (its loader would fail on this recipe); reading it as %r",
            where,
            key,
            target.name,
            canonical,
        )
        renamed[canonical] = value
    kwargs = {key: value for key, value in kwargs.items() if key not in target.aliases}
    kwargs.update({key: value for key, value in renamed.items() if key not in kwargs})
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        logger.warning(
            "%s passes %s, which the original %s does not accept (its loader would fail); stepaudio ignores them. "
            "Accepted: %s",
            where,
            unknown,
            target.name,
            list(target.parameters),
        )
    return {key: value for key, value in kwargs.items() if key in accepted}


def build_object(value: Any, path: str = "", source: str = "cosyvoice.yaml") -> Any:
    """Recursively turn :class:`ObjectSpec` values into project objects (children first).

    Args:
        value: a parsed recipe value.
        path: where ``value`` sits in the recipe (``flow/encoder``), for messages.
        source: the recipe file, for messages.

    Raises:
        CheckpointConfigError: a tag names a class or function without a project implementation, has the
            wrong tag kind, or sets a value the project does not implement.
    """
    if isinstance(value, dict):
        return {key: build_object(item, f"{path}/{key}", source) for key, item in value.items()}
    if isinstance(value, list):
        return [build_object(item, f"{path}[{index}]", source) for index, item in enumerate(value)]
    if not isinstance(value, ObjectSpec):
        return value
    entry = path or "/"
    target = RECIPE_TARGETS.get(value.name)
    if value.kind not in ("new", "name"):
        raise CheckpointConfigError(
            f"{source}: recipe entry {entry} is {value.tag}; stepaudio never imports or runs what a recipe names, "
            "so the entries the decoder is built from (flow, hift, feat_extractor) may only use !new:/!name: "
            f"tags for {sorted(RECIPE_TARGETS)}, !ref, !copy and plain values"
        )
    if target is None:
        raise CheckpointConfigError(
            f"{source}: recipe entry {entry} is tagged {value.tag}, whose final name {value.name!r} stepaudio does "
            f"not implement; known names (under any module prefix): {sorted(RECIPE_TARGETS)}. Use the "
            "cosyvoice.yaml of the official CosyVoice-300M-25Hz folder (the project never imports the classes a "
            "recipe names)"
        )
    if value.kind != target.kind:
        role = "a class instance" if target.kind == "new" else "a function"
        raise CheckpointConfigError(
            f"{source}: recipe entry {entry} is tagged {value.tag}, expected !{target.kind}:{value.target} "
            f"(the original {target.upstream} is used as {role})"
        )
    where = f"{source}: recipe entry {entry} ({value.target})"
    kwargs = {key: build_object(item, f"{path}/{key}", source) for key, item in value.kwargs.items()}
    args = [build_object(item, f"{path}[{index}]", source) for index, item in enumerate(value.args)]
    kwargs = _canonical_kwargs(target, kwargs, where)
    try:
        return target.build(*args, **kwargs)
    except (_Unsupported, CheckpointConfigError) as error:
        raise CheckpointConfigError(f"{where}: {error}") from error
    except TypeError as error:
        raise CheckpointConfigError(
            f"{where} has unusable arguments: {error}; the original's parameters are {list(target.parameters)}"
        ) from error


@dataclass
class DecoderRecipe:
    """The three recipe entries the decoder needs, built into project objects."""

    flow: FlowModel
    hift: HiFTGenerator
    feat_extractor: MelSpectrogramConfig


def _describe(value: Any) -> str:
    if isinstance(value, ObjectSpec):
        return value.tag
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def build_from_recipe(recipe: dict[str, Any], source: str = "cosyvoice.yaml") -> DecoderRecipe:
    """Build ``flow``, ``hift`` and ``feat_extractor`` from a parsed recipe.

    Every other top-level entry (text LM, data-pipeline functions, training settings, seed lines,
    plain hyper-parameters already substituted through ``!ref``) is skipped with one debug line.

    Raises:
        CheckpointConfigError: a required entry is missing, has the wrong class or names an unknown class.
    """
    expected = {
        "flow": (FlowModel, "MaskedDiffWithXvec", "!new:cosyvoice.flow.flow.MaskedDiffWithXvec"),
        "hift": (HiFTGenerator, "HiFTGenerator", "!new:cosyvoice.hifigan.generator.HiFTGenerator"),
        "feat_extractor": (MelSpectrogramConfig, "mel_spectrogram", "!name:cosyvoice.matcha.audio.mel_spectrogram"),
    }
    for key, value in recipe.items():
        if key not in INFERENCE_KEYS:
            logger.debug(
                "%s: skipping '%s' (%s): inference builds only flow, hift and feat_extractor (values they take "
                "through !ref are already substituted); nothing here is imported or run",
                source,
                key,
                _describe(value),
            )
    built: dict[str, Any] = {}
    for key, (cls, name, tag) in expected.items():
        if key not in recipe:
            raise CheckpointConfigError(
                f"{source} has no '{key}' entry (expected '{key}: {tag}', any module prefix); "
                f"top-level keys: {sorted(recipe)}"
            )
        spec = recipe[key]
        if not isinstance(spec, ObjectSpec) or spec.name != name:
            found = spec.tag if isinstance(spec, ObjectSpec) else _describe(spec)
            raise CheckpointConfigError(
                f"{source}: '{key}' must be a {tag} entry (any module prefix before '{name}'), found {found}"
            )
        try:
            built[key] = build_object(spec, key, source)
        except CheckpointConfigError as error:
            if error.file is None:
                error.file = Path(source)
            raise
        if not isinstance(built[key], cls):
            raise CheckpointConfigError(f"{source}: '{key}' built {type(built[key]).__name__}, expected {tag}")
    return DecoderRecipe(**built)
