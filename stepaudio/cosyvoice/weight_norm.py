"""Weight normalisation whose state-dict keys keep the legacy ``weight_g`` / ``weight_v`` names.

The official ``hift.pt`` was written with the old ``torch.nn.utils.weight_norm`` and stores each
normalised convolution as ``<name>.weight_g`` (magnitude) and ``<name>.weight_v`` (direction).  The
project uses the current ``torch.nn.utils.parametrizations.weight_norm`` (parameters
``<name>.parametrizations.weight.original0/1``) and renames between the two forms in state-dict
hooks, so ``state_dict()`` and ``load_state_dict(strict=True)`` speak the file's key names.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["weight_normed", "LegacyWeightNormNames", "to_legacy_key", "from_legacy_key"]

_MODERN_G = ".parametrizations.weight.original0"
_MODERN_V = ".parametrizations.weight.original1"


def weight_normed(module: nn.Module) -> nn.Module:
    """Apply weight normalisation (dim 0, as the legacy helper did) to ``module.weight``."""
    return weight_norm(module, name="weight", dim=0)


def to_legacy_key(key: str) -> str:
    """``a.parametrizations.weight.original0`` -> ``a.weight_g`` (``original1`` -> ``weight_v``)."""
    if key.endswith(_MODERN_G):
        return key[: -len(_MODERN_G)] + ".weight_g"
    if key.endswith(_MODERN_V):
        return key[: -len(_MODERN_V)] + ".weight_v"
    return key


def from_legacy_key(key: str) -> str:
    """Inverse of :func:`to_legacy_key`."""
    if key.endswith(".weight_g"):
        return key[: -len(".weight_g")] + _MODERN_G
    if key.endswith(".weight_v"):
        return key[: -len(".weight_v")] + _MODERN_V
    return key


class LegacyWeightNormNames(nn.Module):
    """Mixin for a root module: its state dict uses ``weight_g``/``weight_v`` for weight-normed layers."""

    def __init__(self) -> None:
        super().__init__()
        self.register_state_dict_post_hook(_rename_to_legacy)
        self.register_load_state_dict_pre_hook(_rename_from_legacy)


def _rename_to_legacy(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        legacy = to_legacy_key(key)
        if legacy != key:
            state_dict[legacy] = state_dict.pop(key)


def _rename_from_legacy(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        modern = from_legacy_key(key)
        if modern != key:
            state_dict[modern] = state_dict.pop(key)
