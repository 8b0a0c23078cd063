"""The one rule for strict checkpoint checks: which key is missing, unexpected or mis-shaped.

Both the Step-1 loader (safetensors headers) and the CosyVoice loader (``torch.load``ed state dicts)
compare the keys and shapes a model expects with those a checkpoint holds; each then words the
error for its own file layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["StateDictMismatch", "find_state_dict_mismatch"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class StateDictMismatch:
    """The first problem found, in the order missing → unexpected → wrong shape.

    Attributes:
        kind: ``"missing"``, ``"unexpected"`` or ``"shape"``.
        key: the offending key.
        expected: the shape the model expects (``None`` for an unexpected key).
        found: the shape in the checkpoint (``None`` for a missing key).
        others: further keys of the same kind (up to five), for the message.
        other_count: how many further keys of the same kind there are in all.
    """

    kind: Literal["missing", "unexpected", "shape"]
    key: str
    expected: Shape | None
    found: Shape | None
    others: list[str]
    other_count: int


def find_state_dict_mismatch(expected: Mapping[str, Shape], found: Mapping[str, Shape]) -> StateDictMismatch | None:
    """Compare key → shape maps; ``None`` when the checkpoint matches the model exactly."""
    missing = [key for key in expected if key not in found]
    if missing:
        return StateDictMismatch("missing", missing[0], expected[missing[0]], None, missing[1:6], len(missing) - 1)
    unexpected = [key for key in found if key not in expected]
    if unexpected:
        key = unexpected[0]
        return StateDictMismatch("unexpected", key, None, found[key], unexpected[1:6], len(unexpected) - 1)
    wrong = [key for key, shape in expected.items() if tuple(found[key]) != tuple(shape)]
    if wrong:
        key = wrong[0]
        return StateDictMismatch("shape", key, tuple(expected[key]), tuple(found[key]), wrong[1:6], len(wrong) - 1)
    return None
