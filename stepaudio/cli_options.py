"""Command-line options shared by the ``stepaudio`` sub-commands (model folders, voices, runtime)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_model_folder_options", "add_speech_options", "default_speakers_dir"]


def add_model_folder_options(parser: argparse.ArgumentParser, model_path_help: str, with_llm: bool) -> None:
    """``--model-path`` (the folder holding the official folders) and overrides for each official folder."""
    parser.add_argument("--model-path", required=True, help=model_path_help)
    if with_llm:
        parser.add_argument("--llm-path", default=None, help="Step-Audio-Chat folder (default: found in MODEL_PATH)")
    parser.add_argument("--tts-path", default=None, help="Step-Audio-TTS-3B folder (default: found in MODEL_PATH)")
    parser.add_argument(
        "--tokenizer-path", default=None, help="Step-Audio-Tokenizer folder (default: MODEL_PATH/Step-Audio-Tokenizer)"
    )


def add_speech_options(parser: argparse.ArgumentParser) -> None:
    """Voice registry, speech length limit, sampling seed and device."""
    parser.add_argument(
        "--speakers-dir", default=None, help="speakers folder (default: MODEL_PATH/speakers when it exists)"
    )
    parser.add_argument(
        "--max-speech-seconds", type=float, default=None, help="limit on the speech generated per text segment"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")


def default_speakers_dir(model_path: str | Path, speakers_dir: str | Path | None) -> Path | None:
    """``--speakers-dir`` if given, else ``MODEL_PATH/speakers`` when that folder exists."""
    if speakers_dir is not None:
        return Path(speakers_dir)
    candidate = Path(model_path) / "speakers"
    return candidate if candidate.is_dir() else None
