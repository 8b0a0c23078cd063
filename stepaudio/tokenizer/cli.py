"""``stepaudio tokenize --model-path DIR FILE... [--output out.jsonl]``: audio files -> ``<audio_N>`` json lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import StepAudioError

logger = logging.getLogger(__name__)

__all__ = ["register", "run_tokenize"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tokenize`` sub-command."""
    parser = subparsers.add_parser(
        "tokenize",
        help="turn audio files into Step-Audio audio tokens (json lines)",
        description="Tokenize audio files with the Step-Audio-Tokenizer: one json line per file, "
        '{"path": ..., "tokens": "<audio_N>...", "num_tokens": N}. No silence trimming, energy '
        "normalisation on (as the chat model's audio input).",
    )
    parser.add_argument("--model-path", required=True, type=Path, help="the Step-Audio-Tokenizer folder")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files (wav, flac, mp3, ogg)")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write json lines here instead of stdout")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--trim", action="store_true", help="trim leading/trailing silence (as for TTS prompts)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> int:
    """Tokenize ``args.files``; returns 0 when every file was tokenized, 1 when some failed, 2 on load failure."""
    from tqdm import tqdm

    from .interleave import ids_to_string
    from .tokenizer import StepAudioTokenizer

    try:
        tokenizer = StepAudioTokenizer(args.model_path, device=args.device)
    except StepAudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failures = 0
    try:
        for path in tqdm(args.files, desc="tokenize", unit="file", disable=args.no_progress, file=sys.stderr):
            try:
                ids, _, _ = tokenizer.wav2token(path, enable_trim=args.trim, energy_norm=True)
            except StepAudioError as err:
                failures += 1
                print(f"error: {path}: {err}", file=sys.stderr)
                continue
            record = {"path": str(path), "tokens": ids_to_string(ids), "num_tokens": len(ids)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if failures else 0
