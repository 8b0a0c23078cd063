"""Strict loading of ``flow.pt`` / ``hift.pt`` into the project's modules, with precise error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointKeyError, CheckpointShapeError

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
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing:
        raise CheckpointKeyError(
            f"{path.name}: missing key '{missing[0]}' (expected shape {list(expected[missing[0]])})"
            + (f" and {len(missing) - 1} more: {missing[1:6]}" if len(missing) > 1 else "")
            + f"; the file does not match the architecture built from {built_from}",
            folder=folder, file=path, key=missing[0],
        )
    if unexpected:
        raise CheckpointKeyError(
            f"{path.name}: unexpected key '{unexpected[0]}' (shape {list(state[unexpected[0]].shape)})"
            + (f" and {len(unexpected) - 1} more: {unexpected[1:6]}" if len(unexpected) > 1 else "")
            + f"; the file does not match the architecture built from {built_from}",
            folder=folder, file=path, key=unexpected[0],
        )
    for key, shape in expected.items():
        found = tuple(state[key].shape)
        if found != shape:
            raise CheckpointShapeError(
                f"{path.name}: key '{key}' has shape {list(found)} but the model built from {built_from} expects "
                f"{list(shape)}; the recipe's hyper-parameters do not match the weights (check the recipe "
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
