"""What several benchmark scripts share (imported as ``common``: the scripts run from this folder)."""

from __future__ import annotations

import time
from pathlib import Path


def tokenizer_folder(given: Path | None, tmp: Path) -> Path:
    """``given`` (a Step-Audio-Tokenizer folder), or a tiny random fixture built under ``tmp`` (timed)."""
    if given is not None:
        return given
    from stepaudio.testing.tokenizer_fixture import build_tiny_tokenizer_checkpoint

    start = time.perf_counter()
    folder = build_tiny_tokenizer_checkpoint(tmp / "Step-Audio-Tokenizer")
    print(f"built tiny fixture tokenizer in {time.perf_counter() - start:.1f} s")
    return folder
