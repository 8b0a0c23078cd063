"""Upstream-compatible Step-Audio-EditX script, with the options of the original ``tts_infer.py``.

    python editx_infer.py --model-path DIR --prompt-audio CLIP --prompt-text TRANSCRIPT \\
        --edit-type clone|emotion|style|speed|paralinguistic|denoise|vad [--edit-info ...] \\
        [--n-edit-iter N] [--generated-text ...] [--output-dir OUT] \\
        [--quantization int8|int4|awq-4bit] [--backend transformers|static|compiled|vllm|URL] [--stream]

The same as `stepaudio edit ...`.
"""

import sys

from stepaudio.cli import run_cli
from stepaudio.cli_options import StepAudioArgumentParser, add_version_option
from stepaudio.editx.cli import DESCRIPTION, add_arguments, run

if __name__ == "__main__":
    parser = StepAudioArgumentParser(prog="editx_infer.py", description=DESCRIPTION)
    add_version_option(parser)
    add_arguments(parser)
    parser.set_defaults(func=run)
    sys.exit(run_cli(parser))
