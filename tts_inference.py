"""Upstream-compatible TTS script: a registered speaker (tts) or a cloned voice (clone).

    python tts_inference.py --model-path DIR --output-path OUT --synthesis-type tts|clone \\
        [--text ... --speaker ... --prompt-wav ... --prompt-text ... --speakers-dir ...]

Same as: stepaudio tts ...
"""

import sys

from stepaudio.cli import main

if __name__ == "__main__":
    sys.exit(main(["tts", *sys.argv[1:]]))
