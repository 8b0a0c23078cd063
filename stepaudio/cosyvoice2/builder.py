"""Builds the 24 kHz decoder's modules from the EditX ``cosyvoice.yaml`` (parsed by :mod:`stepaudio.cosyvoice.config`).

The EditX recipe names classes of its ``stepvocoder.cosyvoice2`` tree; they are matched by their final
name under any module prefix and never imported:

* ``flow: !new:...CausalMaskedDiffWithXvec`` with ``input_embedding: !new:...DualCodebookEmbedding``,
  ``encoder: !new:...UpsampleConformerEncoderV2``, ``decoder: !new:...CausalConditionalCFM`` whose
  ``estimator`` is ``!new:...DiT``;
* ``hift: !new:...HiFTGenerator`` with ``f0_predictor: !new:...ConvRNNF0Predictor`` (the original also
  accepts ``BigVGAN`` here; no published folder is known to use it, so it is refused with a clear message);
* ``mel_conf``: a plain mapping of the prompt mel settings (n_fft, num_mels, sampling_rate, hop_size,
  win_size, fmin, fmax).

Builders take the original classes' parameters with the original defaults.  Training-only arguments
(dropouts) are accepted and unused; values that change the network in ways not implemented raise
:class:`~stepaudio.errors.CheckpointConfigError` naming the file, the entry, the value and what is
supported; unknown arguments are dropped with one warning.  The strict state-dict check after loading
cross-checks every size against the weights.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cosyvoice.config import ObjectSpec
from ..cosyvoice.frontend import MelSpectrogramConfig
from ..cosyvoice.hift import ConvRNNF0Predictor
from ..errors import CheckpointConfigError
from .dit import DiT
from .encoder import UpsampleConformerEncoder
from .flow import CausalCFM, CausalFlow, DualCodebookEmbedding
from .hift import HiFT24k

__all__ = ["FLOW_CLASS", "RECIPE_BUILDERS", "Decoder24kRecipe", "build_24k_recipe"]

logger = logging.getLogger(__name__)

#: final name of the flow class that marks an EditX (24 kHz, CosyVoice2-style) recipe
FLOW_CLASS = "CausalMaskedDiffWithXvec"


class _Unsupported(Exception):
    """A recipe value the project does not implement (file and entry are added by the caller)."""


def _require(name: str, found: Any, supported: Any) -> None:
    if found != supported:
        raise _Unsupported(f"{name}={found!r} is not supported, stepaudio implements {name}={supported!r}")


def _build_flow(
    input_size: int = 512,
    output_size: int = 80,
    spk_embed_dim: int = 192,
    output_type: str = "mel",
    vocab_size: int = 5121,
    encoder: UpsampleConformerEncoder | None = None,
    decoder: CausalCFM | None = None,
    input_embedding: DualCodebookEmbedding | None = None,
) -> CausalFlow:
    if not isinstance(encoder, UpsampleConformerEncoder):
        raise _Unsupported("'encoder' must be a !new:...UpsampleConformerEncoderV2 entry")
    if not isinstance(decoder, CausalCFM):
        raise _Unsupported("'decoder' must be a !new:...CausalConditionalCFM entry")
    _require("output_type", output_type, "mel")
    return CausalFlow(input_size, output_size, spk_embed_dim, vocab_size, encoder, decoder, input_embedding)


def _build_encoder(
    input_size: int,
    output_size: int = 256,
    input_layer: str = "linear",
    pre_lookahead_len: int = 3,
    num_blocks: int = 6,
    num_up_blocks: int = 4,
    up_stride: int = 2,
    up_scale_factor: float = 2,
    attention_heads: int = 4,
    pos_enc_layer_type: str = "rel_pos_espnet",
    selfattention_layer_type: str = "rel_selfattn",
    key_bias: bool = True,
    linear_units: int = 2048,
    dropout_rate: float = 0.1,
    positional_dropout_rate: float = 0.1,
    attention_dropout_rate: float = 0.0,
    normalize_before: bool = True,
    activation_type: str = "swish",
) -> UpsampleConformerEncoder:
    # the dropouts only act in training
    _require("input_layer", input_layer, "linear")
    _require("pos_enc_layer_type", pos_enc_layer_type, "rel_pos_espnet")
    _require("selfattention_layer_type", selfattention_layer_type, "rel_selfattn")
    _require("normalize_before", normalize_before, True)
    _require("activation_type", activation_type, "swish")
    _require("up_scale_factor", float(up_scale_factor), float(up_stride))
    if input_size != output_size:
        raise _Unsupported(f"input_size={input_size} must equal output_size={output_size} (up_embed reads both)")
    return UpsampleConformerEncoder(
        input_size,
        output_size,
        attention_heads,
        linear_units,
        num_blocks,
        num_up_blocks,
        pre_lookahead_len,
        up_stride,
        key_bias,
    )


def _build_cfm(estimator: DiT | None = None, inference_cfg_rate: float = 0.7) -> CausalCFM:
    if not isinstance(estimator, DiT):
        raise _Unsupported("'estimator' must be a !new:...DiT entry")
    return CausalCFM(estimator, inference_cfg_rate)


def _build_hift(*args: Any, f0_predictor: Any = None, **kwargs: Any) -> HiFT24k:
    if f0_predictor is not None and not isinstance(f0_predictor, ConvRNNF0Predictor):
        raise _Unsupported(f"f0_predictor must be a !new:...ConvRNNF0Predictor entry, found {f0_predictor!r}")
    return HiFT24k(*args, f0_predictor=f0_predictor, **kwargs)


_build_hift.__signature__ = inspect.signature(HiFT24k)  # type: ignore[attr-defined]

#: final class name -> builder taking the original's parameters
RECIPE_BUILDERS: dict[str, Callable[..., Any]] = {
    FLOW_CLASS: _build_flow,
    "DualCodebookEmbedding": DualCodebookEmbedding,
    "UpsampleConformerEncoderV2": _build_encoder,
    "CausalConditionalCFM": _build_cfm,
    "DiT": DiT,
    "HiFTGenerator": _build_hift,
    "ConvRNNF0Predictor": ConvRNNF0Predictor,
}


def _build(value: Any, path: str, source: str) -> Any:
    """Turn :class:`ObjectSpec` values into modules, children first."""
    if isinstance(value, dict):
        return {key: _build(item, f"{path}/{key}", source) for key, item in value.items()}
    if isinstance(value, list):
        return [_build(item, f"{path}[{index}]", source) for index, item in enumerate(value)]
    if not isinstance(value, ObjectSpec):
        return value
    if value.name == "BigVGAN":
        raise CheckpointConfigError(
            f"{source}: recipe entry {path} is {value.tag}; the BigVGAN vocoder is not implemented (the published "
            "Step-Audio-EditX folder uses HiFTGenerator)",
            file=Path(source),
        )
    builder = RECIPE_BUILDERS.get(value.name)
    if value.kind != "new" or builder is None:
        raise CheckpointConfigError(
            f"{source}: recipe entry {path} is tagged {value.tag}; the 24 kHz decoder builds only !new: entries "
            f"named {sorted(RECIPE_BUILDERS)} (under any module prefix) and never imports what a recipe names",
            file=Path(source),
        )
    where = f"{source}: recipe entry {path} ({value.target})"
    kwargs = {key: _build(item, f"{path}/{key}", source) for key, item in value.kwargs.items()}
    args = [_build(item, f"{path}[{index}]", source) for index, item in enumerate(value.args)]
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        logger.warning("%s passes %s, which the original does not accept; stepaudio ignores them", where, unknown)
    try:
        return builder(*args, **{key: item for key, item in kwargs.items() if key in accepted})
    except _Unsupported as error:
        raise CheckpointConfigError(f"{where}: {error}", file=Path(source)) from error
    except (TypeError, ValueError) as error:
        raise CheckpointConfigError(f"{where} has unusable arguments: {error}", file=Path(source)) from error


@dataclass
class Decoder24kRecipe:
    """The built ``flow`` and ``hift`` and the ``mel_conf`` settings of an EditX recipe."""

    flow: CausalFlow
    hift: HiFT24k
    mel_config: MelSpectrogramConfig


_MEL_KEYS = ("n_fft", "num_mels", "sampling_rate", "hop_size", "win_size", "fmin", "fmax")


def _mel_config(value: Any, source: str) -> MelSpectrogramConfig:
    if not isinstance(value, Mapping):
        raise CheckpointConfigError(
            f"{source}: 'mel_conf' must be a mapping of {list(_MEL_KEYS)}, found {type(value).__name__}",
            file=Path(source),
        )
    missing = [key for key in _MEL_KEYS if key not in value]
    if missing:
        raise CheckpointConfigError(f"{source}: 'mel_conf' lacks {missing}", file=Path(source))
    bad = {
        key: value[key] for key in _MEL_KEYS if not isinstance(value[key], (int, float)) or isinstance(value[key], bool)
    }
    if bad:
        raise CheckpointConfigError(f"{source}: 'mel_conf' values must be numbers, found {bad}", file=Path(source))
    extra = sorted(set(value) - set(_MEL_KEYS) - {"center"})
    if extra:
        logger.warning("%s: 'mel_conf' has %s, which the prompt mel does not use", source, extra)
    try:
        return MelSpectrogramConfig.from_recipe(
            **{key: value[key] for key in _MEL_KEYS}, center=value.get("center", False)
        )
    except CheckpointConfigError as error:
        raise CheckpointConfigError(f"{source}: 'mel_conf': {error}", file=Path(source)) from error


def build_24k_recipe(recipe: dict[str, Any], source: str = "cosyvoice.yaml") -> Decoder24kRecipe:
    """Build ``flow``, ``hift`` and ``mel_conf`` of a parsed EditX recipe (other entries are skipped).

    Raises:
        CheckpointConfigError: an entry is missing, has the wrong class, or sets an unsupported value.
    """
    expected = {"flow": (CausalFlow, FLOW_CLASS), "hift": (HiFT24k, "HiFTGenerator")}
    built: dict[str, Any] = {}
    for key, (cls, name) in expected.items():
        spec = recipe.get(key)
        if not isinstance(spec, ObjectSpec) or spec.name not in (name, "BigVGAN"):
            found = spec.tag if isinstance(spec, ObjectSpec) else "nothing" if spec is None else type(spec).__name__
            raise CheckpointConfigError(
                f"{source}: '{key}' must be a !new:...{name} entry (any module prefix), found {found}",
                file=Path(source),
            )
        built[key] = _build(spec, key, source)
        if not isinstance(built[key], cls):
            raise CheckpointConfigError(
                f"{source}: '{key}' built {type(built[key]).__name__}, expected {name}", file=Path(source)
            )
    if "mel_conf" not in recipe:
        raise CheckpointConfigError(
            f"{source} has no 'mel_conf' entry (the prompt mel settings); top-level keys: {sorted(recipe)}",
            file=Path(source),
        )
    return Decoder24kRecipe(built["flow"], built["hift"], _mel_config(recipe["mel_conf"], source))
