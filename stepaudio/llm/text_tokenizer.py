"""The Step text tokenizer (``tokenizer.model`` + ``tokenizer_config.json`` of the official LLM folders).

Both Step-Audio-Chat and Step-Audio-TTS-3B ship the same SentencePiece model, loaded as a
transformers ``LlamaTokenizer``.  Its fixed ids: 0 ``<unk>``, 1 ``<s>`` (BOS, added by ``encode``),
2 ``</s>``, 3 ``<|EOT|>`` (end of turn, generation stops here), 4 ``<|BOT|>`` (begin of turn), and
``<audio_N>`` = 65536 + N for N = 0..5119 (0..1023 linguistic, 1024..5119 semantic codes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..errors import OFFICIAL_DOWNLOAD_HINT, CheckpointConfigError, CheckpointError, CheckpointFileNotFoundError

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIO_TOKEN_OFFSET",
    "BOS_ID",
    "BOT_ID",
    "EOT_ID",
    "NUM_AUDIO_CODES",
    "NUM_LINGUISTIC_CODES",
    "NUM_SEMANTIC_CODES",
    "TEXT_TOKENIZER_FILES",
    "load_text_tokenizer",
]

BOS_ID = 1
EOT_ID = 3
BOT_ID = 4
AUDIO_TOKEN_OFFSET = 65536
NUM_LINGUISTIC_CODES = 1024
NUM_SEMANTIC_CODES = 4096
NUM_AUDIO_CODES = NUM_LINGUISTIC_CODES + NUM_SEMANTIC_CODES

TEXT_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json")

_EXPECTED_IDS = {
    "<s>": BOS_ID,
    "<|EOT|>": EOT_ID,
    "<|BOT|>": BOT_ID,
    "<audio_0>": AUDIO_TOKEN_OFFSET,
    f"<audio_{NUM_AUDIO_CODES - 1}>": AUDIO_TOKEN_OFFSET + NUM_AUDIO_CODES - 1,
}


def load_text_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of an official Step-1 folder (local files only) and check its special ids.

    Raises:
        CheckpointFileNotFoundError: ``tokenizer.model`` or ``tokenizer_config.json`` is missing.
        CheckpointError: the tokenizer does not have the Step id layout (wrong file in the folder).
    """
    folder = Path(folder)
    for name in TEXT_TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise CheckpointFileNotFoundError(
                f"missing {folder / name}: the Step text tokenizer of an LLM folder (Step-Audio-Chat or "
                f"Step-Audio-TTS-3B) consists of {', '.join(TEXT_TOKENIZER_FILES)}. {OFFICIAL_DOWNLOAD_HINT}",
                folder=folder,
                file=folder / name,
            )
    try:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointConfigError(
            f"{folder / 'tokenizer_config.json'} is not valid JSON: {error}",
            folder=folder,
            file=folder / "tokenizer_config.json",
        ) from error
    overrides = {}
    if "add_bos_token" not in tokenizer_config:
        # Step-Audio-TTS-3B's tokenizer_config.json omits the key.  Upstream ran with transformers 4.48,
        # whose LlamaTokenizer(Fast) then added BOS; transformers 5 defaults to not adding it.  Restore
        # the behaviour the models were used with.
        overrides["add_bos_token"] = True
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **overrides)
    for piece, expected in _EXPECTED_IDS.items():
        actual = tokenizer.convert_tokens_to_ids(piece)
        if actual != expected:
            raise CheckpointError(
                f"{folder / 'tokenizer.model'} maps {piece!r} to id {actual}, but the Step tokenizer uses "
                f"{expected}; this is not the tokenizer of a Step-Audio LLM folder",
                folder=folder,
                file=folder / "tokenizer.model",
            )
    return tokenizer
