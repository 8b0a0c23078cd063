"""Strict loading of ``flow.pt`` / ``hift.pt`` into the project's modules, with precise error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointKeyError, CheckpointShapeError
from ..state_dict_check import find_state_dict_mismatch

__all__ = ["read_state_dict", "load_strict", "check_state_dict"]


def read_state_dict(path: Path, folder: Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` of a plain state dict (CPU tensors)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(
            f"{path} could not be read as a torch state dict with weights_only=True ({error}); the official file "
            "is a torch.save()d dict of tensors - re-download it if it is truncated",
            folder=folder, file=path,
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, expected a plain dict of tensors (a state dict)",
            folder=folder, file=path,
        )
    return state


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, folder: Path,
                     built_from: str) -> None:
    """Raise if ``state`` does not have exactly the keys and shapes of ``module.state_dict()``.

    Args:
        built_from: what the module's hyper-parameters came from (named in shape errors).
    """
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    mismatch = find_state_dict_mismatch(expected, {key: tuple(value.shape) for key, value in state.items()})
    if mismatch is None:
        return
    key = mismatch.key
    more = f" and {mismatch.other_count} more: {mismatch.others}" if mismatch.other_count else ""
    if mismatch.kind == "missing":
        raise CheckpointKeyError(
            f"{path.name}: missing key '{key}' (expected shape {list(mismatch.expected)}){more}"
            f"; the file does not match the architecture built from {built_from}",
            folder=folder, file=path, key=key,
        )
    if mismatch.kind == "unexpected":
        raise CheckpointKeyError(
            f"{path.name}: unexpected key '{key}' (shape {list(mismatch.found)}){more}"
            f"; the file does not match the architecture built from {built_from}",
            folder=folder, file=path, key=key,
        )
    raise CheckpointShapeError(
        f"{path.name}: key '{key}' has shape {list(mismatch.found)} but the model built from {built_from} expects "
        f"{list(mismatch.expected)}; the recipe's hyper-parameters do not match the weights (check the recipe "
        "entry that sets this layer's size)",
        folder=folder, file=path, key=key,
    )


def load_strict(module: nn.Module, path: Path, folder: Path, built_from: str) -> nn.Module:
    """Load ``path`` into ``module`` (possibly built on the meta device) with exact keys and shapes.

    The tensors are assigned (not copied), so a module built on ``meta`` becomes a real CPU fp32 module.
    """
    state = read_state_dict(path, folder)
    check_state_dict(module, state, path, folder, built_from)
    module.load_state_dict({key: value.float() for key, value in state.items()}, strict=True, assign=True)
    return module
