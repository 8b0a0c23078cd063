"""A preallocated (static) KV cache for Step-1, so decode steps have fixed shapes.

:class:`StaticKVCache` holds one key and one value buffer per layer, ``[1, groups, max_len, head_dim]``,
allocated once.  It works in two modes, chosen by :attr:`StaticKVCache.window`:

* ``window is None`` (prefill, or any eager forward): the new keys/values are written at positions
  ``length .. length + n - 1`` and attention reads the filled positions only, exactly like a
  ``DynamicCache`` (same :class:`~stepaudio.llm.attention.AttentionContext`, same bias).
* ``window = w`` (fixed-shape decode step): the new key/value is written at the position held by the
  device tensor :attr:`StaticKVCache.position` (``index_copy_``), attention reads the first ``w``
  positions of the buffers, and positions not yet filled are masked by the sqrt-ALiBi bias
  (:meth:`~stepaudio.llm.alibi.SqrtAlibiBias.bias_at`).  No shape depends on the position, so one
  compiled graph or one CUDA graph per window serves every step until the sequence outgrows it.

The cache never advances by itself: after each forward the caller calls :meth:`StaticKVCache.advance`
(outside a captured graph), which keeps the host count :attr:`length` and the device :attr:`position`
in step.  Only batch size 1 without padding is supported.
"""

from __future__ import annotations

import torch

from .alibi import SqrtAlibiBias
from .attention import AttentionContext
from .configuration import Step1Config

__all__ = ["StaticKVCache"]


class StaticKVCache:
    """Per-layer K/V buffers of a fixed length for one sequence (batch 1).

    Attributes:
        max_len: number of positions each buffer holds (prompt + generated tokens).
        keys, values: one ``[1, groups, max_len, head_dim]`` buffer per layer.
        length: number of filled positions (host side).
        position: ``[1]`` long tensor on the cache's device equal to :attr:`length` (read by fixed-shape steps).
        window: ``None`` for variable-shape forwards; an int for a fixed-shape decode step whose keys are
            the first ``window`` positions.
    """

    def __init__(self, config: Step1Config, max_len: int, *, device: torch.device, dtype: torch.dtype) -> None:
        if max_len < 1:
            raise ValueError(f"StaticKVCache: max_len must be at least 1, got {max_len}")
        self.max_len = max_len
        self.num_layers = config.num_hidden_layers
        shape = (1, config.num_attention_groups, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.num_layers)]
        self.position = torch.zeros(1, device=device, dtype=torch.long)
        self.length = 0
        self.window: int | None = None
        if not torch.compiler.is_compiling():
            # Fixed addresses: torch.compile's CUDA graphs then treat the buffers as static, not as inputs
            # to copy (and do not skip graphs because they are mutated in place).
            for buffer in (*self.keys, *self.values, self.position):
                torch._dynamo.mark_static_address(buffer)

    @property
    def device(self) -> torch.device:
        return self.position.device

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of filled positions (the ``Cache`` API name)."""
        return self.length

    def reset(self) -> None:
        """Forget the sequence (the buffers keep their memory; stale entries are masked or overwritten)."""
        self.length = 0
        self.position.zero_()

    def advance(self, count: int) -> None:
        """Record that the last forward filled ``count`` more positions (call after every forward)."""
        if self.length + count > self.max_len:
            raise ValueError(f"StaticKVCache: {self.length} + {count} positions exceed the cache length {self.max_len}")
        self.length += count
        self.position.fill_(self.length)

    def attention_context(self, alibi: SqrtAlibiBias, query_length: int) -> AttentionContext:
        """The :class:`AttentionContext` of a forward of ``query_length`` new tokens in the current mode."""
        if self.window is None:
            if self.length + query_length > self.max_len:
                raise ValueError(
                    f"StaticKVCache: {self.length} cached + {query_length} new tokens exceed the cache "
                    f"length {self.max_len}"
                )
            return AttentionContext(alibi=alibi, past_length=self.length, query_length=query_length)
        if query_length != 1:
            raise ValueError(f"StaticKVCache: a fixed-shape step takes 1 token, got {query_length}")
        return AttentionContext(
            alibi=alibi,
            past_length=0,  # not read: the position is the device tensor (a host int would be baked into graphs)
            query_length=1,
            query_positions=self.position,
            window=self.window,
        )

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's ``[1, groups, n, head_dim]`` key/value and return the keys/values attention reads."""
        key_buffer, value_buffer = self.keys[layer_idx], self.values[layer_idx]
        if self.window is None:
            start, end = self.length, self.length + key.shape[2]
            key_buffer[:, :, start:end] = key
            value_buffer[:, :, start:end] = value
            return key_buffer[:, :, :end], value_buffer[:, :, :end]
        key_buffer.index_copy_(2, self.position, key)
        value_buffer.index_copy_(2, self.position, value)
        return key_buffer[:, :, : self.window], value_buffer[:, :, : self.window]
