"""``stepaudio tokenize --model-path DIR FILE... [--output out.jsonl]``: audio files -> ``<audio_N>`` json lines."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..assembly import ModelSettings
from ..cli_options import (
    add_common_options,
    check_audio_file_option,
    check_model_folder_options,
    model_settings_from_options,
)
from ..errors import InputFileError, StepAudioError
from ..validation import check_output_dir

logger = logging.getLogger(__name__)

__all__ = ["LONG_FILE_SECONDS", "model_settings", "register", "run_tokenize"]

#: Files at least this long get a progress bar of their own (besides the bar over files).
LONG_FILE_SECONDS = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokenize`` sub-command."""
    parser = subparsers.add_parser(
        "tokenize",
        help="turn audio files into Step-Audio audio tokens (json lines)",
        description="Tokenize audio files with the Step-Audio-Tokenizer: one json line per file, "
        '{"path": ..., "tokens": "<audio_N>...", "num_tokens": N}. No silence trimming, energy '
        "normalisation on (as the chat model's audio input).",
    )
    parser.add_argument(
        "--model-path",
        required=True,
        help="the folder holding Step-Audio-Tokenizer (as for the other commands), or that folder itself",
    )
    parser.add_argument("--tokenizer-path", default=None, help="Step-Audio-Tokenizer folder (default: in MODEL_PATH)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, ogg)")
    parser.add_argument("--output", "-o", default=None, help="write json lines to this file instead of stdout")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    parser.add_argument("--trim", action="store_true", help="trim leading/trailing silence (as for TTS prompts)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_common_options(parser)
    parser.set_defaults(func=run_tokenize)


def check_args(args: argparse.Namespace) -> list[float]:
    """Every option and file, checked before the tokenizer loads; returns the files' durations in seconds."""
    from ..device import resolve_device

    check_model_folder_options(args, needs=("Step-Audio-Tokenizer",))
    resolve_device(args.device, name="--device")
    if args.output is not None:
        output = Path(args.output)
        if output.is_dir():
            raise InputFileError(f"--output {output} is a folder; pass a file name such as tokens.jsonl", path=output)
        check_output_dir(output.parent if str(output.parent) else ".", "--output's folder")
    return [check_audio_file_option(path, "FILE") for path in args.files]


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The models' settings the options say (the one place this command turns options into settings)."""
    return model_settings_from_options(args)


def run_tokenize(args: argparse.Namespace) -> int:
    """Tokenize ``args.files``; returns 0 when every file was tokenized and 1 when some failed.

    With ``--output``, the lines go to a temporary file renamed into place at the end, and only when
    at least one file was tokenized: a failed run leaves no output file.
    """
    durations = check_args(args)

    from tqdm import tqdm

    from ..assembly import load_tokenizer
    from ..cli import one_line
    from .interleave import ids_to_string

    tokenizer = load_tokenizer(args.model_path, model_settings(args))
    written = 0
    failures = 0
    temporary = None
    out = sys.stdout
    if args.output is not None:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        out = open(temporary, "w", encoding="utf-8")
    try:
        files = tqdm(args.files, desc="tokenize", unit="file", disable=args.no_progress, file=sys.stderr)
        for path, seconds in zip(files, durations, strict=True):
            try:
                long_file = seconds >= LONG_FILE_SECONDS and not args.no_progress
                ids, _, _ = tokenizer.wav2token(path, enable_trim=args.trim, energy_norm=True, progress=long_file)
            except StepAudioError as err:
                failures += 1
                print(f"stepaudio tokenize: error: {path}: {one_line(err)}", file=sys.stderr)
                continue
            record = json.dumps(
                {"path": str(path), "tokens": ids_to_string(ids), "num_tokens": len(ids)}, ensure_ascii=False
            )
            written += 1
            out.write(record + "\n")
            out.flush()
    finally:
        if temporary is not None:
            out.close()
            if written:
                os.replace(temporary, args.output)
            else:
                temporary.unlink(missing_ok=True)
    if failures:
        logger.warning("%d of %d file(s) could not be tokenized", failures, len(args.files))
    return 1 if failures else 0
