"""``stepaudio make-fixtures OUT_DIR`` and ``python -m stepaudio.testing OUT_DIR``."""

from __future__ import annotations

import argparse
import time

from ..cli_options import MAX_SEED, add_common_options
from ..validation import check_int, check_output_dir

DESCRIPTION = (
    "Write tiny random Step-Audio checkpoint folders, named and laid out like the official ones. "
    "Their weights are random: text comes out as gibberish and audio as noise."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``make-fixtures`` sub-command."""
    parser = subparsers.add_parser(
        "make-fixtures",
        help="write tiny random checkpoint folders in the official layout (for trying things out)",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="folder to create the checkpoint folders in")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    add_common_options(parser)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out_dir, "OUT_DIR")
    check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED - 1)

    from . import build_tiny_checkpoints

    start = time.perf_counter()
    folders = build_tiny_checkpoints(args.out_dir, seed=args.seed)
    for name, path in folders.items():
        print(f"{name}: {path}")
    print(f"wrote {len(folders)} tiny checkpoint folder(s) in {time.perf_counter() - start:.1f} s")
    return 0
