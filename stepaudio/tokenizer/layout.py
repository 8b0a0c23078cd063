"""The official ``Step-Audio-Tokenizer`` folder layout and the check that a folder follows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointFileNotFoundError

__all__ = ["TokenizerFiles", "locate_tokenizer_files", "LAYOUT_DESCRIPTION", "PARAFORMER_SUBFOLDER"]

PARAFORMER_SUBFOLDER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
LINGUISTIC_CENTROIDS_FILE = "linguistic_tokenizer.npy"
SEMANTIC_ONNX_FILE = "speech_tokenizer_v1.onnx"
PARAFORMER_REQUIRED_FILES = ("config.yaml", "model.pt", "am.mvn")
PARAFORMER_TOKEN_LIST_FILES = ("tokens.json", "tokens.txt")

LAYOUT_DESCRIPTION = f"""\
Step-Audio-Tokenizer/
  {LINGUISTIC_CENTROIDS_FILE}        float32 [1024, 512] k-means centroids (vq02)
  {SEMANTIC_ONNX_FILE}        CosyVoice v1 speech tokenizer (vq06)
  {PARAFORMER_SUBFOLDER}/
    config.yaml, model.pt, am.mvn, tokens.json (or tokens.txt)   streaming Paraformer (encoder used)
Download it unchanged from https://huggingface.co/stepfun-ai/Step-Audio-Tokenizer (or ModelScope), or build a
tiny random one with stepaudio.testing.tokenizer_fixture.build_tiny_tokenizer_checkpoint(folder)."""


@dataclass(frozen=True)
class TokenizerFiles:
    """Resolved paths of every file the tokenizer loads."""

    folder: Path
    linguistic_centroids: Path
    semantic_onnx: Path
    paraformer_folder: Path


def _missing(folder: Path, path: Path, what: str) -> CheckpointFileNotFoundError:
    return CheckpointFileNotFoundError(
        f"{what} not found: expected {path} inside the Step-Audio-Tokenizer folder {folder}. "
        f"The folder must have this layout:\n{LAYOUT_DESCRIPTION}",
        folder=folder,
        file=path,
    )


def locate_tokenizer_files(folder: str | Path) -> TokenizerFiles:
    """Check that ``folder`` has the official layout and return the paths of its files.

    Raises:
        CheckpointFileNotFoundError: naming the first missing file's full path and the expected layout.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise CheckpointFileNotFoundError(
            f"Step-Audio-Tokenizer folder {folder} does not exist or is not a directory. "
            f"Pass the downloaded folder, laid out as:\n{LAYOUT_DESCRIPTION}",
            folder=folder,
        )
    centroids = folder / LINGUISTIC_CENTROIDS_FILE
    if not centroids.is_file():
        raise _missing(folder, centroids, "linguistic (vq02) k-means centroids")
    onnx_file = folder / SEMANTIC_ONNX_FILE
    if not onnx_file.is_file():
        raise _missing(folder, onnx_file, "semantic (vq06) ONNX speech tokenizer")
    paraformer = folder / PARAFORMER_SUBFOLDER
    for name in PARAFORMER_REQUIRED_FILES:
        if not (paraformer / name).is_file():
            raise _missing(folder, paraformer / name, f"streaming Paraformer file {name}")
    if not any((paraformer / name).is_file() for name in PARAFORMER_TOKEN_LIST_FILES):
        raise _missing(folder, paraformer / PARAFORMER_TOKEN_LIST_FILES[0], "streaming Paraformer token list")
    return TokenizerFiles(folder, centroids, onnx_file, paraformer)
