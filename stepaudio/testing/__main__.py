"""``python -m stepaudio.testing OUT_DIR``: write tiny official-layout checkpoint folders."""

import sys

from ..cli import run_cli
from ..cli_options import StepAudioArgumentParser, add_version_option
from .cli import DESCRIPTION, add_arguments, run


def main() -> int:
    parser = StepAudioArgumentParser(prog="python -m stepaudio.testing", description=DESCRIPTION)
    add_version_option(parser)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return run_cli(parser)


if __name__ == "__main__":
    sys.exit(main())
