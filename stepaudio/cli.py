"""The ``stepaudio`` console command, and the one place that runs any stepaudio command line.

Each component registers its sub-commands from its own module (``stepaudio/<component>/cli.py``
exposes ``register(subparsers)``), so this file only assembles them and dispatches.  The root
scripts (``offline_inference.py``, ``tts_inference.py``) build their own parsers from the same
``add_arguments`` functions and run them through :func:`run_cli`, so every entry point behaves alike:

- every error is printed as one line, ``PROG: error: <what was wrong, with which input, how to fix it>``;
  ``--verbose`` prints the traceback as well;
- exit status 2 for usage errors (a bad option value, a missing input file, conflicting options:
  :class:`~stepaudio.errors.UsageError`, found before any model loads) and 1 for every error at run
  time (a broken checkpoint, undecodable audio, a prompt the model cannot hold); 130 on Ctrl-C;
- log records of stepaudio at INFO (DEBUG with ``--verbose``); other libraries only at WARNING, and
  their Python warnings only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence

from .cli_options import StepAudioArgumentParser, add_common_options, add_version_option
from .errors import StepAudioError, UsageError

__all__ = ["EXIT_OK", "EXIT_RUNTIME_ERROR", "EXIT_USAGE_ERROR", "build_parser", "main", "run_cli"]

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_INTERRUPTED = 130

# Modules that expose ``register(subparsers: argparse._SubParsersAction) -> None``; each registered
# sub-parser sets ``func`` (``args -> int`` exit status) through ``set_defaults``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "stepaudio.pipeline_cli",
    "stepaudio.tts.cli",
    "stepaudio.editx.cli",
    "stepaudio.tokenizer.cli",
    "stepaudio.testing.cli",
    "stepaudio.realtime.cli",
    "stepaudio.server.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every component's sub-commands."""
    parser = StepAudioArgumentParser(
        prog="stepaudio",
        description="Step-Audio inference: chat, tokenize, speak. Run `stepaudio COMMAND --help` for details.",
    )
    add_version_option(parser)
    add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (so redirections made later are followed)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores that
        pass


@contextlib.contextmanager
def cli_logging(verbose: bool) -> Iterator[None]:
    """For the duration of a command: stepaudio's records at INFO (DEBUG when verbose), other libraries' at
    WARNING, their Python warnings hidden unless verbose.  Everything is put back afterwards, so running a
    command in-process (tests, notebooks) leaves the caller's logging as it was.
    """
    root, package, warnings_logger = (
        logging.getLogger(),
        logging.getLogger("stepaudio"),
        logging.getLogger("py.warnings"),
    )
    saved = (root.level, package.level, warnings_logger.level)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    package.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Third-party deprecation notices and the like are noise to a user of the command line; they are
    # shown with --verbose, where they matter to whoever debugs.
    logging.captureWarnings(True)
    warnings_logger.setLevel(logging.WARNING if verbose else logging.ERROR)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(saved[0])
        package.setLevel(saved[1])
        warnings_logger.setLevel(saved[2])


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line; errors from outside stepaudio are prefixed with their type."""
    message = " ".join(str(error).split()) or "(no message)"
    if isinstance(error, (StepAudioError, OSError)):
        return message
    return f"{type(error).__name__}: {message} (unexpected; rerun with --verbose for the traceback)"


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen ``func``; every failure becomes one line and an exit code.

    Returns the exit status (see the module docstring); argparse's own errors exit 2 from ``parse_args``.
    """
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    command = getattr(args, "command", None)
    prog = f"{parser.prog} {command}" if command else parser.prog
    with cli_logging(verbose):
        try:
            return int(args.func(args) or EXIT_OK)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as error:  # every error a user can cause: one line (traceback with --verbose)
            if verbose:
                traceback.print_exc()
            print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
            return EXIT_USAGE_ERROR if isinstance(error, UsageError) else EXIT_RUNTIME_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepaudio`` console script; returns the process exit status."""
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
