"""Strict checks of a Step-1 checkpoint folder before any weight is read.

The official folders hold ``config.json``, ``model.safetensors.index.json`` and shards named
``model-00001.safetensors``, ``model-00002.safetensors``, ... (no ``-of-N`` suffix).  These checks
read only the JSON index and the safetensors headers, so they take milliseconds even for the 130B
model, and they turn every mismatch into an error that names the folder, the file and the key.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from safetensors import safe_open

from ..errors import (
    OFFICIAL_DOWNLOAD_HINT,
    CheckpointConfigError,
    CheckpointFileNotFoundError,
    CheckpointKeyError,
    CheckpointShapeError,
)
from ..state_dict_check import find_state_dict_mismatch
from .configuration import Step1Config

__all__ = [
    "INDEX_FILE",
    "SINGLE_FILE",
    "checkpoint_shard_files",
    "checkpoint_weight_bytes",
    "expected_state_dict_shapes",
    "read_checkpoint_shapes",
    "validate_step1_checkpoint",
]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def expected_state_dict_shapes(config: Step1Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Step-1 checkpoint with its shape, as published (untied ``lm_head`` included)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    kv_width = config.num_attention_groups * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, hidden)}
    for n in range(config.num_hidden_layers):
        prefix = f"model.layers.{n}."
        shapes[prefix + "self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[prefix + "self_attn.k_proj.weight"] = (kv_width, hidden)
        shapes[prefix + "self_attn.v_proj.weight"] = (kv_width, hidden)
        shapes[prefix + "self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[prefix + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[prefix + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[prefix + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[prefix + "input_layernorm.weight"] = (hidden,)
        shapes[prefix + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (config.vocab_size, hidden)
    return shapes


def _shard_files(folder: Path) -> tuple[dict[str, list[str]], Path]:
    """Map each shard file name to the keys the index assigns to it; also return the file describing that."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointConfigError(
                f"{index_path} is not a valid safetensors index (a JSON object with a 'weight_map'): {error}",
                folder=folder,
                file=index_path,
            ) from error
        files: dict[str, list[str]] = defaultdict(list)
        for key, file_name in weight_map.items():
            files[file_name].append(key)
        return dict(files), index_path
    single = folder / SINGLE_FILE
    if single.is_file():
        return {SINGLE_FILE: []}, single
    raise CheckpointFileNotFoundError(
        f"no weights in {folder}: expected {index_path} (sharded, as in the official Step-Audio-Chat and "
        f"Step-Audio-TTS-3B folders) or {single}. {OFFICIAL_DOWNLOAD_HINT}",
        folder=folder,
        file=index_path,
    )


def checkpoint_weight_bytes(folder: str | Path) -> int:
    """Total size in bytes of a checkpoint folder's weight files (the shards its index names, or the single file)."""
    folder = Path(folder)
    files, _ = _shard_files(folder)
    return sum((folder / name).stat().st_size for name in files if (folder / name).is_file())


def checkpoint_shard_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder in load order: the shards its index names, sorted by name
    (``model-00001.safetensors``, ``model-00002.safetensors``, ...), or the single ``model.safetensors``."""
    folder = Path(folder)
    files, _ = _shard_files(folder)
    return [folder / name for name in sorted(files)]


def read_checkpoint_shapes(folder: str | Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Read every tensor's shape and file from the safetensors headers of a checkpoint folder.

    Raises :class:`CheckpointFileNotFoundError` for a shard the index names but the folder lacks, and
    :class:`CheckpointKeyError` when a shard does not hold a key the index assigns to it.
    """
    folder = Path(folder)
    files, described_by = _shard_files(folder)
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file_name, indexed_keys in sorted(files.items()):
        shard = folder / file_name
        if not shard.is_file():
            raise CheckpointFileNotFoundError(
                f"missing shard {shard}: {described_by.name} assigns {len(indexed_keys)} tensors to it "
                f"(e.g. {sorted(indexed_keys)[:1]}); download the complete folder again. {OFFICIAL_DOWNLOAD_HINT}",
                folder=folder,
                file=shard,
            )
        with safe_open(str(shard), framework="pt") as handle:
            shard_keys = set(handle.keys())
            for key in shard_keys:
                found[key] = (tuple(handle.get_slice(key).get_shape()), shard)
        for key in indexed_keys:
            if key not in shard_keys:
                raise CheckpointKeyError(
                    f"{described_by} says tensor {key!r} is in {shard}, but that file does not contain it",
                    folder=folder,
                    file=shard,
                    key=key,
                )
    return found


def validate_step1_checkpoint(folder: str | Path, config: Step1Config) -> None:
    """Check that ``folder`` holds exactly the tensors of a Step-1 model with ``config``, with the right shapes.

    Raises:
        CheckpointFileNotFoundError: no index / weights, or a shard named by the index is missing.
        CheckpointKeyError: a tensor the model needs is absent, or the checkpoint has one the model lacks.
        CheckpointShapeError: a tensor's shape differs from the one ``config`` implies.
    """
    folder = Path(folder)
    expected = expected_state_dict_shapes(config)
    found = read_checkpoint_shapes(folder)
    mismatch = find_state_dict_mismatch(expected, {key: shape for key, (shape, _) in found.items()})
    if mismatch is None:
        return
    key = mismatch.key
    index_path = folder / INDEX_FILE
    if mismatch.kind == "missing":
        raise CheckpointKeyError(
            f"tensor {key!r} (shape {list(mismatch.expected)}) is missing from the checkpoint in {folder} "
            f"(looked in {index_path.name if index_path.is_file() else SINGLE_FILE} and its shards); "
            "the folder is incomplete or not a Step-1 checkpoint",
            folder=folder,
            file=index_path if index_path.is_file() else folder / SINGLE_FILE,
            key=key,
        )
    shard = found[key][1]
    if mismatch.kind == "unexpected":
        raise CheckpointKeyError(
            f"unexpected tensor {key!r} (shape {list(mismatch.found)}) in {shard}: a Step-1 model with this "
            "config.json has no such parameter (strict loading; the checkpoint is of another architecture "
            "or was modified)",
            folder=folder,
            file=shard,
            key=key,
        )
    raise CheckpointShapeError(
        f"tensor {key!r} in {shard} has shape {list(mismatch.found)}, but config.json in {folder} implies "
        f"{list(mismatch.expected)}; config.json and the weights do not belong together",
        folder=folder,
        file=shard,
        key=key,
    )
