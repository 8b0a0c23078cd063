"""``stepaudio make-fixtures OUT_DIR`` and ``python -m stepaudio.testing OUT_DIR``."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``make-fixtures`` sub-command."""
    parser = subparsers.add_parser(
        "make-fixtures",
        help="write tiny random checkpoint folders in the official layout (for trying things out)",
        description="Write tiny random Step-Audio checkpoint folders, named and laid out like the official ones. "
        "Their weights are random: text comes out as gibberish and audio as noise.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="folder to create the checkpoint folders in")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")


def run(args: argparse.Namespace) -> int:
    from . import build_tiny_checkpoints

    start = time.perf_counter()
    folders = build_tiny_checkpoints(args.out_dir, seed=args.seed)
    for name, path in folders.items():
        print(f"{name}: {path}")
    print(f"wrote {len(folders)} tiny checkpoint folder(s) in {time.perf_counter() - start:.1f} s")
    return 0
