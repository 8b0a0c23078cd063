"""Choosing the device and dtype once, at construction, and saying so once in the log."""

from __future__ import annotations

import logging

import torch

from .errors import InvalidArgumentError

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


def resolve_device(device: str | torch.device | None = None, name: str = "device") -> torch.device:
    """``None`` -> CUDA if available, else CPU; anything else is parsed (and checked) as given.

    Raises:
        InvalidArgumentError: not a device torch knows (``"gpu"``), or CUDA/MPS asked for but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise _device_error(name, device, "a device such as 'cpu', 'cuda' or 'cuda:1'")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise _device_error(name, device, "a device such as 'cpu', 'cuda' or 'cuda:1'") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise _device_error(
                name,
                device,
                f"an available device; CUDA is not available in this PyTorch build ({torch.__version__}): "
                "pass 'cpu' or install a CUDA build of torch",
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise _device_error(name, device, f"a visible GPU: {torch.cuda.device_count()} are visible (cuda:0..)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise _device_error(name, device, "an available device; MPS is not available here: pass 'cpu'")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise _device_error(name, device, "'cpu', 'cuda', 'cuda:N' or 'mps'")
    return parsed


def _device_error(name: str, device: object, requirement: str) -> InvalidArgumentError:
    detail = (
        f"must be {requirement}, got {device!r}"
        if not requirement.startswith("an available")
        else (f"must be {requirement.split(';', 1)[0]}, got {device!r};{requirement.split(';', 1)[1]}")
    )
    return InvalidArgumentError(f"{name} {detail}", name=name, value=device, requirement=detail)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, name: str = "dtype") -> torch.dtype:
    """``None`` -> bfloat16 on GPU, float32 on CPU; names like ``"bf16"`` or ``"float32"`` are accepted."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPE_NAMES.values():
            raise InvalidArgumentError(
                f"{name} must be bfloat16, float16 or float32, got {dtype}",
                name=name,
                value=dtype,
                requirement=f"must be bfloat16, float16 or float32, got {dtype}",
            )
        return dtype
    try:
        return _DTYPE_NAMES[str(dtype).lower()]
    except KeyError:
        detail = f"must be one of {', '.join(sorted(_DTYPE_NAMES))} or a torch.dtype, got {dtype!r}"
        raise InvalidArgumentError(f"{name} {detail}", name=name, value=dtype, requirement=detail) from None
