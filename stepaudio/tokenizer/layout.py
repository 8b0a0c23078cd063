"""The official ``Step-Audio-Tokenizer`` folder layout and the check that a folder follows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointFileNotFoundError

__all__ = [
    "LAYOUT_DESCRIPTION",
    "LAYOUT_SUMMARY",
    "PARAFORMER_SUBFOLDER",
    "TOKENIZER_FOLDER",
    "TokenizerFiles",
    "locate_tokenizer_files",
]

PARAFORMER_SUBFOLDER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
LINGUISTIC_CENTROIDS_FILE = "linguistic_tokenizer.npy"
SEMANTIC_ONNX_FILE = "speech_tokenizer_v1.onnx"
PARAFORMER_REQUIRED_FILES = ("config.yaml", "model.pt", "am.mvn")
PARAFORMER_TOKEN_LIST_FILES = ("tokens.json", "tokens.txt")

TOKENIZER_FOLDER = "Step-Audio-Tokenizer"

LAYOUT_DESCRIPTION = f"""\
{TOKENIZER_FOLDER}/
  {LINGUISTIC_CENTROIDS_FILE}        float32 [1024, 512] k-means centroids (vq02)
  {SEMANTIC_ONNX_FILE}        CosyVoice v1 speech tokenizer (vq06)
  {PARAFORMER_SUBFOLDER}/
    config.yaml, model.pt, am.mvn, tokens.json (or tokens.txt)   streaming Paraformer (encoder used)
Download it unchanged from https://huggingface.co/stepfun-ai/Step-Audio-Tokenizer (or ModelScope), or build a
tiny random one with stepaudio.testing.tokenizer_fixture.build_tiny_tokenizer_checkpoint(folder)."""

#: The layout on one line, for error messages.
LAYOUT_SUMMARY = (
    f"a {TOKENIZER_FOLDER} folder holds {LINGUISTIC_CENTROIDS_FILE}, {SEMANTIC_ONNX_FILE} and "
    f"{PARAFORMER_SUBFOLDER}/{{{', '.join(PARAFORMER_REQUIRED_FILES)}, tokens.json or tokens.txt}}"
)

#: What to do about a missing or incomplete folder, on one line.
DOWNLOAD_HINT = (
    f"download it unchanged from https://huggingface.co/stepfun-ai/{TOKENIZER_FOLDER} (or ModelScope), or write a "
    "tiny random one with `python -m stepaudio.testing OUT_DIR`"
)


@dataclass(frozen=True)
class TokenizerFiles:
    """Resolved paths of every file the tokenizer loads."""

    folder: Path
    linguistic_centroids: Path
    semantic_onnx: Path
    paraformer_folder: Path


def _missing(folder: Path, path: Path, what: str) -> CheckpointFileNotFoundError:
    return CheckpointFileNotFoundError(
        f"{TOKENIZER_FOLDER} folder {folder} is incomplete: the {what} {path} is missing; {LAYOUT_SUMMARY}; "
        f"{DOWNLOAD_HINT}",
        folder=folder,
        file=path,
    )


def _looks_like_tokenizer_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in (LINGUISTIC_CENTROIDS_FILE, SEMANTIC_ONNX_FILE, "dengcunqin"))


def locate_tokenizer_files(folder: str | Path) -> TokenizerFiles:
    """Check that ``folder`` has the official layout and return the paths of its files.

    ``folder`` is the ``Step-Audio-Tokenizer`` folder itself or a folder that contains it under that
    name (as the other commands' ``--model-path``).  Only the file system is looked at, nothing is read.

    Raises:
        CheckpointFileNotFoundError: naming the missing folder or the first missing file's full path, with
            the expected layout and the download hint, on one line.
    """
    given = Path(folder).expanduser()
    folder = given.resolve()
    if folder.is_file():
        raise CheckpointFileNotFoundError(
            f"{TOKENIZER_FOLDER} path {given} is a file, not a folder; pass the {TOKENIZER_FOLDER} folder (or the "
            f"folder that contains it): {LAYOUT_SUMMARY}",
            folder=folder,
        )
    if not folder.is_dir():
        raise CheckpointFileNotFoundError(
            f"{TOKENIZER_FOLDER} folder {given} does not exist; pass the downloaded {TOKENIZER_FOLDER} folder (or the "
            f"folder that contains it): {LAYOUT_SUMMARY}; {DOWNLOAD_HINT}",
            folder=folder,
        )
    if not _looks_like_tokenizer_folder(folder):
        if (folder / TOKENIZER_FOLDER).is_dir():
            folder = folder / TOKENIZER_FOLDER
        else:
            raise CheckpointFileNotFoundError(
                f"{given} is not a {TOKENIZER_FOLDER} folder: it holds neither {LINGUISTIC_CENTROIDS_FILE} nor a "
                f"{TOKENIZER_FOLDER} subfolder; {LAYOUT_SUMMARY}. Pass that folder (or the folder that contains it), "
                f"or {DOWNLOAD_HINT}",
                folder=folder,
                file=folder / LINGUISTIC_CENTROIDS_FILE,
            )
    centroids = folder / LINGUISTIC_CENTROIDS_FILE
    if not centroids.is_file():
        raise _missing(folder, centroids, "linguistic (vq02) k-means centroids file")
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
