"""stepaudio's vLLM integration without vLLM: the plugin entry point, the config vLLM resolves, the backend's checks.

vLLM (CUDA only) is not installed in the test environment; what needs the engine is checked by
``benchmarks/gpu_checks.py`` on a GPU.  vLLM 0.33 resolves a ``model_type`` it has no class for with
``transformers.AutoConfig.from_pretrained(folder, trust_remote_code=...)`` (``HFConfigParser.parse``), so
that call is what these tests make.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from transformers import AutoConfig

from stepaudio.errors import CheckpointConfigError, CheckpointFileNotFoundError, InputFileError, InvalidArgumentError
from stepaudio.llm.backends.vllm_engine import VLLM_INSTALL_HINT, VllmBackend, import_vllm
from stepaudio.llm.configuration import Step1Config
from stepaudio.vllm import plugin

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _step1_entry_point():
    found = [ep for ep in entry_points(group="vllm.general_plugins") if ep.value.startswith("stepaudio.")]
    assert len(found) == 1, f"stepaudio declares one vllm.general_plugins entry point, found {found}"
    return found[0]


def test_entry_point_is_declared_and_loads_register():
    entry_point = _step1_entry_point()
    assert entry_point.name == "stepaudio_step1"
    assert entry_point.value == "stepaudio.vllm.plugin:register"
    assert entry_point.load() is plugin.register


def test_register_is_idempotent():
    plugin.register()
    plugin.register()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert CONFIG_MAPPING["step1"] is Step1Config


def test_fixture_config_is_the_official_layout(tiny_chat_dir):
    """The case the plugin exists for: ``auto_map`` to remote code and no ``tie_word_embeddings`` key."""
    config = json.loads((tiny_chat_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "step1"
    assert config["auto_map"]["AutoConfig"] == "configuration_step1.Step1Config"
    assert "tie_word_embeddings" not in config
    assert (tiny_chat_dir / "configuration_step1.py").is_file()  # a stand-in that raises if imported


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_vllm_config_path_gives_the_native_untied_config(tiny_chat_dir, trust_remote_code):
    """``vllm serve`` with or without ``--trust-remote-code``: the registered class wins over ``auto_map``."""
    _step1_entry_point().load()()
    config = AutoConfig.from_pretrained(str(tiny_chat_dir), trust_remote_code=trust_remote_code)
    assert type(config) is Step1Config
    # The exact expression vLLM's step1.py uses to decide whether to tie lm_head to the embeddings.
    assert getattr(config, "tie_word_embeddings", True) is False
    assert config.num_key_value_heads == config.num_attention_groups == 2
    assert config.max_position_embeddings == config.max_seq_len == 2048
    # What vLLM does with the config afterwards: hf_overrides (VllmBackend passes this one) and pickling to workers.
    config.update({"tie_word_embeddings": False})
    assert config.get_text_config() is config
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is Step1Config and copy.tie_word_embeddings is False


@pytest.mark.slow
def test_plugin_in_a_fresh_process(tiny_chat_dir):
    """What a vLLM worker process does: load the general plugins by entry point, then parse the config."""
    script = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "for ep in entry_points(group='vllm.general_plugins'):\n"
        "    ep.load()()\n"
        "from transformers import AutoConfig\n"
        "config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=False)\n"
        "print(type(config).__module__, type(config).__name__, getattr(config, 'tie_word_embeddings', True))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_chat_dir)], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.split() == ["stepaudio.llm.configuration", "Step1Config", "False"]


def test_missing_vllm_is_one_line_saying_what_to_install(tiny_chat_dir):
    with pytest.raises(ImportError) as caught:
        import_vllm()
    message = str(caught.value)
    assert message.startswith(VLLM_INSTALL_HINT)
    assert "\n" not in message
    assert "pip install 'stepaudio[vllm]'" in message and "CUDA GPU" in message
    # A backend with valid arguments gets that far (all checks pass) and stops there.
    with pytest.raises(ImportError, match=r"^the vllm backend needs vLLM 0\.33, which is not installed"):
        VllmBackend(tiny_chat_dir, tensor_parallel_size=2, max_model_len=1024, dtype="bfloat16")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"tensor_parallel_size": 4},
            InvalidArgumentError,
            "tensor_parallel_size must divide the 6 attention heads of the model, got 4 (e.g. 1, 2)",
        ),
        (
            {"tensor_parallel_size": 3},
            InvalidArgumentError,
            "tensor_parallel_size must divide the 2 key/value groups of the model or be a multiple of them, got 3",
        ),
        (
            {"tensor_parallel_size": 0},
            InvalidArgumentError,
            "tensor_parallel_size must be a positive whole number, got 0",
        ),
        (
            {"pipeline_parallel_size": 4},
            InvalidArgumentError,
            "pipeline_parallel_size must be at most the 3 layers of the model, got 4",
        ),
        (
            {"gpu_memory_utilization": 0},
            InvalidArgumentError,
            "gpu_memory_utilization must be a number above 0.0 and at most 1.0, got 0",
        ),
        (
            {"max_model_len": 4096},
            InvalidArgumentError,
            "max_model_len must be a whole number from 1 to 2048, got 4096; the model was trained for that many "
            "tokens (max_seq_len of config.json)",
        ),
        (
            {"dtype": "fp8"},
            InvalidArgumentError,
            "dtype must be one of auto, bfloat16, float16, float32, got 'fp8'",
        ),
        (
            {"quantization": ""},
            InvalidArgumentError,
            "quantization must be non-empty text, got ''",
        ),
        (
            {"enforce_eager": "yes"},
            InvalidArgumentError,
            "enforce_eager must be True or False, got 'yes'",
        ),
        (
            {"distributed_executor_backend": "slurm"},
            InvalidArgumentError,
            "distributed_executor_backend must be one of mp, ray, got 'slurm'",
        ),
    ],
)
def test_backend_arguments_are_checked_before_vllm(tiny_chat_dir, kwargs, error, message):
    with pytest.raises(error) as caught:
        VllmBackend(tiny_chat_dir, **kwargs)
    assert str(caught.value) == message


def test_backend_folder_is_checked_before_vllm(tmp_path, tiny_chat_dir):
    with pytest.raises(InputFileError, match=r"does not exist; expected a Step-1 model folder"):
        VllmBackend(tmp_path / "missing")
    with pytest.raises(
        CheckpointFileNotFoundError, match=r"missing .*config\.json: model_path must be a Step-1 folder"
    ):
        VllmBackend(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    with pytest.raises(CheckpointConfigError, match=r"has model_type 'llama', not 'step1'"):
        VllmBackend(tmp_path)


def test_gpu_checks_help_and_missing_requirements_on_cpu():
    script = PROJECT_ROOT / "benchmarks" / "gpu_checks.py"
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--new-tokens" in shown.stdout
    refused = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "gpu_checks: no CUDA GPU is visible (torch.cuda.is_available() is False); run on a machine with one"
    ]
