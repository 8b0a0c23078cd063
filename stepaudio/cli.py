"""The ``stepaudio`` console command.

Each component registers its sub-commands from its own module (``stepaudio/<component>/cli.py``
exposes ``register(subparsers)``), so this file only assembles them and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import StepAudioError

# Modules that expose ``register(subparsers: argparse._SubParsersAction) -> None``; each registered
# sub-parser sets ``func`` (``args -> int`` exit status) through ``set_defaults``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "stepaudio.pipeline_cli",
    "stepaudio.tts.cli",
    "stepaudio.tokenizer.cli",
    "stepaudio.testing.cli",
    "stepaudio.realtime.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every component's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="stepaudio",
        description="Step-Audio inference: chat, tokenize, speak. Run `stepaudio COMMAND --help` for details.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepaudio`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (StepAudioError, FileNotFoundError) as error:
        # The library's own errors already say what was wrong and how to fix it: print that, not a traceback.
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
