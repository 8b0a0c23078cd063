"""Choosing the device and dtype once, at construction, and saying so once in the log."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPE_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> CUDA if available, else CPU; anything else is parsed (and checked) as given."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} was requested but CUDA is not available in this PyTorch build "
            f"({torch.__version__}); pass device='cpu' or install a CUDA build of torch"
        )
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> bfloat16 on GPU, float32 on CPU; names like ``"bf16"`` or ``"float32"`` are accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)} or a torch.dtype") from None
