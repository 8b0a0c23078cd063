"""``stepaudio edit`` / ``editx_infer.py`` argument handling (nothing is loaded: every error comes first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stepaudio.cli import run_cli
from stepaudio.cli_options import StepAudioArgumentParser
from stepaudio.editx.cli import EDIT_INFO_OPTIONS, add_arguments, output_name, run

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _parser() -> StepAudioArgumentParser:
    parser = StepAudioArgumentParser(prog="editx_infer.py")
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "my.prompt.wav"
    soundfile.write(path, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    return path


def _run(args, capsys):
    code = run_cli(_parser(), [str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def test_speed_options_and_aliases():
    args = _parser().parse_args(
        ["--model-path", "m", "--backend", "static", "--quantization", "int4", "--device", "cpu", "--dtype", "float32"]
    )
    assert (args.backend, args.quantization, args.device_map, args.torch_dtype) == ("static", "int4", "cpu", "float32")
    assert _parser().parse_args(["--model-path", "m", "--stream"]).stream is True


def test_original_flags_and_defaults():
    args = _parser().parse_args(["--model-path", "m", "--prompt-audio", "x.wav"])  # README's abbreviation
    assert args.prompt_audio_path == "x.wav"
    assert (args.edit_type, args.edit_info, args.n_edit_iter, args.output_dir) == ("clone", "", 1, "./output_dir")
    assert (args.model_source, args.generated_text, args.prompt_text) == ("auto", "", "")
    assert EDIT_INFO_OPTIONS[0] == "" and EDIT_INFO_OPTIONS.count("remove") == 1 and "more slower" in EDIT_INFO_OPTIONS


def test_output_names_follow_the_original():
    assert output_name("examples/fear_zh_female_prompt.wav", "clone") == "fear_zh_female_prompt_cloned.wav"
    assert output_name("a/my.prompt.wav", "emotion", 2) == "my_edited_iter2.wav"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--edit-type", "emotion", "--prompt-text", "t"], "--edit-info is required for edit_type 'emotion'"),
        (
            ["--edit-type", "speed", "--edit-info", "happy", "--prompt-text", "t"],
            "--edit-info must be one of "
            "'faster', 'slower', 'more faster', 'more slower' for edit_type 'speed', got 'happy'",
        ),
        (["--edit-type", "style", "--edit-info", "whisper"], "--prompt-text is required for edit_type 'style'"),
        (
            ["--edit-type", "paralinguistic", "--prompt-text", "t"],
            "--generated-text is required for edit_type 'paralinguistic'",
        ),
        (["--edit-type", "vad", "--n-edit-iter", "0"], "--n-edit-iter must be a whole number from 1 to 10"),
        (["--prompt-text", "t"], "--generated-text must be non-empty text"),
        (
            ["--edit-type", "vad", "--quantization", "awq-4bit"],
            "--quantization 'awq-4bit' (the original's pre-quantized Step-Audio-EditX-AWQ-4bit checkpoint) loads "
            "with backend='vllm' only, not 'transformers'; use 'int4' or 'int8' (bitsandbytes, quantized while "
            "loading) with this backend",
        ),
        (["--edit-type", "vad", "--quantization", "int3"], "--quantization must be one of int8, int4, got 'int3'"),
        (
            ["--edit-type", "vad", "--backend", "http://gpu:8000", "--quantization", "int8"],
            "--quantization does not apply to a remote server (http://gpu:8000/v1), got 'int8'",
        ),
        (["--edit-type", "vad", "--backend", "vlm"], "--backend must be 'transformers', 'static', 'compiled', 'vllm'"),
        (
            ["--edit-type", "vad", "--backend", "static", "--gpu-memory-utilization", "0.5"],
            "--gpu-memory-utilization only applies to --backend vllm (an in-process vLLM engine), got 0.5 with "
            "--backend static",
        ),
        (["--edit-type", "vad", "--model-source", "huggingface"], "--model-source huggingface: stepaudio reads local"),
        (["--edit-type", "vad", "--language", "Korean"], "--language applies to --edit-type clone only"),
    ],
)
def test_bad_options_fail_before_loading(tmp_path, clip, capsys, extra, message):
    code, err = _run(["--model-path", tmp_path, "--prompt-audio-path", clip, "--output-dir", tmp_path, *extra], capsys)
    assert code == 2
    assert err.startswith(f"editx_infer.py: error: {message}"), err
    assert "\n" not in err


def test_missing_clip_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "no.wav"
    code, err = _run(["--model-path", tmp_path, "--edit-type", "denoise", "--prompt-audio", missing], capsys)
    assert code == 2 and "--prompt-audio-path" in err and "no.wav" in err


def test_unknown_choice_is_refused_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        _parser().parse_args(["--model-path", str(tmp_path), "--edit-info", "joyful"])
    assert caught.value.code == 2
    assert "argument --edit-info: invalid choice: 'joyful'" in capsys.readouterr().err


def test_root_script_runs_the_same_parser(tmp_path):
    result = subprocess.run(
        [sys.executable, "editx_infer.py", "--model-path", str(tmp_path), "--edit-type", "emotion"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "editx_infer.py: error: --prompt-audio-path is required: the clip to clone or edit"
    )
