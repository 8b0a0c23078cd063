"""Weight-only int8 / int4 loading of Step-1 checkpoints, quantized shard by shard with bitsandbytes.

``Step1ForCausalLM.from_pretrained(folder, quantization="int8" | "int4")`` lands here after the strict
checkpoint checks.  The model is built on the meta device (no weight memory at all), then the official
shards are read **one at a time**: every tensor is copied to the target device in the model dtype and,
when it is the weight of one of the seven projections of a decoder layer, quantized there at once and
the full-precision copy dropped.  Peak host memory therefore stays near one shard plus the quantized
model (with a GPU target: one shard plus one tensor, the quantized model lives on the GPU).

What is quantized and what is kept:

* quantized: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj`` of
  every decoder layer -- 98.6 % of Step-Audio-Chat's 132 B parameters and 87 % of TTS-3B's 3.5 B;
* kept in the model dtype: ``embed_tokens`` (a table lookup, not a matmul: quantizing it saves little
  compute and bitsandbytes would dequantize the whole table per step), ``lm_head`` (the logits pick
  every text and audio token; it is the most error-sensitive matrix and only 0.7 % of the 130B model)
  and the RMSNorm vectors (a few kilobytes).

Methods (bitsandbytes, see README "Quantized loading" for the measurements behind the choice):

* ``int8``: ``bnb.nn.Linear8bitLt`` -- int8 weights with one absmax scale per output row (LLM.int8();
  activation columns above :data:`INT8_OUTLIER_THRESHOLD` are multiplied in 16-bit).
* ``int4``: ``bnb.nn.Linear4bit`` -- NF4 with one absmax per ``group_size`` consecutive weights
  (default :data:`DEFAULT_INT4_GROUP_SIZE`), the absmaxes themselves quantized to 8 bits ("double
  quantization"), dequantized on the fly into the model dtype.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from torch import nn

from ..errors import CheckpointKeyError, InvalidArgumentError
from ..validation import check_choice, check_int, describe_value
from .checkpoint import checkpoint_shard_files
from .configuration import Step1Config

if TYPE_CHECKING:
    from .modeling import Step1PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = [
    "QUANTIZATION_CHOICES",
    "INT4_GROUP_SIZES",
    "DEFAULT_INT4_GROUP_SIZE",
    "INT8_OUTLIER_THRESHOLD",
    "QUANTIZED_PROJECTIONS",
    "QuantizationSettings",
    "resolve_quantization",
    "is_quantized_weight_key",
    "load_quantized_step1",
    "model_quantization",
    "model_weight_bytes",
    "projected_weight_bytes",
]

#: The accepted values of ``quantization`` (``None`` loads the checkpoint unquantized).
QUANTIZATION_CHOICES: tuple[str, ...] = ("int8", "int4")
#: Block sizes bitsandbytes' 4-bit kernels accept on every backend (CPU, CUDA, ROCm).
INT4_GROUP_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
#: bitsandbytes' (and QLoRA's) default NF4 block: the best accuracy the fast kernels offer.
DEFAULT_INT4_GROUP_SIZE = 64
#: LLM.int8()'s outlier threshold, as transformers' ``BitsAndBytesConfig`` uses by default.
INT8_OUTLIER_THRESHOLD = 6.0
#: The Linear layers of each decoder layer that are quantized (module paths inside ``model.layers.N``).
QUANTIZED_PROJECTIONS: tuple[str, ...] = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
#: The keyword arguments of ``from_pretrained`` that a quantized load understands.
QUANTIZED_LOAD_KWARGS: frozenset[str] = frozenset(
    {"config", "dtype", "torch_dtype", "device_map", "attn_implementation", "local_files_only"}
)
_SUPPORTED_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_QUANTIZED_KEY = re.compile(
    r"model\.layers\.\d+\.(?:" + "|".join(re.escape(name) for name in QUANTIZED_PROJECTIONS) + r")\.weight"
)
_INSTALL_HINT = "pip install 'stepaudio[quantization]' (or pip install 'bitsandbytes>=0.50.2,<0.51')"
#: Attribute set on a quantized model (read it with :func:`model_quantization`).
_MODEL_ATTRIBUTE = "_stepaudio_quantization"


@dataclass(frozen=True)
class QuantizationSettings:
    """A validated quantization request.

    Attributes:
        method: ``"int8"`` or ``"int4"``.
        group_size: int4 only: consecutive weights sharing one scale (``None`` for int8, which has one
            scale per output row).
    """

    method: str
    group_size: int | None = None

    def describe(self) -> str:
        """Short human-readable form, e.g. ``int4 (NF4, group size 64)``."""
        if self.method == "int4":
            return f"int4 (NF4, group size {self.group_size}, double-quantized scales)"
        return "int8 (LLM.int8, one scale per output row)"


def resolve_quantization(
    quantization: object, group_size: object = None, name: str = "quantization"
) -> QuantizationSettings | None:
    """Validate ``quantization`` (``None``, ``"int8"`` or ``"int4"``) and the optional int4 ``group_size``.

    ``name`` is the argument or option the value came from, for the message.

    Raises:
        InvalidArgumentError: an unknown method, a group size that bitsandbytes does not accept, or a
            group size given without ``quantization="int4"``.
    """
    if quantization is None:
        if group_size is not None:
            raise InvalidArgumentError.about(
                "quantization_group_size",
                f"is only used with quantization='int4', got {describe_value(group_size)} without quantization",
                group_size,
            )
        return None
    method = check_choice(quantization, name, QUANTIZATION_CHOICES, hint="or None to load the unquantized weights")
    if method == "int8":
        if group_size is not None:
            raise InvalidArgumentError.about(
                "quantization_group_size",
                f"is only used with quantization='int4' (int8 has one scale per output row), got "
                f"{describe_value(group_size)}",
                group_size,
            )
        return QuantizationSettings("int8")
    if group_size is None:
        return QuantizationSettings("int4", DEFAULT_INT4_GROUP_SIZE)
    size = check_int(group_size, "quantization_group_size", minimum=1)
    if size not in INT4_GROUP_SIZES:
        raise InvalidArgumentError.about(
            "quantization_group_size",
            f"must be one of {', '.join(map(str, INT4_GROUP_SIZES))} (the block sizes of bitsandbytes' 4-bit "
            f"kernels), got {size}",
            group_size,
        )
    return QuantizationSettings("int4", size)


def is_quantized_weight_key(key: str) -> bool:
    """Whether the checkpoint tensor ``key`` is the weight of a decoder-layer projection that gets quantized."""
    return _QUANTIZED_KEY.fullmatch(key) is not None


def import_bitsandbytes() -> Any:
    """Import bitsandbytes, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError as error:
        raise ImportError(
            f"quantized loading needs bitsandbytes, which cannot be imported ({error}); {_INSTALL_HINT}"
        ) from error


def model_quantization(model: nn.Module) -> QuantizationSettings | None:
    """How ``model`` was quantized by :func:`load_quantized_step1` (``None`` for an unquantized model)."""
    return getattr(model, _MODEL_ATTRIBUTE, None)


# ----------------------------------------------------------------------------------------------- arguments
def _resolve_dtype(dtype: object, config: Step1Config, folder: Path) -> torch.dtype:
    """The model dtype, by transformers' rules: ``None`` or ``"auto"`` -> config.json's dtype (else the weights')."""
    if dtype is None or dtype == "auto":
        dtype = config.dtype
        if dtype is None:
            shard = checkpoint_shard_files(folder)[0]
            with safe_open(str(shard), framework="pt") as handle:
                dtype = handle.get_slice(next(iter(handle.keys()))).get_dtype()
            dtype = {"BF16": "bfloat16", "F16": "float16"}.get(dtype, "float32")
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = dtype
    if not isinstance(name, str) or name not in _SUPPORTED_DTYPES:
        raise InvalidArgumentError.about(
            "dtype",
            "must be torch.float32, torch.bfloat16, torch.float16 (or their names, or 'auto') for a quantized "
            f"load, got {describe_value(dtype)}",
            dtype,
        )
    return _SUPPORTED_DTYPES[name]


def resolve_quantized_device(device_map: object) -> torch.device:
    """The one device a quantized model is loaded onto.

    ``None`` -> CPU (as transformers does without a device map); a device (``"cuda:0"``, ``torch.device``,
    an int GPU index) or ``{"": device}`` -> that device; ``"auto"`` -> the first CUDA GPU when one is
    visible, else the CPU.  Maps that split the model over several devices are refused: the goal of the
    quantized load is to fit the model on one GPU.
    """
    if device_map is None:
        return torch.device("cpu")
    if device_map == "auto":
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        logger.info("device_map='auto' with quantization: loading the whole model onto %s", device)
        return device
    if isinstance(device_map, dict):
        devices = set(device_map.values())
        if len(devices) != 1:
            raise InvalidArgumentError.about(
                "device_map",
                "must put the whole quantized model on one device (None, 'auto', a device such as 'cuda:0', or "
                f"{{'': device}}), got a map over {len(devices)} devices",
                device_map,
            )
        device_map = devices.pop()
    try:
        device = torch.device(device_map) if not isinstance(device_map, int) else torch.device("cuda", device_map)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgumentError.about(
            "device_map",
            f"must be None, 'auto', a device such as 'cpu' or 'cuda:0', or {{'': device}} for a quantized load, "
            f"got {describe_value(device_map)} ({error})",
            device_map,
        ) from error
    if device.type not in ("cpu", "cuda"):
        raise InvalidArgumentError.about(
            "device_map",
            f"must name a CPU or CUDA device for a quantized load (bitsandbytes), got {describe_value(device_map)}",
            device_map,
        )
    return device


# ------------------------------------------------------------------------------------------------- modules
#: Rows per block of bitsandbytes' AVX512-BF16 CPU layout for 4-bit weights.
_CPU_PACK_ROWS = 32
#: How int4 weights are stored, the same for the empty ``Linear4bit`` and the ``Params4bit`` loaded into it:
#: NF4 with double-quantized statistics, packed into uint8.
_NF4_FORMAT: dict[str, Any] = {"compress_statistics": True, "quant_type": "nf4", "quant_storage": torch.uint8}
_INT8_CAST_NOTICE = "MatMul8bitLt: inputs will be cast from"


class _OnceFilter(logging.Filter):
    """Lets bitsandbytes' per-matmul "inputs will be cast ... to float16" notice through once per process.

    LLM.int8() multiplies int8 activations and logs that notice on *every* call for a bf16/fp32 model
    (hundreds of lines per generated token); once is enough to tell the user.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_INT8_CAST_NOTICE):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def _install_int8_cast_notice_filter() -> None:
    """Attach :class:`_OnceFilter` to bitsandbytes' autograd logger (idempotent)."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(existing, _OnceFilter) for existing in bnb_logger.filters):
        bnb_logger.addFilter(_OnceFilter())


def _empty_quantized_linear(linear: nn.Linear, settings: QuantizationSettings, dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes Linear with the shape of ``linear`` and its weight on the meta device (no memory)."""
    bnb = import_bitsandbytes()
    if settings.method == "int4":
        module = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=False,
            compute_dtype=dtype,
            **_NF4_FORMAT,
            device="meta",
        )
        if linear.out_features % _CPU_PACK_ROWS or linear.in_features % settings.group_size:
            # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel at the first CPU forward and
            # needs rows % 32 == 0 and whole groups per row; other shapes (tiny test models, Chat's down_proj
            # with group size >= 1024) keep the dequantize + matmul path.
            module.support_avx512bf16_for_cpu = False
        return module
    _install_int8_cast_notice_filter()
    return bnb.nn.Linear8bitLt(
        linear.in_features,
        linear.out_features,
        bias=False,
        has_fp16_weights=False,
        threshold=INT8_OUTLIER_THRESHOLD,
        device="meta",
    )


def _quantized_weight(
    module: nn.Module, weight: torch.Tensor, settings: QuantizationSettings, device: torch.device
) -> nn.Parameter:
    """Quantize ``weight`` (model dtype, CPU) on ``device`` into the parameter type ``module`` expects."""
    bnb = import_bitsandbytes()
    if settings.method == "int4":
        parameter = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            blocksize=settings.group_size,
            **_NF4_FORMAT,
            module=module,
        )
    else:
        parameter = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    return parameter.to(device)  # bitsandbytes quantizes on the move, on the target device


def load_quantized_step1(
    model_class: type[Step1PreTrainedModel],
    folder: Path,
    config: Step1Config,
    settings: QuantizationSettings,
    *,
    dtype: object = None,
    device_map: object = None,
    attn_implementation: str | None = None,
) -> Step1PreTrainedModel:
    """Build ``model_class`` quantized from the (already validated) checkpoint ``folder``, one shard at a time.

    Args:
        model_class: :class:`~stepaudio.llm.modeling.Step1ForCausalLM` (or the bare ``Step1Model``).
        folder: an official-layout checkpoint folder that passed
            :func:`~stepaudio.llm.checkpoint.validate_step1_checkpoint` with ``config``.
        config: its configuration (copied; the caller's object is not modified).
        settings: from :func:`resolve_quantization`.
        dtype: model / compute dtype as for transformers (``None``/``"auto"``: config.json's ``torch_dtype``).
        device_map: see :func:`resolve_quantized_device`.
        attn_implementation: ``sdpa`` (default), ``flex``/``flex_attention`` or ``eager``.

    Returns:
        The model in eval mode, every tensor on the target device; :func:`model_quantization` tells its settings.
    """
    from accelerate import init_empty_weights

    bnb = import_bitsandbytes()
    model_dtype = _resolve_dtype(dtype, config, folder)
    device = resolve_quantized_device(device_map)
    config = copy.deepcopy(config)
    config.dtype = model_dtype
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    with init_empty_weights(include_buffers=False):  # parameters on meta; plain tensors (ALiBi slopes) stay real
        model = model_class(config)

    prefix = "" if hasattr(model, "lm_head") else model_class.base_model_prefix + "."
    for name, module in list(model.named_modules()):
        if is_quantized_weight_key(f"{prefix}{name}.weight"):
            parent_name, _, child_name = name.rpartition(".")
            model.get_submodule(parent_name).add_module(
                child_name, _empty_quantized_linear(module, settings, model_dtype)
            )

    quantized_types = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    for shard in checkpoint_shard_files(folder):
        count = 0
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if prefix and not key.startswith(prefix):
                    continue  # the bare decoder (Step1Model) has no lm_head
                name = key.removeprefix(prefix)
                module_name, _, parameter_name = name.rpartition(".")
                module = model.get_submodule(module_name)
                # get_tensor is a view of the memory-mapped shard: move it to the device first, then cast there
                # (no host copy for a GPU target); copy=True so no parameter keeps the shard mapped.
                tensor = handle.get_tensor(key).to(device=device).to(dtype=model_dtype, copy=True)
                if isinstance(module, quantized_types):
                    module.weight = _quantized_weight(module, tensor, settings, device)
                else:
                    module._parameters[parameter_name] = nn.Parameter(tensor, requires_grad=False)
                del tensor
                count += 1
        logger.debug("loaded %d tensors from %s (%s)", count, shard.name, settings.method)

    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.device.type == "meta":  # validate_step1_checkpoint makes this unreachable for valid folders
            raise CheckpointKeyError(
                f"tensor {prefix}{name!s} was not found in the shards of {folder}; the checkpoint is incomplete",
                folder=folder,
                key=f"{prefix}{name}",
            )
    generation_config = folder / "generation_config.json"
    if generation_config.is_file() and hasattr(model, "generation_config"):
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder)
    setattr(model, _MODEL_ATTRIBUTE, settings)
    model.eval()
    logger.info(
        "loaded %s quantized %s onto %s (%s, %.1f MiB of weights)",
        folder,
        settings.describe(),
        device,
        model_dtype,
        model_weight_bytes(model) / 2**20,
    )
    return model


# ---------------------------------------------------------------------------------------------- accounting
def _quant_state_bytes(state: Any) -> int:
    """Bytes of a bitsandbytes 4-bit ``QuantState`` (absmax, code book and the nested state)."""
    total = 0
    for tensor in (getattr(state, "absmax", None), getattr(state, "code", None), getattr(state, "offset", None)):
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel() * tensor.element_size()
    nested = getattr(state, "state2", None)
    return total + (_quant_state_bytes(nested) if nested is not None else 0)


def model_weight_bytes(model: nn.Module) -> int:
    """Bytes the weights of ``model`` occupy: every parameter and buffer plus the quantization scales."""
    total = 0
    for module in model.modules():
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            total += tensor.numel() * tensor.element_size()
        weight = getattr(module, "weight", None)
        quant_state = getattr(weight, "quant_state", None)
        if quant_state is not None:
            total += _quant_state_bytes(quant_state)
        scales = getattr(getattr(module, "state", None), "SCB", None)
        if scales is None:
            scales = getattr(weight, "SCB", None)
        if isinstance(scales, torch.Tensor):
            total += scales.numel() * scales.element_size()
    return total


def projected_weight_bytes(
    config: Step1Config | dict,
    quantization: str | None,
    group_size: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Weight memory of a Step-1 model with ``config`` loaded with ``quantization``, computed from the shapes.

    Counts what :func:`load_quantized_step1` keeps: quantized projections (int8: 1 byte per weight + one
    float32 scale per row; int4: half a byte per weight + one 8-bit absmax per ``group_size`` weights + one
    float32 per 256 absmaxes + the 16-entry code book), the rest in ``dtype``.
    """
    from .checkpoint import expected_state_dict_shapes

    if isinstance(config, dict):
        config = Step1Config(**config)
    settings = resolve_quantization(quantization, group_size)
    element = torch.empty((), dtype=dtype).element_size()
    total = 0
    for key, shape in expected_state_dict_shapes(config).items():
        count = 1
        for size in shape:
            count *= size
        if settings is None or not is_quantized_weight_key(key):
            total += count * element
        elif settings.method == "int8":
            total += count + 4 * shape[0]
        else:
            blocks = -(-count // settings.group_size)
            total += -(-count // 2) + blocks + 4 * -(-blocks // 256) + 4 * 16 + 4 * 256 + 4
    return total
