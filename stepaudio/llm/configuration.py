"""Configuration of the Step-1 decoder-only language model (Step-Audio-Chat and Step-Audio-TTS-3B).

The field names are the ones of the official ``config.json`` files (``num_attention_groups``,
``max_seq_len``), so the published folders load unchanged and ``save_pretrained`` writes the same
keys back.  The standard transformers names (``num_key_value_heads``, ``max_position_embeddings``,
``head_dim``) are available as aliases for code that expects them (generation utilities, caches,
vLLM).
"""

from __future__ import annotations

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

__all__ = ["Step1Config", "STEP_AUDIO_CHAT_CONFIG", "STEP_AUDIO_TTS_3B_CONFIG"]


@strict
class Step1Config(PreTrainedConfig):
    """Hyper-parameters of a Step-1 model.

    Defaults are those of the upstream ``configuration_step1.py``; the official checkpoints override
    all of them from ``config.json`` (see :data:`STEP_AUDIO_CHAT_CONFIG` and
    :data:`STEP_AUDIO_TTS_3B_CONFIG` for the published values).

    Args:
        vocab_size: size of the token vocabulary (text pieces, specials and ``<audio_N>`` pieces).
        hidden_size: width of the residual stream.
        intermediate_size: width of the SwiGLU feed-forward layer.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: number of query heads.
        num_attention_groups: number of key/value heads (grouped-query attention); query head ``h``
            reads group ``h // (num_attention_heads // num_attention_groups)``.
        max_seq_len: longest sequence the model was trained for (prompt + generated tokens).
        rms_norm_eps: epsilon of the RMS norms.
        tie_word_embeddings: always ``False`` for Step-1: the checkpoints carry a separate
            ``lm_head.weight``.  The official ``config.json`` omits the key, and the generic
            transformers default would tie the two matrices, which silently breaks the model.
    """

    model_type: ClassVar[str] = "step1"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]
    attribute_map: ClassVar[dict[str, str]] = {
        "num_key_value_heads": "num_attention_groups",
        "max_position_embeddings": "max_seq_len",
    }
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 65536
    hidden_size: int = 5120
    intermediate_size: int = 13312
    num_hidden_layers: int = 48
    num_attention_heads: int = 40
    num_attention_groups: int = 8
    max_seq_len: int = 4096
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 3
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs) -> None:
        # `auto_map` points at the remote-code files of the official folder; this package implements the
        # architecture natively, so the entry is dropped and never written back by save_pretrained.
        kwargs.pop("auto_map", None)
        if self.tie_word_embeddings:
            raise ValueError(
                "Step1Config(tie_word_embeddings=True) is not supported: Step-1 checkpoints carry a separate "
                "lm_head.weight; remove `tie_word_embeddings` from config.json"
            )
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        """Width of one attention head (``hidden_size // num_attention_heads``)."""
        return self.hidden_size // self.num_attention_heads

    @property
    def queries_per_group(self) -> int:
        """How many query heads share one key/value head."""
        return self.num_attention_heads // self.num_attention_groups

    def validate_architecture(self) -> None:
        """Checked by ``@strict`` at construction: the head layout must divide evenly."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"Step1Config: hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_attention_groups != 0:
            raise ValueError(
                f"Step1Config: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_attention_groups ({self.num_attention_groups})"
            )


#: ``config.json`` of the official Step-Audio-Chat (130B) folder, key for key.
STEP_AUDIO_CHAT_CONFIG: dict = {
    "architectures": ["Step1ForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_step1.Step1Config",
        "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM",
    },
    "model_type": "step1",
    "bos_token_id": 1,
    "pad_token_id": 0,
    "eos_token_id": 3,
    "hidden_size": 12288,
    "intermediate_size": 31232,
    "num_attention_heads": 96,
    "num_attention_groups": 8,
    "num_hidden_layers": 88,
    "max_seq_len": 32768,
    "vocab_size": 74752,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "bfloat16",
}

#: ``config.json`` of the official Step-Audio-TTS-3B folder, key for key.
STEP_AUDIO_TTS_3B_CONFIG: dict = {
    **STEP_AUDIO_CHAT_CONFIG,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_attention_heads": 48,
    "num_attention_groups": 4,
    "num_hidden_layers": 32,
}
