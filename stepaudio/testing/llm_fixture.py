"""Tiny random Step-1 checkpoint folders in the official Step-Audio-Chat / Step-Audio-TTS-3B layout.

What is written matches the published folders file for file (see the reference notes, section 1):
``config.json`` with the official keys (tiny dimensions), ``tokenizer.model`` with the official id
layout, ``tokenizer_config.json``, bf16 safetensors shards named ``model-0000N.safetensors`` with a
``model.safetensors.index.json``, and stand-ins for the remote-code files ``configuration_step1.py``
/ ``modeling_step1.py`` and the ``lib/`` folder.  The stand-ins raise if they are ever imported, so
tests prove that stepaudio never runs a checkpoint's remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..llm.checkpoint import INDEX_FILE
from ..llm.configuration import STEP_AUDIO_CHAT_CONFIG, STEP_AUDIO_TTS_3B_CONFIG, Step1Config
from .text_tokenizer_fixture import STEP_VOCAB_SIZE, build_step_sentencepiece_model, write_step_sentencepiece_model

__all__ = [
    "TINY_STEP1_DIMENSIONS",
    "build_tiny_step1_checkpoint",
    "tiny_step1_config_dict",
    "write_step1_checkpoint",
]

#: Tiny dimensions that keep every structural property of the real models: grouped-query attention,
#: a head count that is not a power of two (exercises the second slope rule) and the full vocabulary.
TINY_STEP1_DIMENSIONS: dict = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_attention_heads": 6,
    "num_attention_groups": 2,
    "num_hidden_layers": 3,
    "max_seq_len": 2048,
    "vocab_size": STEP_VOCAB_SIZE,
}

# Chat's tokenizer_config.json sets add_bos_token and carries a chat template (used by vLLM serving);
# the TTS-3B one has neither (LlamaTokenizer then adds BOS by default).
_TOKENIZER_CONFIG_COMMON: dict = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<unk>",
    "legacy": False,
    "model_max_length": 65536,
    "padding_side": "left",
}
_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|BOT|>system\nYou are a helpful assistant.<|EOT|>{% endif %}"
    "{% for message in messages %}<|BOT|>{{ 'human' if message['role'] == 'user' else message['role'] }}\n"
    "{{ message['content'] }}<|EOT|>{% endfor %}{% if add_generation_prompt %}<|BOT|>assistant\n{% endif %}"
)

_REMOTE_CODE_STAND_IN = (
    '"""Stand-in for the official remote-code file {name}, written by stepaudio.testing."""\n'
    "raise ImportError('stepaudio must load Step-1 natively and never import {name} from a checkpoint folder')\n"
)


def tiny_step1_config_dict(kind: str = "chat", **overrides) -> dict:
    """The official ``config.json`` of ``kind`` (``chat`` or ``tts``) with tiny dimensions."""
    if kind not in ("chat", "tts"):
        raise ValueError(f"kind must be 'chat' or 'tts', got {kind!r}")
    official = STEP_AUDIO_CHAT_CONFIG if kind == "chat" else STEP_AUDIO_TTS_3B_CONFIG
    return {**official, **TINY_STEP1_DIMENSIONS, **overrides}


def write_step1_checkpoint(
    folder: Path,
    state_dict: dict[str, torch.Tensor],
    config_dict: dict,
    num_shards: int = 3,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write ``state_dict`` as official-style shards (``model-0000N.safetensors``) plus the index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n", encoding="utf-8")
    keys = list(state_dict)
    per_shard = -(-len(keys) // num_shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    for shard_number in range(num_shards):
        shard_keys = keys[shard_number * per_shard : (shard_number + 1) * per_shard]
        if not shard_keys:
            continue
        file_name = f"model-{shard_number + 1:05d}.safetensors"
        tensors = {key: state_dict[key].detach().to(dtype).contiguous() for key in shard_keys}
        save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
        for key, tensor in tensors.items():
            weight_map[key] = file_name
            total_size += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folder


def _prefer_text_pieces(lm_head_weight: torch.Tensor, tokenizer_model: bytes) -> None:
    """Make a random chat model write (random) readable text instead of placeholder or audio pieces.

    Rows of ordinary text pieces are scaled up and all other rows zeroed, so sampled replies are
    made of the corpus's characters and words; the end-of-turn row is zeroed too, so replies run to
    ``max_new_tokens``.
    """
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=tokenizer_model)
    text_rows = [
        i
        for i in range(processor.get_piece_size())
        if not (processor.is_unknown(i) or processor.is_control(i) or processor.is_unused(i) or processor.is_byte(i))
        and not processor.id_to_piece(i).startswith("<")
    ]
    keep = torch.zeros(lm_head_weight.shape[0], dtype=torch.bool)
    keep[text_rows] = True
    lm_head_weight.mul_(keep[:, None].to(lm_head_weight.dtype) * 20.0)


def build_tiny_step1_checkpoint(folder: str | Path, kind: str = "chat", seed: int = 0, num_shards: int = 3) -> Path:
    """Write a tiny random Step-1 folder laid out like the official ``Step-Audio-Chat`` or ``Step-Audio-TTS-3B``.

    Args:
        folder: destination (created); typically ``.../Step-Audio-Chat``.
        kind: ``chat`` (Chat's tokenizer_config with chat template) or ``tts`` (TTS-3B's).
        seed: random seed of the weights; the same seed gives byte-identical weights.
        num_shards: number of ``model-0000N.safetensors`` files.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.
    """
    from ..llm.modeling import Step1ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = tiny_step1_config_dict(kind)
    config = Step1Config(**config_dict)
    tokenizer_model = build_step_sentencepiece_model()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Step1ForCausalLM(config)
        # RMSNorm weights start at one; perturb them so a wrongly loaded norm is visible in logits.
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    parameter.add_(0.1 * torch.randn_like(parameter))
            if kind == "chat":
                _prefer_text_pieces(model.lm_head.weight, tokenizer_model)
    finally:
        torch.random.set_rng_state(generator_state)
    write_step1_checkpoint(folder, model.state_dict(), config_dict, num_shards=num_shards)

    write_step_sentencepiece_model(folder / "tokenizer.model", tokenizer_model)
    tokenizer_config = dict(_TOKENIZER_CONFIG_COMMON)
    if kind == "chat":
        tokenizer_config["add_bos_token"] = True
        tokenizer_config["chat_template"] = _CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")

    for name in ("configuration_step1.py", "modeling_step1.py"):
        (folder / name).write_text(_REMOTE_CODE_STAND_IN.format(name=name), encoding="utf-8")
    lib = folder / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "README.txt").write_text(
        "Stand-in for the official prebuilt Optimus CUDA kernels; stepaudio ignores this folder.\n", encoding="utf-8"
    )
    return folder
