"""Square-root ALiBi: the position signal of Step-1 models.

Step-1 has no position embeddings.  Attention from query position ``i`` to key position ``j`` gets
the additive bias ``-slope_h * sqrt(i - j)`` for ``j <= i`` (and is masked for ``j > i``).  Positions
count every token of the sequence, cached ones included, so the bias only depends on distances.

This module computes the per-head slopes (the ALiBi recipe, including its rule for head counts
that are not powers of two) and builds bias rows on demand.  The ``sqrt`` of every distance is
computed once into a table that grows by doubling, so a decode step only slices and scales one row
of it instead of rebuilding an ``L x L`` matrix.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sqrt_alibi_slopes", "SqrtAlibiBias"]


def sqrt_alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head slopes of the ALiBi recipe, in head order, as float32.

    With ``n = 2 ** floor(log2(num_heads))``, the first ``n`` slopes are ``(2 ** (-8 / n)) ** k`` for
    ``k = 1..n``.  If ``num_heads > n``, the remaining ``num_heads - n`` slopes are
    ``(2 ** (-4 / n)) ** k`` for odd ``k = 1, 3, 5, ...`` (the "non power of two" rule).
    """
    if num_heads < 1:
        raise ValueError(f"sqrt_alibi_slopes: num_heads must be positive, got {num_heads}")
    closest_power_of_two = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-8.0 / closest_power_of_two)
    slopes = [base**k for k in range(1, closest_power_of_two + 1)]
    if closest_power_of_two < num_heads:
        extra_base = 2.0 ** (-4.0 / closest_power_of_two)
        num_extra = num_heads - closest_power_of_two
        slopes += [extra_base**k for k in range(1, 2 * num_extra, 2)]
    # Explicit CPU: models are often constructed under a `meta` default device.
    return torch.tensor(slopes, dtype=torch.float64, device="cpu").to(torch.float32)


class SqrtAlibiBias:
    """Builds sqrt-ALiBi bias rows, caching the slopes and the ``sqrt(distance)`` table per device.

    One instance lives on the model and is shared by all layers; it holds no parameters, so the
    state dict is unaffected.
    """

    def __init__(self, num_heads: int) -> None:
        self.num_heads = num_heads
        self._slopes_cpu = sqrt_alibi_slopes(num_heads)
        self._slopes: dict[torch.device, torch.Tensor] = {}
        self._sqrt_table: dict[torch.device, torch.Tensor] = {}

    def slopes(self, device: torch.device) -> torch.Tensor:
        """The float32 slopes [num_heads] on ``device`` (copied there once)."""
        device = torch.device(device)
        if device not in self._slopes:
            self._slopes[device] = self._slopes_cpu.to(device)
        return self._slopes[device]

    def sqrt_distances(self, length: int, device: torch.device) -> torch.Tensor:
        """``sqrt(0), sqrt(1), ..., sqrt(length - 1)`` as float32 on ``device``, from a growing cache."""
        device = torch.device(device)
        table = self._sqrt_table.get(device)
        if table is None or table.numel() < length:
            size = max(length, 2 * (0 if table is None else table.numel()), 256)
            table = torch.arange(size, device=device, dtype=torch.float64).sqrt().to(torch.float32)
            self._sqrt_table[device] = table
        return table[:length]

    def bias(
        self,
        query_start: int,
        query_end: int,
        key_length: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Additive attention bias for absolute query positions ``[query_start, query_end)``.

        Args:
            query_start, query_end: absolute positions of the query rows wanted.
            key_length: number of keys (every position ``0 .. key_length - 1``).
            device, dtype: where and in which dtype to return the bias.
            key_padding_mask: optional ``[batch, key_length]`` mask, true/1 where a key is a real token.

        Returns:
            ``[1 or batch, num_heads, query_end - query_start, key_length]``: ``-slope * sqrt(i - j)`` for
            visible keys, the dtype's most negative finite value for future or padded keys (finite, so a
            row with no visible key gives a uniform softmax instead of NaN).
        """
        if query_end > key_length:
            raise ValueError(f"query rows end at {query_end} but only {key_length} keys exist")
        num_rows = query_end - query_start
        table = self.sqrt_distances(key_length, device)
        if num_rows == 1:
            # Decode step: distances to keys 0..i are i..0, i.e. the table read backwards.
            visible = table[: query_start + 1].flip(0)
            distance_sqrt = torch.cat([visible, visible.new_zeros(key_length - query_start - 1)])[None]
            future = torch.arange(key_length, device=device)[None] > query_start
        else:
            distance = (
                torch.arange(query_start, query_end, device=device)[:, None]
                - torch.arange(key_length, device=device)[None, :]
            )
            future = distance < 0
            distance_sqrt = table[distance.clamp_(min=0)]
        bias = -self.slopes(device)[:, None, None] * distance_sqrt[None]
        blocked = future[None, None]
        if key_padding_mask is not None:
            padded = ~key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :key_length]
            blocked = blocked | padded
        bias = bias[None].masked_fill(blocked, torch.finfo(dtype).min)
        return bias.to(dtype)

    def bias_at(
        self,
        query_positions: torch.Tensor,
        key_length: int,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Fixed-shape bias for query rows whose absolute positions are held in a device tensor.

        The shape depends only on ``len(query_positions)`` and ``key_length``, never on the position
        values, so a decode step built on it can be captured in a CUDA graph or compiled once and then
        replayed at every position.  The values equal those of :meth:`bias` (same ``sqrt`` table, same
        arithmetic): keys after a query's position get the dtype's most negative finite value.

        Args:
            query_positions: ``[rows]`` long tensor of absolute query positions, each ``< key_length``.
            key_length: number of keys (``0 .. key_length - 1``; keys after a row's position are masked).
            dtype: dtype of the returned bias.

        Returns:
            ``[1, num_heads, rows, key_length]``.

        The ``sqrt`` table must already cover ``key_length`` (call :meth:`sqrt_distances` first) when
        this runs under CUDA-graph capture, where a table cannot be (re)allocated.
        """
        device = query_positions.device
        table = self.sqrt_distances(key_length, device)
        distance = query_positions.view(-1, 1) - torch.arange(key_length, device=device)[None, :]
        future = distance < 0
        distance_sqrt = table[distance.clamp(min=0)]
        bias = -self.slopes(device)[:, None, None] * distance_sqrt[None]
        bias = bias[None].masked_fill(future[None, None], torch.finfo(dtype).min)
        return bias.to(dtype)
