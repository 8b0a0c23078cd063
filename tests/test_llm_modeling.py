"""Step-1 architecture: official keys/shapes, parameter counts, attention backends, KV cache, padding."""

import pytest
import torch

from stepaudio.llm import STEP_AUDIO_CHAT_CONFIG, STEP_AUDIO_TTS_3B_CONFIG, Step1Config, Step1ForCausalLM
from stepaudio.testing import tiny_step1_config_dict

# §1.3 of the reference notes: hidden, intermediate, kv width (groups * head_dim), layers, published size.
OFFICIAL = {
    "chat": (STEP_AUDIO_CHAT_CONFIG, 12288, 31232, 1024, 88, 131_946_590_208),
    "tts": (STEP_AUDIO_TTS_3B_CONFIG, 3072, 8192, 256, 32, 3_529_706_496),
}
VOCAB = 74752


def _reference_shapes(hidden: int, inter: int, kv: int, layers: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        "model.embed_tokens.weight": (VOCAB, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (VOCAB, hidden),
    }
    per_layer = {
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
    }
    for n in range(layers):
        shapes.update({f"model.layers.{n}.{name}": shape for name, shape in per_layer.items()})
    return shapes


@pytest.mark.parametrize("kind", ["chat", "tts"])
def test_official_configs_build_the_published_state_dict_on_meta(kind):
    config_dict, hidden, inter, kv, layers, published_params = OFFICIAL[kind]
    config = Step1Config(**config_dict)
    assert config.tie_word_embeddings is False
    with torch.device("meta"):
        model = Step1ForCausalLM(config)
    state = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert state == _reference_shapes(hidden, inter, kv, layers)
    assert sum(p.numel() for p in model.parameters()) == published_params
    # Untied: lm_head is its own parameter, not the embedding matrix.
    assert model.lm_head.weight is not model.model.embed_tokens.weight


def test_config_reads_official_keys_and_exposes_standard_aliases():
    config = Step1Config(**STEP_AUDIO_CHAT_CONFIG)
    assert (config.num_key_value_heads, config.max_position_embeddings, config.head_dim) == (8, 32768, 128)
    assert config.queries_per_group == 12
    saved = config.to_dict()
    assert saved["num_attention_groups"] == 8 and saved["max_seq_len"] == 32768
    assert "auto_map" not in saved and "num_key_value_heads" not in saved


def test_config_rejects_tied_embeddings_and_bad_head_layout():
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        Step1Config(**{**STEP_AUDIO_CHAT_CONFIG, "tie_word_embeddings": True})
    with pytest.raises(Exception, match="num_attention_groups"):
        Step1Config(**{**STEP_AUDIO_CHAT_CONFIG, "num_attention_groups": 7})


@pytest.fixture(scope="module")
def tiny_model() -> Step1ForCausalLM:
    torch.manual_seed(0)
    config = Step1Config(**tiny_step1_config_dict("chat", vocab_size=512))
    model = Step1ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so a mis-wired norm would show
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.2 * torch.randn_like(parameter))
    return model


def _logits(model, input_ids, backend, **kwargs):
    model.set_attention_backend(backend)
    try:
        with torch.no_grad():
            return model(input_ids, **kwargs).logits
    finally:
        model.set_attention_backend("sdpa")


@pytest.mark.parametrize("length", [1, 5, 37, 130])
def test_backends_agree_on_prefill(tiny_model, length):
    input_ids = torch.randint(5, 512, (2, length), generator=torch.Generator().manual_seed(length))
    reference = _logits(tiny_model, input_ids, "eager")
    for backend in ("sdpa", "flex"):
        assert torch.allclose(_logits(tiny_model, input_ids, backend), reference, atol=1e-5), backend


def test_backends_agree_with_cache_and_padding(tiny_model):
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(5, 512, (2, 40), generator=generator)
    step = torch.randint(5, 512, (2, 20), generator=generator)
    mask = torch.ones(2, 60, dtype=torch.long)
    mask[1, :7] = 0  # left padding in the second row
    results = {}
    for backend in ("eager", "sdpa", "flex"):
        tiny_model.set_attention_backend(backend)
        with torch.no_grad():
            first = tiny_model(prompt, attention_mask=mask[:, :40], use_cache=True)
            second = tiny_model(step, attention_mask=mask, past_key_values=first.past_key_values, use_cache=True)
        results[backend] = torch.cat([first.logits, second.logits], dim=1)
    tiny_model.set_attention_backend("sdpa")
    real = mask.bool()  # outputs at padded query positions are unspecified (they are never read)
    for backend in ("sdpa", "flex"):
        assert torch.allclose(results[backend][real], results["eager"][real], atol=1e-5), backend


def test_cached_forward_equals_uncached_forward(tiny_model):
    input_ids = torch.randint(5, 512, (1, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = tiny_model(input_ids, use_cache=False).logits
        cache_out = tiny_model(input_ids[:, :30], use_cache=True)
        pieces = [cache_out.logits]
        past = cache_out.past_key_values
        for position in range(30, 50):
            out = tiny_model(input_ids[:, position : position + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            pieces.append(out.logits)
    assert past.get_seq_length() == 50
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flex", "eager"])
def test_greedy_generation_with_cache_equals_recomputation(tiny_model, backend):
    prompt = torch.randint(5, 512, (1, 24), generator=torch.Generator().manual_seed(3))
    tiny_model.set_attention_backend(backend)
    try:
        with torch.no_grad():
            generated = tiny_model.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=None)
            sequence = prompt
            for _ in range(16):
                next_token = tiny_model(sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                sequence = torch.cat([sequence, next_token], dim=1)
    finally:
        tiny_model.set_attention_backend("sdpa")
    assert generated.tolist() == sequence.tolist()


def test_left_padded_batch_matches_single_sequences(tiny_model):
    generator = torch.Generator().manual_seed(4)
    short = torch.randint(5, 512, (1, 9), generator=generator)
    long = torch.randint(5, 512, (1, 14), generator=generator)
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :5] = 0
    with torch.no_grad():
        batched = tiny_model(batch, attention_mask=mask).logits
        alone_short = tiny_model(short).logits
        alone_long = tiny_model(long).logits
    assert torch.allclose(batched[0, 5:], alone_short[0], atol=1e-5)
    assert torch.allclose(batched[1], alone_long[0], atol=1e-5)


def test_query_heads_read_contiguous_kv_groups(tiny_model):
    """Query head h must attend with K/V group h // (heads / groups), as upstream's repeat_interleave."""
    attention = tiny_model.model.layers[0].self_attn
    heads, groups, dim = attention.num_heads, attention.num_groups, attention.head_dim
    hidden = torch.randn(1, 11, tiny_model.config.hidden_size, generator=torch.Generator().manual_seed(5))
    from stepaudio.llm.attention import AttentionContext

    context = AttentionContext(alibi=tiny_model.model.alibi, past_length=0, query_length=11)
    with torch.no_grad():
        output = attention(hidden, context)
        q = attention.q_proj(hidden).view(1, 11, heads, dim).transpose(1, 2)
        k = attention.k_proj(hidden).view(1, 11, groups, dim).transpose(1, 2)
        v = attention.v_proj(hidden).view(1, 11, groups, dim).transpose(1, 2)
        bias = tiny_model.model.alibi.bias(0, 11, 11, device=torch.device("cpu"))[0]
        per_head = []
        for h in range(heads):
            g = h // (heads // groups)
            scores = q[0, h] @ k[0, g].T * dim**-0.5 + bias[h]
            per_head.append(torch.softmax(scores, -1) @ v[0, g])
        expected = attention.o_proj(torch.stack(per_head, 1).reshape(1, 11, -1))
    assert torch.allclose(output, expected, atol=1e-5)


def test_sdpa_row_blocks_give_the_same_result(tiny_model, monkeypatch):
    import stepaudio.llm.attention as attention_module

    input_ids = torch.randint(5, 512, (1, 64), generator=torch.Generator().manual_seed(6))
    whole = _logits(tiny_model, input_ids, "sdpa")
    # A budget of a few rows forces the prefill through several query-row blocks.
    monkeypatch.setattr(attention_module, "SDPA_BIAS_BUDGET_BYTES", 6 * 64 * 4 * 5)
    assert torch.allclose(_logits(tiny_model, input_ids, "sdpa"), whole, atol=1e-6)


def test_half_precision_forward_is_finite_and_close(tiny_model):
    input_ids = torch.randint(5, 512, (1, 33), generator=torch.Generator().manual_seed(7))
    reference = _logits(tiny_model, input_ids, "sdpa")
    model16 = Step1ForCausalLM(tiny_model.config)
    model16.load_state_dict(tiny_model.state_dict())
    model16 = model16.to(torch.bfloat16).eval()
    with torch.no_grad():
        logits = model16(input_ids).logits.float()
    assert torch.isfinite(logits).all()
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max()


def test_unknown_backend_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="unknown Step-1 attention backend 'flash'"):
        tiny_model.set_attention_backend("flash")


def test_batched_left_padded_generation_equals_single_generation(tiny_model):
    generator = torch.Generator().manual_seed(8)
    short = torch.randint(5, 512, (1, 7), generator=generator)
    long = torch.randint(5, 512, (1, 12), generator=generator)
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :5] = 0
    greedy = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        batched = tiny_model.generate(batch, attention_mask=mask, **greedy)
        alone = [tiny_model.generate(x, **greedy) for x in (short, long)]
    assert batched[0, -8:].tolist() == alone[0][0, -8:].tolist()
    assert batched[1, -8:].tolist() == alone[1][0, -8:].tolist()
