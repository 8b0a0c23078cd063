"""Upstream-compatible demo: a text turn, then an audio turn (the bot's own spoken reply), spoken answers.

    python offline_inference.py --model-path DIR [--output-path OUT] [any `stepaudio chat` option]

DIR holds Step-Audio-Chat/, Step-Audio-TTS-3B/ and Step-Audio-Tokenizer/ (the official folders, or the
tiny ones from `python -m stepaudio.testing DIR`, whose random weights give gibberish and noise).
Without --text/--audio it runs upstream's two demo turns; it is `stepaudio chat` with --output-path output.
"""

import sys

from stepaudio.cli import run_cli
from stepaudio.cli_options import StepAudioArgumentParser, add_version_option
from stepaudio.pipeline_cli import PREVIOUS_REPLY, add_arguments, run

DEMO_TEXT = "你好，我是你的朋友，我叫小明，你叫什么名字？"


def run_demo(args):
    if not args.turns:  # upstream's demo: a text turn, then the spoken reply to it as an audio turn
        args.turns = [("text", DEMO_TEXT), ("audio", PREVIOUS_REPLY)]
    return run(args)


if __name__ == "__main__":
    parser = StepAudioArgumentParser(prog="offline_inference.py", description=__doc__.split("\n\n")[0])
    add_version_option(parser)
    add_arguments(parser)
    parser.set_defaults(output_path="output", func=run_demo)
    sys.exit(run_cli(parser))
