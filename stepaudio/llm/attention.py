"""Attention backends for Step-1: grouped-query attention with a square-root ALiBi bias.

Three interchangeable backends compute the same function (they agree within 1e-5 in float32):

* ``sdpa`` (default): ``torch.nn.functional.scaled_dot_product_attention`` with the bias as an
  additive mask, built only for the query rows being computed.  Long prefills are processed in
  blocks of query rows so the bias never exceeds :data:`SDPA_BIAS_BUDGET_BYTES`.
* ``flex_attention`` (alias ``flex``): ``torch.nn.attention.flex_attention`` with the bias as a
  ``score_mod``; no ``L x L`` tensor exists on GPU (compiled kernel).  Steps with fewer than
  :data:`FLEX_MIN_QUERY_LENGTH` query rows (decoding) use the ``sdpa`` path, whose one-row bias is
  tiny, instead of compiling a kernel per cache length.
* ``eager``: the plain reference (explicit matmuls and softmax in float32).

The per-forward :class:`AttentionContext` is built once by the model and shared by all layers, so
the bias (or flex block mask) of a step is computed once, not once per layer.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .alibi import SqrtAlibiBias

logger = logging.getLogger(__name__)

__all__ = [
    "ATTENTION_BACKENDS",
    "AttentionContext",
    "normalize_attention_backend",
    "sqrt_alibi_attention",
]

#: Canonical backend names (transformers' ``attn_implementation`` values) and accepted aliases.
ATTENTION_BACKENDS: dict[str, str] = {
    "sdpa": "sdpa",
    "flex_attention": "flex_attention",
    "flex": "flex_attention",
    "eager": "eager",
}

#: Largest bias (in bytes) the sdpa backend materialises at once; longer prefills go in row blocks.
SDPA_BIAS_BUDGET_BYTES = 256 * 1024 * 1024

#: Below this many query rows the flex backend hands the step to sdpa (decode steps).
FLEX_MIN_QUERY_LENGTH = 16


def normalize_attention_backend(name: str | None) -> str:
    """Map a user-facing backend name (``sdpa``, ``flex``, ``flex_attention``, ``eager``) to its canonical form."""
    if name is None:
        return "sdpa"
    try:
        return ATTENTION_BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown Step-1 attention backend {name!r}; choose one of {sorted(ATTENTION_BACKENDS)}"
        ) from None


@dataclass
class AttentionContext:
    """Everything attention needs for one forward pass, shared by all layers.

    Attributes:
        alibi: the model's bias builder (slopes and sqrt tables cached per device).
        past_length: number of tokens already in the KV cache (absolute position of the first query).
        query_length: number of new tokens in this forward pass.
        key_padding_mask: ``[batch, past_length + query_length]`` bool mask (True = real token), or None.
        query_positions: for a fixed-shape step of a static KV cache: ``[query_length]`` long tensor
            of the queries' absolute positions (on the model's device).  The keys are then the first
            ``window`` positions of the cache, positions after a query are masked, and the bias is built by
            :meth:`SqrtAlibiBias.bias_at` with shapes that do not depend on the position, so the step can be
            captured in a CUDA graph or compiled once; ``past_length`` is not used for the bias then.
        window: number of cache positions the keys of a fixed-shape step cover (with ``query_positions``).
    """

    alibi: SqrtAlibiBias
    past_length: int
    query_length: int
    key_padding_mask: torch.Tensor | None = None
    query_positions: torch.Tensor | None = None
    window: int | None = None
    _bias_cache: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)
    _block_masks: dict[torch.device, object] = field(default_factory=dict, repr=False)

    @property
    def key_length(self) -> int:
        if self.query_positions is not None:
            return self.window
        return self.past_length + self.query_length

    def bias_rows(self, row_start: int, row_end: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Bias for query rows ``[row_start, row_end)`` of this step (relative to the step's first query)."""
        key = (row_start, row_end, device, dtype)
        bias = self._bias_cache.get(key)
        if bias is None and self.query_positions is not None:
            positions = self.query_positions[row_start:row_end].to(device)
            bias = self.alibi.bias_at(positions, self.window, dtype=dtype)
            self._bias_cache[key] = bias
        elif bias is None:
            bias = self.alibi.bias(
                self.past_length + row_start,
                self.past_length + row_end,
                self.key_length,
                device=device,
                dtype=dtype,
                key_padding_mask=self.key_padding_mask,
            )
            # Keep it for the other layers only when it is the whole step (the common, small case).
            if row_start == 0 and row_end == self.query_length:
                self._bias_cache[key] = bias
        return bias

    def flex_block_mask(self, batch_size: int, device: torch.device):
        """The causal (+ padding) block mask for flex attention, built once per device."""
        if device not in self._block_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            past = self.past_length
            padding = None if self.key_padding_mask is None else self.key_padding_mask.to(device, torch.bool)

            def visible(batch, head, query_index, key_index):
                causal = query_index + past >= key_index
                if padding is None:
                    return causal
                return causal & padding[batch, key_index]

            mask_batch = 1 if padding is None else batch_size
            self._block_masks[device] = create_block_mask(
                visible, mask_batch, None, self.query_length, self.key_length, device=device
            )
        return self._block_masks[device]


def _eager_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """Reference implementation: repeat K/V per query head, float32 softmax."""
    repeats = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(repeats, dim=1)
    value = value.repeat_interleave(repeats, dim=1)
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale + bias.float()
    probabilities = torch.softmax(scores, dim=-1)
    return torch.matmul(probabilities, value.float()).to(query.dtype)


def _sdpa_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext, scale: float
) -> torch.Tensor:
    batch, heads, rows, _ = query.shape
    bytes_per_row = (
        heads * context.key_length * query.element_size() * max(batch if context.key_padding_mask is not None else 1, 1)
    )
    block = max(1, min(rows, SDPA_BIAS_BUDGET_BYTES // max(bytes_per_row, 1)))
    outputs = []
    for start in range(0, rows, block):
        end = min(rows, start + block)
        bias = context.bias_rows(start, end, query.device, query.dtype)
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end], key, value, attn_mask=bias, scale=scale, enable_gqa=True
            )
        )
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)


@functools.cache
def _flex_attention_function(device_type: str):
    """``flex_attention``: compiled into a fused kernel on CUDA, the unfused reference elsewhere."""
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=True)
    logger.info(
        "flex attention on %s runs torch's unfused implementation (it materialises the scores); "
        "it is fused only on CUDA, where it is compiled",
        device_type,
    )

    def unfused_flex_attention(*args, **kwargs):
        with warnings.catch_warnings():
            # torch warns on every uncompiled call; the info line above says it once.
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(*args, **kwargs)

    return unfused_flex_attention


def _flex_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext, scale: float
) -> torch.Tensor:
    if query.device.type == "cpu" and query.requires_grad:
        raise NotImplementedError(
            "the flex attention backend has no backward pass on CPU; run under torch.no_grad() / "
            "torch.inference_mode(), or use the sdpa backend for training on CPU"
        )
    slopes = context.alibi.slopes(query.device)
    # A tensor, not an int: the compiled kernel then serves every cache offset without recompiling.
    past = torch.tensor(context.past_length, device=query.device)

    def sqrt_alibi_score(score, batch, head, query_index, key_index):
        distance = (query_index + past - key_index).clamp(min=0).to(torch.float32)
        return score - slopes[head] * torch.sqrt(distance)

    block_mask = context.flex_block_mask(query.shape[0], query.device)
    flex_attention = _flex_attention_function(query.device.type)
    return flex_attention(
        query, key, value, score_mod=sqrt_alibi_score, block_mask=block_mask, scale=scale, enable_gqa=True
    )


def sqrt_alibi_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    context: AttentionContext,
    scale: float,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Grouped-query attention with the sqrt-ALiBi bias.

    Args:
        query: ``[batch, heads, query_length, head_dim]``.
        key, value: ``[batch, groups, key_length, head_dim]`` (cache included); query head ``h`` reads
            group ``h // (heads // groups)``.
        context: the step's :class:`AttentionContext`.
        scale: softmax scale (``head_dim ** -0.5`` for Step-1).
        backend: ``sdpa``, ``flex_attention`` or ``eager``.

    Returns:
        ``[batch, heads, query_length, head_dim]``.
    """
    if backend == "sdpa":
        return _sdpa_attention(query, key, value, context, scale)
    if backend == "flex_attention":
        if query.shape[2] < FLEX_MIN_QUERY_LENGTH or context.query_positions is not None:
            return _sdpa_attention(query, key, value, context, scale)
        return _flex_attention(query, key, value, context, scale)
    if backend == "eager":
        bias = context.bias_rows(0, query.shape[2], query.device, torch.float32)
        return _eager_attention(query, key, value, bias, scale)
    raise ValueError(f"unknown Step-1 attention backend {backend!r}; choose one of {sorted(ATTENTION_BACKENDS)}")
