"""Step-1: the decoder-only language model behind Step-Audio-Chat (130B) and Step-Audio-TTS-3B.

A pre-norm LLaMA-like block without rotary or any position embedding; positions enter only
through a square-root ALiBi attention bias (see :mod:`stepaudio.llm.alibi`).  Grouped-query
attention, RMSNorm (float32 variance), SwiGLU feed-forward, no biases, separate (untied)
``lm_head``.  Module names equal the official state-dict keys (``model.layers.N.self_attn.q_proj``
and so on), so the published safetensors load with strict keys.

The model is a native transformers model: it is registered for ``model_type: step1`` with
``AutoConfig`` / ``AutoModelForCausalLM`` when :mod:`stepaudio` is imported, works with
``generate`` and the ``Cache`` API, ``device_map="auto"`` and bf16/fp16/fp32.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .alibi import SqrtAlibiBias
from .attention import AttentionContext, normalize_attention_backend, sqrt_alibi_attention
from .checkpoint import checkpoint_weight_bytes, validate_step1_checkpoint
from .configuration import Step1Config
from .static_cache import StaticKVCache

logger = logging.getLogger(__name__)

__all__ = [
    "Step1RMSNorm",
    "Step1MLP",
    "Step1Attention",
    "Step1DecoderLayer",
    "Step1PreTrainedModel",
    "Step1Model",
    "Step1ForCausalLM",
]


#: Checkpoints smaller than this load without transformers' "Loading weights" progress bar (it only flickers).
QUIET_LOAD_BYTES = 1 << 30


@contextmanager
def _transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Turn transformers' (and huggingface_hub's) tqdm bars off for the block when ``enabled`` is False.

    The previous state of both libraries is restored afterwards, so a caller's own choice (e.g.
    ``HF_HUB_DISABLE_PROGRESS_BARS`` or ``transformers.utils.logging.disable_progress_bar()``) survives.
    """
    from transformers.utils import logging as hf_logging

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module (its package re-exports a class)

    if enabled or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_states = getattr(hub_tqdm, "progress_bar_states", None)
    saved_hub_states = dict(hub_states) if isinstance(hub_states, dict) else None
    hf_logging.disable_progress_bar()  # also turns huggingface_hub's bars off
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if saved_hub_states is not None:  # put back huggingface_hub's own (global and per-group) settings
            hub_states.clear()
            hub_states.update(saved_hub_states)


class Step1RMSNorm(nn.Module):
    """RMS norm with the variance computed in float32 and a plain (not ``1 + w``) weight."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(input_dtype)


class Step1MLP(nn.Module):
    """SwiGLU feed-forward: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class Step1Attention(nn.Module):
    """Grouped-query self-attention with the sqrt-ALiBi bias and an optional KV cache."""

    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_groups = config.num_attention_groups
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        kv_width = self.num_groups * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: AttentionContext,
        past_key_values: Cache | StaticKVCache | None = None,
    ) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        backend = normalize_attention_backend(self.config._attn_implementation)
        output = sqrt_alibi_attention(query, key, value, context, self.scale, backend=backend)
        output = output.transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(output)


class Step1DecoderLayer(nn.Module):
    """``x += attn(norm(x)); x += mlp(norm(x))``."""

    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Step1Attention(config, layer_idx)
        self.mlp = Step1MLP(config)
        self.input_layernorm = Step1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Step1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: AttentionContext,
        past_key_values: Cache | StaticKVCache | None = None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states), context, past_key_values)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class Step1PreTrainedModel(PreTrainedModel):
    """Shared loading logic: strict checkpoint validation and weight initialisation."""

    config_class = Step1Config
    config: Step1Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Step1DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = False
    _can_compile_fullgraph = False

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        # Accept the short alias "flex" wherever transformers validates the choice (from_pretrained,
        # AutoModel, from_config, set_attn_implementation).
        if attn_implementation is not None:
            attn_implementation = normalize_attention_backend(attn_implementation)
        return super()._check_and_adjust_attn_implementation(attn_implementation, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, Step1RMSNorm):
            nn.init.ones_(module.weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        """Load a Step-1 checkpoint folder (official layout) with strict keys and shapes.

        A local folder is checked before any weight is read: every shard named by
        ``model.safetensors.index.json`` must exist, and the tensors it holds must be exactly the
        model's keys with the model's shapes.  Otherwise a :class:`~stepaudio.errors.CheckpointError`
        names the folder, the file and the key.  The official ``lib/`` folder (a prebuilt CUDA kernel)
        is not needed and is ignored.  ``attn_implementation`` accepts ``sdpa`` (default),
        ``flex``/``flex_attention`` and ``eager``.  transformers' "Loading weights" progress bar is
        shown only for checkpoints of at least :data:`QUIET_LOAD_BYTES` (1 GiB).

        ``quantization="int8"`` or ``"int4"`` (bitsandbytes, weight-only; see
        :mod:`stepaudio.llm.quantization`) builds the model on the meta device and reads the local folder
        one shard at a time, quantizing each decoder-layer projection as soon as it is read, so host
        memory peaks near one shard plus the quantized model.  ``quantization_group_size`` (int4 only,
        default 64) sets how many consecutive weights share one scale.  A quantized load accepts
        ``config``, ``dtype``, ``device_map`` (None, ``"auto"``, one device, or ``{"": device}``) and
        ``attn_implementation``.  Without ``quantization`` the load is transformers' own, unchanged.
        """
        from .quantization import resolve_quantization

        settings = resolve_quantization(kwargs.pop("quantization", None), kwargs.pop("quantization_group_size", None))
        if settings is not None:
            return cls._from_pretrained_quantized(pretrained_model_name_or_path, settings, model_args, kwargs)
        folder = Path(pretrained_model_name_or_path)
        show_progress = True
        if folder.is_dir():
            _checked_folder_config(folder, kwargs.get("config"))
            # The bar is worth seeing for the 130B model (minutes), noise for small checkpoints.
            show_progress = checkpoint_weight_bytes(folder) >= QUIET_LOAD_BYTES
        with _transformers_progress_bars(show_progress):
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return model

    @classmethod
    def _from_pretrained_quantized(
        cls, pretrained_model_name_or_path: str | os.PathLike, settings, model_args: tuple, kwargs: dict
    ):
        """``from_pretrained`` with ``quantization``: strict checks, then the shard-by-shard quantized load."""
        from ..errors import InvalidArgumentError
        from .quantization import QUANTIZED_LOAD_KWARGS, load_quantized_step1

        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            raise InvalidArgumentError.about(
                "pretrained_model_name_or_path",
                f"must be a local checkpoint folder for a quantized load, got {str(pretrained_model_name_or_path)!r} "
                "(download the official folder first and pass its path)",
                pretrained_model_name_or_path,
            )
        unsupported = sorted(set(kwargs) - QUANTIZED_LOAD_KWARGS)
        if model_args or unsupported:
            names = ", ".join(unsupported) if unsupported else f"{len(model_args)} positional argument(s)"
            raise InvalidArgumentError.about(
                "quantization",
                f"loads accept only {', '.join(sorted(QUANTIZED_LOAD_KWARGS))}; got {names} (drop them or load "
                "without quantization)",
                settings.method,
            )
        if kwargs.get("dtype") is not None and kwargs.get("torch_dtype") is not None:
            raise InvalidArgumentError.about(
                "torch_dtype", "is the old name of dtype: pass only one of them", kwargs["torch_dtype"]
            )
        config = _checked_folder_config(folder, kwargs.get("config"))
        attn_implementation = kwargs.get("attn_implementation")
        if attn_implementation is not None:
            attn_implementation = normalize_attention_backend(attn_implementation)
        return load_quantized_step1(
            cls,
            folder,
            config,
            settings,
            dtype=kwargs.get("dtype", kwargs.get("torch_dtype")),
            device_map=kwargs.get("device_map"),
            attn_implementation=attn_implementation,
        )


def _checked_folder_config(folder: Path, config: object) -> Step1Config:
    """The config of a local checkpoint folder (``config`` if it is a Step1Config, else its config.json), after the
    strict header checks of :func:`validate_step1_checkpoint`; the prebuilt ``lib/`` is noted and ignored."""
    if not isinstance(config, Step1Config):
        config = Step1Config.from_pretrained(folder)
    validate_step1_checkpoint(folder, config)
    if (folder / "lib").is_dir():
        logger.info(
            "ignoring %s: stepaudio computes the sqrt-ALiBi attention natively and does not load "
            "the prebuilt Optimus CUDA library",
            folder / "lib",
        )
    return config


class Step1Model(Step1PreTrainedModel):
    """The Step-1 decoder stack (embeddings, layers, final norm), without the language-model head."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            [Step1DecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = Step1RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.alibi = SqrtAlibiBias(config.num_attention_heads)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | StaticKVCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run the decoder.

        Args:
            input_ids: ``[batch, length]`` token ids (or give ``inputs_embeds``).
            attention_mask: ``[batch, past + length]`` with 1 for real tokens and 0 for (left) padding.
                Because ALiBi depends only on distances, left-padded batches need no position shift.
            past_key_values: a transformers :class:`~transformers.Cache` (created when ``use_cache``), or a
                :class:`~stepaudio.llm.static_cache.StaticKVCache` (batch 1, no padding; the caller advances it).
            use_cache: keep and return the KV cache (always on with a static cache).
            output_hidden_states: also return the input of every layer and the final output.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Step1Model.forward: pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if isinstance(past_key_values, StaticKVCache):
            # Fixed-shape path (possibly under torch.compile or CUDA-graph capture): no host reads of tensors.
            if inputs_embeds.shape[0] != 1 or attention_mask is not None:
                raise ValueError(
                    "Step1Model.forward: a StaticKVCache serves one sequence without padding "
                    "(batch 1, attention_mask=None)"
                )
            use_cache = True
            context = past_key_values.attention_context(self.alibi, inputs_embeds.shape[1])
        else:
            use_cache = self.config.use_cache if use_cache is None else use_cache
            if use_cache and past_key_values is None:
                past_key_values = DynamicCache(config=self.config)
            past_length = past_key_values.get_seq_length() if past_key_values is not None else 0

            key_padding_mask = None
            if attention_mask is not None:
                if attention_mask.dim() != 2:
                    raise ValueError(
                        "Step1Model.forward: attention_mask must be a 2-D [batch, past + length] padding mask, "
                        f"got shape {tuple(attention_mask.shape)}"
                    )
                if not bool(attention_mask.all()):
                    key_padding_mask = attention_mask.bool()
            context = AttentionContext(
                alibi=self.alibi,
                past_length=past_length,
                query_length=inputs_embeds.shape[1],
                key_padding_mask=key_padding_mask,
            )

        hidden_states = inputs_embeds
        all_hidden_states: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        for layer in self.layers:
            if all_hidden_states is not None:
                all_hidden_states += (hidden_states,)
            hidden_states = layer(hidden_states, context, past_key_values if use_cache else None)
        hidden_states = self.norm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states += (hidden_states,)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states,
        )


class Step1ForCausalLM(Step1PreTrainedModel, GenerationMixin):
    """Step-1 with its (untied) language-model head; the class of both official LLM folders."""

    _tied_weights_keys: dict[str, str] = {}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        self.model = Step1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def set_attention_backend(self, backend: str) -> None:
        """Switch the attention backend (``sdpa``, ``flex``/``flex_attention``, ``eager``) in place."""
        # Step-1 dispatches attention itself, so the config field is all that needs to change.
        self.config._attn_implementation = normalize_attention_backend(backend)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | StaticKVCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits for every position (or only the last ``logits_to_keep``); loss when ``labels`` are given."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            if logits_to_keep > 0:
                hidden_states = hidden_states[:, -logits_to_keep:]
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        result = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
        )
        if return_dict is False:
            return result.to_tuple()
        return result
