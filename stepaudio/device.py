"""Choosing the device and dtype once, at construction, and saying so once in the log."""

from __future__ import annotations

import logging

import torch

from .validation import invalid_value

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


_DEVICE_EXAMPLE = "a device such as 'cpu', 'cuda' or 'cuda:1'"


def resolve_device(device: str | torch.device | None = None, name: str = "device") -> torch.device:
    """``None`` -> CUDA if available, else CPU; anything else is parsed (and checked) as given.

    Raises:
        InvalidArgumentError: not a device torch knows (``"gpu"``), or CUDA/MPS asked for but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise invalid_value(name, _DEVICE_EXAMPLE, device)
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise invalid_value(name, _DEVICE_EXAMPLE, device) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise invalid_value(
                name,
                "an available device",
                device,
                f"CUDA is not available in this PyTorch build ({torch.__version__}): pass 'cpu' or install a CUDA "
                "build of torch",
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise invalid_value(name, f"a visible GPU: {torch.cuda.device_count()} are visible (cuda:0..)", device)
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise invalid_value(name, "an available device", device, "MPS is not available here: pass 'cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise invalid_value(name, "'cpu', 'cuda', 'cuda:N' or 'mps'", device)
    return parsed


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, name: str = "dtype") -> torch.dtype:
    """``None`` -> bfloat16 on GPU, float32 on CPU; names like ``"bf16"`` or ``"float32"`` are accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPE_NAMES.values():
            raise invalid_value(name, "bfloat16, float16 or float32", dtype)
        return dtype
    try:
        return _DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        raise invalid_value(name, f"one of {', '.join(sorted(_DTYPE_NAMES))} or a torch.dtype", dtype) from None
