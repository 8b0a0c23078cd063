"""Quantized (int8 / int4, bitsandbytes) loading of the tiny Step-1 folders, shard by shard.

Agreement metric: per-position cosine similarity of the full logit vectors (the minimum over the
prompt's positions) and top-1 agreement, against the unquantized model in the same dtype.  Measured on
the tiny random fixtures (float32): int8 min cosine 0.99985-0.99993, top-1 0.96-1.0; int4 (NF4, group
64) min cosine 0.947-0.973 (tiny random weights are a worst case for 4-bit: 48-wide rows, near-flat
logits).  The bounds below keep a margin under those numbers.
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stepaudio.errors import CheckpointFileNotFoundError, InvalidArgumentError
from stepaudio.llm import quantization as quantization_module
from stepaudio.llm.checkpoint import checkpoint_shard_files
from stepaudio.llm.modeling import Step1ForCausalLM
from stepaudio.llm.quantization import (
    QUANTIZED_PROJECTIONS,
    is_quantized_weight_key,
    model_quantization,
    model_weight_bytes,
    projected_weight_bytes,
)

FOLDERS = ("Step-Audio-Chat", "Step-Audio-TTS-3B")
#: Minimum per-position cosine of the logits against the unquantized model, and minimum top-1 agreement.
INT8_MIN_COSINE, INT8_MIN_TOP1 = 0.999, 0.9
INT4_MIN_COSINE = 0.9


def _prompt(vocab_size: int, length: int = 24) -> torch.Tensor:
    return torch.randint(0, vocab_size, (1, length), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tiny_model_root: Path) -> dict[str, tuple[Step1ForCausalLM, torch.Tensor]]:
    """The unquantized float32 models and their logits on a 24-token prompt, per folder."""
    result = {}
    for name in FOLDERS:
        model = Step1ForCausalLM.from_pretrained(tiny_model_root / name, dtype=torch.float32)
        ids = _prompt(model.config.vocab_size)
        with torch.no_grad():
            result[name] = (model, model(ids).logits[0].float())
    return result


@pytest.fixture(scope="module")
def quantized(tiny_model_root: Path) -> dict[tuple[str, str], Step1ForCausalLM]:
    """Each tiny folder loaded with int8 and with int4 (float32 compute)."""
    return {
        (name, method): Step1ForCausalLM.from_pretrained(
            tiny_model_root / name, quantization=method, dtype=torch.float32
        )
        for name in FOLDERS
        for method in ("int8", "int4")
    }


def _agreement(reference_logits: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    cosine = F.cosine_similarity(reference_logits, logits.float(), dim=-1).min().item()
    top1 = (reference_logits.argmax(-1) == logits.argmax(-1)).float().mean().item()
    return cosine, top1


def test_int8_stores_int8_projection_weights_and_keeps_the_rest(quantized, reference):
    model = quantized[("Step-Audio-Chat", "int8")]
    config = model.config
    for layer in model.model.layers:
        for path in QUANTIZED_PROJECTIONS:
            module = layer.get_submodule(path)
            assert isinstance(module, bnb.nn.Linear8bitLt)
            assert module.weight.dtype == torch.int8
            assert tuple(module.weight.shape) == (module.out_features, module.in_features)
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
    assert model_quantization(model).method == "int8"
    assert model_quantization(reference["Step-Audio-Chat"][0]) is None
    # Bytes: exactly the projection from the shapes, and the projections shrink 4x (+ one scale per row).
    assert model_weight_bytes(model) == projected_weight_bytes(config, "int8", dtype=torch.float32)
    saved = model_weight_bytes(reference["Step-Audio-Chat"][0]) - model_weight_bytes(model)
    projections = sum(p.numel() for n, p in reference["Step-Audio-Chat"][0].named_parameters() if "layers" in n)
    norms = 2 * config.num_hidden_layers * config.hidden_size
    rows = sum(layer.get_submodule(path).out_features for layer in model.model.layers for path in QUANTIZED_PROJECTIONS)
    assert saved == 3 * (projections - norms) - 4 * rows


def test_int4_packs_two_weights_per_byte_with_group_scales(quantized, tiny_model_root):
    model = quantized[("Step-Audio-TTS-3B", "int4")]
    for layer in model.model.layers:
        for path in QUANTIZED_PROJECTIONS:
            module = layer.get_submodule(path)
            assert isinstance(module, bnb.nn.Linear4bit)
            assert module.weight.dtype == torch.uint8
            assert module.weight.numel() == module.out_features * module.in_features // 2
            state = module.weight.quant_state
            assert (state.quant_type, state.blocksize, state.nested) == ("nf4", 64, True)
    assert model_weight_bytes(model) == projected_weight_bytes(model.config, "int4", dtype=torch.float32)

    coarse = Step1ForCausalLM.from_pretrained(
        tiny_model_root / "Step-Audio-TTS-3B", quantization="int4", quantization_group_size=128, dtype=torch.float32
    )
    assert coarse.model.layers[0].mlp.up_proj.weight.quant_state.blocksize == 128
    assert model_weight_bytes(coarse) < model_weight_bytes(model)


@pytest.mark.parametrize("name", FOLDERS)
def test_quantized_logits_agree_with_the_unquantized_model(quantized, reference, name):
    model, reference_logits = reference[name]
    ids = _prompt(model.config.vocab_size)
    with torch.no_grad():
        int8_logits = quantized[(name, "int8")](ids).logits[0]
        int4_logits = quantized[(name, "int4")](ids).logits[0]
    int8_cosine, int8_top1 = _agreement(reference_logits, int8_logits)
    int4_cosine, _ = _agreement(reference_logits, int4_logits)
    assert int8_cosine > INT8_MIN_COSINE and int8_top1 >= INT8_MIN_TOP1, (int8_cosine, int8_top1)
    assert int4_cosine > INT4_MIN_COSINE, int4_cosine
    # 8 bits are closer to the original than 4 bits.
    assert (int8_logits - reference_logits).abs().max() < (int4_logits - reference_logits).abs().max()


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_generation_matches_a_full_forward(quantized, method):
    model = quantized[("Step-Audio-Chat", method)]
    prompt = _prompt(model.config.vocab_size, length=10)
    with torch.no_grad():
        output = model.generate(
            prompt, max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
        sequence = output.sequences
        assert sequence.shape == (1, 16) and torch.equal(sequence[:, :10], prompt)
        # The cached decode steps give the logits of a fresh full forward over the generated text.
        full = model(sequence[:, :-1], use_cache=False).logits[0, 9:]
    cached = torch.stack(output.scores, dim=1)[0]
    torch.testing.assert_close(cached, full, atol=2e-3, rtol=2e-3)
    assert torch.equal(cached.argmax(-1), sequence[0, 10:])


def test_bfloat16_auto_dtype_and_device_maps(tiny_model_root):
    folder = tiny_model_root / "Step-Audio-Chat"
    model = Step1ForCausalLM.from_pretrained(folder, quantization="int4", device_map="auto")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16  # default "auto": config.json says bfloat16
    assert model.model.layers[0].self_attn.q_proj.compute_dtype == torch.bfloat16
    assert {p.device.type for p in model.parameters()} == {"cpu"}  # "auto" without a GPU: the CPU
    single = Step1ForCausalLM.from_pretrained(
        folder, quantization="int8", dtype=torch.bfloat16, device_map={"": "cpu"}, attn_implementation="eager"
    )
    assert single.config._attn_implementation == "eager"
    with torch.no_grad():
        logits = single(_prompt(single.config.vocab_size)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_unquantized_load_is_unchanged(reference):
    model = reference["Step-Audio-Chat"][0]
    assert all(type(layer.mlp.up_proj) is nn.Linear for layer in model.model.layers)
    assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantization": "int3"}, "quantization must be one of int8, int4, got 'int3'; or None to load"),
        ({"quantization": 4}, "quantization must be one of int8, int4, got 4;"),
        (
            {"quantization": "int4", "quantization_group_size": 100},
            "quantization_group_size must be one of 64, 128, 256, 512, 1024, 2048, 4096",
        ),
        ({"quantization": "int4", "quantization_group_size": True}, "quantization_group_size must be a positive"),
        ({"quantization": "int8", "quantization_group_size": 64}, "quantization_group_size is only used with"),
        ({"quantization_group_size": 64}, "quantization_group_size is only used with quantization='int4'"),
        ({"quantization": "int4", "low_cpu_mem_usage": True}, "quantization loads accept only"),
        ({"quantization": "int4", "dtype": torch.int8}, "dtype must be torch.float32, torch.bfloat16"),
        (
            {"quantization": "int8", "device_map": {"model": "cpu", "lm_head": "meta"}},
            "device_map must put the whole quantized model on one device",
        ),
        ({"quantization": "int8", "device_map": "balanced"}, "device_map must be None, 'auto', a device"),
        ({"quantization": "int8", "device_map": "meta"}, "device_map must name a CPU or CUDA device"),
    ],
)
def test_bad_quantization_arguments_give_one_line_errors(tiny_model_root, kwargs, message):
    with pytest.raises(InvalidArgumentError) as caught:
        Step1ForCausalLM.from_pretrained(tiny_model_root / "Step-Audio-Chat", **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_quantized_load_needs_a_local_folder_and_runs_the_strict_checks(tiny_model_root, tmp_path):
    with pytest.raises(InvalidArgumentError, match="must be a local checkpoint folder for a quantized load"):
        Step1ForCausalLM.from_pretrained("stepfun-ai/Step-Audio-TTS-3B", quantization="int4")
    broken = shutil.copytree(tiny_model_root / "Step-Audio-TTS-3B", tmp_path / "broken")
    (broken / "model-00002.safetensors").unlink()
    with pytest.raises(CheckpointFileNotFoundError, match="missing shard .*model-00002.safetensors"):
        Step1ForCausalLM.from_pretrained(broken, quantization="int4")


def _mapped_files(folder: Path) -> set[str]:
    """Names of the files under ``folder`` that this process has memory-mapped right now."""
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return {Path(line.split()[-1]).name for line in maps if line.rstrip().split()[-1].startswith(prefix)}


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_loader_reads_one_shard_at_a_time_and_quantizes_as_it_goes(tiny_model_root, monkeypatch, method):
    """Each shard is opened once, in order; while it is open no other shard is mapped; when the next one opens,
    every projection of the earlier shards is already quantized and the earlier shards are unmapped."""
    folder = (tiny_model_root / "Step-Audio-Chat").resolve()
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    real_safe_open = quantization_module.safe_open
    events: list[tuple[str, str, set[str], int]] = []
    existing = {id(obj) for obj in gc.get_objects() if type(obj) is Step1ForCausalLM}

    def quantized_so_far() -> int:
        """Quantized projections with real weights in the model being loaded (found through the GC)."""
        loading = [o for o in gc.get_objects() if type(o) is Step1ForCausalLM and id(o) not in existing]
        assert len(loading) == 1
        return sum(
            isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) and m.weight.device.type != "meta"
            for m in loading[0].modules()
        )

    class Recorder:
        """Delegates to safetensors' safe_open and notes what is mapped and quantized at each open and close."""

        def __init__(self, path, *args, **kwargs):
            self.name = Path(path).name
            self.handle = real_safe_open(path, *args, **kwargs)

        def __enter__(self):
            handle = self.handle.__enter__()
            events.append(("open", self.name, _mapped_files(folder), quantized_so_far()))
            return handle

        def __exit__(self, *exc_info):
            result = self.handle.__exit__(*exc_info)
            events.append(("close", self.name, _mapped_files(folder), quantized_so_far()))
            return result

    monkeypatch.setattr(quantization_module, "safe_open", Recorder)
    model = Step1ForCausalLM.from_pretrained(folder, quantization=method)
    assert id(model) not in existing

    shards = [path.name for path in checkpoint_shard_files(folder)]
    assert len(shards) == 3
    # (The strict checks before loading read the headers through checkpoint.py's own safe_open.)
    assert [(kind, name) for kind, name, _, _ in events] == [(k, s) for s in shards for k in ("open", "close")]
    projections_before = 0
    for shard in shards:
        opened = next(e for e in events if e[:2] == ("open", shard))
        closed = next(e for e in events if e[:2] == ("close", shard))
        assert opened[2] == {shard}, opened  # only this shard is mapped while it is read
        assert closed[2] == set(), closed  # and it is unmapped as soon as its block ends
        assert opened[3] == projections_before  # everything read so far is quantized already
        projections_before += sum(is_quantized_weight_key(k) for k, f in index.items() if f == shard)
        assert closed[3] == projections_before
