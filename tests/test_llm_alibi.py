"""sqrt-ALiBi slopes and bias rows (reference notes §1.3)."""

import math

import pytest
import torch

from stepaudio.llm.alibi import SqrtAlibiBias, sqrt_alibi_slopes


@pytest.mark.parametrize(
    ("num_heads", "first_three", "first_extra_index", "first_extra", "last"),
    [
        (96, [0.917004, 0.840896, 0.771105], 64, 0.957603, 0.0652671),  # Step-Audio-Chat
        (48, [0.840896, 0.707107, 0.594604], 32, 0.917004, 0.0681567),  # Step-Audio-TTS-3B
    ],
)
def test_official_head_counts_match_reference_values(num_heads, first_three, first_extra_index, first_extra, last):
    slopes = sqrt_alibi_slopes(num_heads)
    assert slopes.shape == (num_heads,) and slopes.dtype == torch.float32
    assert slopes[:3].tolist() == pytest.approx(first_three, abs=1e-6)
    assert slopes[first_extra_index].item() == pytest.approx(first_extra, abs=1e-6)
    assert slopes[-1].item() == pytest.approx(last, rel=1e-5)


def test_chat_slopes_follow_the_two_part_rule():
    slopes = sqrt_alibi_slopes(96).double()
    expected = [2 ** (-k / 8) for k in range(1, 65)] + [2 ** (-k / 16) for k in range(1, 64, 2)]
    assert torch.allclose(slopes, torch.tensor(expected, dtype=torch.float64), rtol=1e-6)


def test_power_of_two_head_count_has_geometric_slopes_only():
    slopes = sqrt_alibi_slopes(8)
    assert slopes.tolist() == pytest.approx([2 ** (-k) for k in range(1, 9)], rel=1e-6)


def test_slopes_reject_non_positive_head_count():
    with pytest.raises(ValueError, match="num_heads must be positive"):
        sqrt_alibi_slopes(0)


def _explicit_bias(num_heads: int, start: int, end: int, keys: int) -> torch.Tensor:
    slopes = sqrt_alibi_slopes(num_heads)
    bias = torch.full((num_heads, end - start, keys), torch.finfo(torch.float32).min)
    for h in range(num_heads):
        for row, i in enumerate(range(start, end)):
            for j in range(i + 1):
                bias[h, row, j] = -slopes[h] * math.sqrt(i - j)
    return bias


@pytest.mark.parametrize(("start", "end", "keys"), [(0, 7, 7), (5, 9, 9), (12, 13, 13), (3, 4, 9)])
def test_bias_rows_equal_the_formula(start, end, keys):
    builder = SqrtAlibiBias(6)
    bias = builder.bias(start, end, keys, device=torch.device("cpu"))
    assert bias.shape == (1, 6, end - start, keys)
    assert torch.allclose(bias[0], _explicit_bias(6, start, end, keys), atol=1e-6)


def test_decode_row_equals_last_row_of_full_matrix_and_reuses_the_table():
    builder = SqrtAlibiBias(6)
    cpu = torch.device("cpu")
    full = builder.bias(0, 300, 300, device=cpu)
    table = builder.sqrt_distances(300, cpu)
    row = builder.bias(299, 300, 300, device=cpu)
    assert torch.equal(row[0, :, 0], full[0, :, -1])
    # The sqrt table grows by doubling and is not rebuilt for shorter requests.
    assert builder.sqrt_distances(10, cpu).data_ptr() == table.data_ptr()


def test_padding_mask_blocks_padded_keys_with_a_finite_value():
    builder = SqrtAlibiBias(2)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    bias = builder.bias(0, 4, 4, device=torch.device("cpu"), key_padding_mask=mask)
    assert bias.shape == (2, 2, 4, 4)
    assert torch.isfinite(bias).all()
    assert (bias[0, :, :, :2] == torch.finfo(torch.float32).min).all()
    assert bias[1, 0, 3, 0] == pytest.approx(-sqrt_alibi_slopes(2)[0].item() * math.sqrt(3))


def test_query_rows_beyond_keys_are_rejected():
    with pytest.raises(ValueError, match="only 4 keys"):
        SqrtAlibiBias(2).bias(3, 5, 4, device=torch.device("cpu"))
