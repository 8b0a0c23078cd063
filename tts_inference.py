"""Upstream-compatible TTS script: a registered speaker (tts) or a cloned voice (clone).

    python tts_inference.py --model-path DIR --output-path OUT --synthesis-type tts|clone \\
        [--text ... --speaker ... --prompt-wav ... --prompt-text ... --speakers-dir ...]

The same as `stepaudio tts ...`.
"""

import sys

from stepaudio.cli import run_cli
from stepaudio.cli_options import StepAudioArgumentParser, add_version_option
from stepaudio.tts.cli import DESCRIPTION, add_arguments, run

if __name__ == "__main__":
    parser = StepAudioArgumentParser(prog="tts_inference.py", description=DESCRIPTION)
    add_version_option(parser)
    add_arguments(parser)
    parser.set_defaults(func=run)
    sys.exit(run_cli(parser))
