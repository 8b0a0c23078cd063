"""Loading official-layout Step-1 folders: Auto classes, strict keys, clear errors, no remote code."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

import stepaudio  # noqa: F401  (registers step1 with the Auto classes)
from stepaudio.errors import CheckpointFileNotFoundError, CheckpointKeyError, CheckpointShapeError
from stepaudio.llm import Step1Config, Step1ForCausalLM
from stepaudio.llm.checkpoint import INDEX_FILE
from stepaudio.testing import build_tiny_chat_checkpoint


def _all_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(folder.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_fixture_has_the_official_layout(tiny_chat_dir):
    names = {path.name for path in tiny_chat_dir.iterdir()}
    assert {"config.json", INDEX_FILE, "tokenizer.model", "tokenizer_config.json", "lib"} <= names
    assert {"model-00001.safetensors", "model-00002.safetensors", "model-00003.safetensors"} <= names
    config = json.loads((tiny_chat_dir / "config.json").read_text())
    assert config["model_type"] == "step1" and "num_attention_groups" in config and "max_seq_len" in config
    assert "auto_map" in config and "tie_word_embeddings" not in config
    index = json.loads((tiny_chat_dir / INDEX_FILE).read_text())
    assert set(index["weight_map"].values()) == {f"model-0000{n}.safetensors" for n in (1, 2, 3)}


def test_auto_classes_load_without_trust_remote_code_and_reproduce_logits(tiny_chat_dir, caplog):
    config = AutoConfig.from_pretrained(tiny_chat_dir)
    assert isinstance(config, Step1Config)
    with caplog.at_level(logging.INFO, logger="stepaudio"):
        model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.float32)
    assert isinstance(model, Step1ForCausalLM)
    assert sum("ignoring" in record.message and "lib" in record.message for record in caplog.records) == 1
    # Reference: the same tensors put into a freshly built model by hand.
    reference = Step1ForCausalLM(config)
    reference.load_state_dict({k: v.float() for k, v in _all_tensors(tiny_chat_dir).items()}, strict=True)
    reference.eval()
    input_ids = torch.randint(5, 70000, (1, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, reference(input_ids).logits)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_default_dtype_is_the_checkpoint_bf16_and_fp16_works(tiny_chat_dir):
    assert AutoModelForCausalLM.from_pretrained(tiny_chat_dir).dtype == torch.bfloat16
    model16 = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.float16)
    assert model16.dtype == torch.float16


def test_save_pretrained_round_trip_gives_identical_logits(tiny_chat_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.float32).eval()
    model.save_pretrained(tmp_path / "saved")
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved_config["num_attention_groups"] == 2 and saved_config["tie_word_embeddings"] is False
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32).eval()
    input_ids = torch.randint(5, 70000, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, reloaded(input_ids).logits)


def test_attention_backend_is_chosen_at_load_time(tiny_chat_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, attn_implementation="flex")
    assert model.config._attn_implementation == "flex_attention"


@pytest.fixture()
def broken_copy(tiny_chat_dir, tmp_path) -> Path:
    copy = tmp_path / "Step-Audio-Chat"
    shutil.copytree(tiny_chat_dir, copy)
    return copy


def _shard_holding(folder: Path, key: str) -> Path:
    return folder / json.loads((folder / INDEX_FILE).read_text())["weight_map"][key]


def test_missing_shard_names_the_file(broken_copy):
    (broken_copy / "model-00002.safetensors").unlink()
    with pytest.raises(CheckpointFileNotFoundError, match="model-00002.safetensors") as error:
        AutoModelForCausalLM.from_pretrained(broken_copy)
    assert error.value.file == broken_copy / "model-00002.safetensors"
    assert isinstance(error.value, FileNotFoundError)


def _rewrite_shard(folder: Path, key: str, change) -> Path:
    shard = _shard_holding(folder, key)
    tensors = load_file(shard)
    change(tensors)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    return shard


def test_missing_key_names_the_key(broken_copy):
    key = "model.layers.1.mlp.up_proj.weight"
    index = json.loads((broken_copy / INDEX_FILE).read_text())
    del index["weight_map"][key]
    (broken_copy / INDEX_FILE).write_text(json.dumps(index))
    _rewrite_shard(broken_copy, "model.layers.1.mlp.down_proj.weight", lambda tensors: tensors.pop(key))
    with pytest.raises(CheckpointKeyError, match=key.replace(".", r"\.")) as error:
        AutoModelForCausalLM.from_pretrained(broken_copy)
    assert error.value.key == key


def test_key_listed_in_index_but_absent_from_shard_names_both(broken_copy):
    key = "model.layers.0.self_attn.k_proj.weight"
    shard = _rewrite_shard(broken_copy, key, lambda tensors: tensors.pop(key))
    with pytest.raises(CheckpointKeyError, match=shard.name) as error:
        AutoModelForCausalLM.from_pretrained(broken_copy)
    assert error.value.key == key and error.value.file == shard


def test_extra_key_names_the_key_and_file(broken_copy):
    key = "model.layers.0.self_attn.rotary_emb.inv_freq"
    shard = _rewrite_shard(broken_copy, "model.norm.weight", lambda tensors: tensors.update({key: torch.ones(4)}))
    with pytest.raises(CheckpointKeyError, match="unexpected tensor") as error:
        AutoModelForCausalLM.from_pretrained(broken_copy)
    assert error.value.key == key and error.value.file == shard
    assert shard.name in str(error.value)


def test_wrong_shape_names_key_file_and_both_shapes(broken_copy):
    key = "model.layers.2.self_attn.v_proj.weight"
    shard = _rewrite_shard(broken_copy, key, lambda tensors: tensors.update({key: torch.zeros(8, 48)}))
    with pytest.raises(CheckpointShapeError, match=r"\[8, 48\].*\[16, 48\]") as error:
        AutoModelForCausalLM.from_pretrained(broken_copy)
    assert error.value.key == key and shard.name in str(error.value)


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "step1"}))
    with pytest.raises(CheckpointFileNotFoundError, match=INDEX_FILE.replace(".", r"\.")):
        Step1ForCausalLM.from_pretrained(tmp_path)


def test_remote_code_files_are_never_imported(tiny_chat_dir):
    # The fixture's configuration_step1.py / modeling_step1.py raise ImportError when imported;
    # loading through the Auto classes must not touch them.
    assert "raise ImportError" in (tiny_chat_dir / "modeling_step1.py").read_text()
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    assert type(model).__module__ == "stepaudio.llm.modeling"


def test_fixture_weights_are_deterministic(tmp_path):
    first = build_tiny_chat_checkpoint(tmp_path / "a", seed=3)
    second = build_tiny_chat_checkpoint(tmp_path / "b", seed=3)
    for shard in first.glob("model-*.safetensors"):
        a, b = load_file(shard), load_file(second / shard.name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_split_device_map_with_offload_matches_single_device(tiny_chat_dir, tmp_path):
    """device_map places layers on different devices through accelerate hooks (here CPU + disk offload)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.float32).eval()
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    split = AutoModelForCausalLM.from_pretrained(
        tiny_chat_dir, dtype=torch.float32, device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    assert split.hf_device_map["model.layers.1"] == "disk"
    input_ids = torch.randint(5, 70000, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(split(input_ids).logits, model(input_ids).logits, atol=1e-6)
        greedy = dict(max_new_tokens=5, do_sample=False, eos_token_id=None)
        assert split.generate(input_ids, **greedy).tolist() == model.generate(input_ids, **greedy).tolist()
