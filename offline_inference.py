"""Upstream-compatible demo: a text turn, then an audio turn (the bot's own spoken reply), spoken answers.

    python offline_inference.py --model-path DIR [--output-path OUT] [--speakers-dir DIR]

DIR holds Step-Audio-Chat/, Step-Audio-TTS-3B/ and Step-Audio-Tokenizer/ (the official folders, or the
tiny ones from `python -m stepaudio.testing DIR`, whose random weights give gibberish and noise).
Same as: stepaudio chat --model-path DIR --output-path OUT --text "..." --audio @previous
"""

import argparse
import sys

from stepaudio.cli import main

DEMO_TEXT = "你好，我是你的朋友，我叫小明，你叫什么名字？"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="folder holding the three official folders")
    parser.add_argument("--output-path", default="output", help="where the spoken replies go (default: output)")
    parser.add_argument("--speakers-dir", default=None, help="speakers folder (default: MODEL_PATH/speakers)")
    args, extra = parser.parse_known_args()
    argv = ["chat", "--model-path", args.model_path, "--output-path", args.output_path]
    if args.speakers_dir:
        argv += ["--speakers-dir", args.speakers_dir]
    sys.exit(main(argv + ["--text", DEMO_TEXT, "--audio", "@previous", *extra]))
