"""``stepaudio edit`` (and ``editx_infer.py``): zero-shot cloning and iterative editing with Step-Audio-EditX.

The options are those of the original ``tts_infer.py`` (same names, choices and defaults where they
make sense here; ``--prompt-audio`` works as an abbreviation of ``--prompt-audio-path`` as it does
there), plus folder overrides, ``--language``, ``--seed`` and ``--max-segment-seconds``.  Output files
are named like the original's: ``OUTPUT_DIR/<clip>_cloned.wav`` and ``OUTPUT_DIR/<clip>_edited_iter<N>.wav``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..cli_options import MAX_SEED, add_common_options, check_audio_file_option
from ..errors import InvalidArgumentError
from ..validation import check_float, check_input_dir, check_int, check_output_dir, check_text
from .edit_config import EDIT_INFO_CHOICES, EDIT_TYPES, LANGUAGES, check_edit_request, check_n_edit_iter

logger = logging.getLogger(__name__)

__all__ = ["DESCRIPTION", "add_arguments", "check_args", "output_name", "register", "run"]

DESCRIPTION = (
    "Zero-shot cloning (--edit-type clone) or iterative editing of a clip with Step-Audio-EditX. --model-path is "
    "the folder holding Step-Audio-EditX/ and Step-Audio-Tokenizer/ (or pass --editx-path / --tokenizer-path)."
)
DEFAULT_PARAFORMER_ID = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
#: ``--edit-info`` choices in the original's order ('' = none), each value once.
EDIT_INFO_OPTIONS: tuple[str, ...] = tuple(dict.fromkeys(["", *(v for vs in EDIT_INFO_CHOICES.values() for v in vs)]))
_OPTION_OF = {"edit_type": "--edit-type", "edit_info": "--edit-info", "audio_text": "--prompt-text"}
_OPTION_OF["text"] = "--generated-text"
_OPTION_OF["quantization"] = "--quantization"
_OPTION_OF["backend"] = "--backend"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``edit`` sub-command."""
    parser = subparsers.add_parser(
        "edit",
        help="clone a voice or edit emotion/style/speed/paralinguistics with Step-Audio-EditX",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The original ``tts_infer.py`` options, then stepaudio's own."""
    parser.add_argument("--model-path", required=True, help="folder holding Step-Audio-EditX and Step-Audio-Tokenizer")
    parser.add_argument("--output-dir", default="./output_dir", help="folder for the wav files (default ./output_dir)")
    parser.add_argument(
        "--model-source",
        default="auto",
        choices=["auto", "local", "modelscope", "huggingface"],
        help="only local folders are read (auto = local); download the models first",
    )
    parser.add_argument(
        "--tokenizer-model-id",
        default=DEFAULT_PARAFORMER_ID,
        help="the Paraformer sub-folder of Step-Audio-Tokenizer (found automatically; kept for compatibility)",
    )
    parser.add_argument("--tts-model-id", default=None, help="the Step-Audio-EditX folder, if not in --model-path")
    parser.add_argument(
        "--quantization",
        default=None,
        metavar="METHOD",
        help="quantized LM: int8 or int4 (bitsandbytes, quantized while loading; any local backend); with "
        "--backend vllm: awq-4bit (the Step-Audio-EditX-AWQ-4bit checkpoint) or vLLM's own method (e.g. fp8)",
    )
    parser.add_argument(
        "--torch-dtype",
        "--dtype",
        default=None,
        choices=["float16", "bfloat16", "float32"],
        help="LM and decoder dtype (default: bf16 on GPU, float32 on CPU)",
    )
    parser.add_argument(
        "--device-map",
        "--device",
        default=None,
        help="cuda, cuda:N, cpu or auto (default: cuda if available)",
    )
    parser.add_argument("--prompt-text", default="", help="transcript of the prompt audio")
    parser.add_argument("--prompt-audio-path", default="", help="the clip to clone or edit")
    parser.add_argument("--edit-type", default="clone", choices=["clone", *EDIT_TYPES], help="task (default clone)")
    parser.add_argument("--edit-info", default="", choices=EDIT_INFO_OPTIONS, help="emotion, style or speed")
    parser.add_argument("--n-edit-iter", type=int, default=1, help="edit iterations, each on the previous output")
    parser.add_argument(
        "--generated-text", default="", help="text to speak (clone), or the new text with [Tag]s (paralinguistic)"
    )
    parser.add_argument("--editx-path", default=None, help="Step-Audio-EditX folder (default: found in MODEL_PATH)")
    parser.add_argument(
        "--tokenizer-path", default=None, help="Step-Audio-Tokenizer folder (default: found in MODEL_PATH)"
    )
    parser.add_argument("--language", default=None, choices=LANGUAGES, help="clone: language/dialect prefix")
    parser.add_argument("--max-segment-seconds", type=float, default=30.0, help="longer audio is edited in pieces")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument(
        "--backend",
        default=None,
        metavar="BACKEND",
        help="what generates the audio codes: transformers (default), static (static KV cache, CUDA graphs on a "
        "GPU), compiled (static + torch.compile), vllm (in-process vLLM engine) or the URL of a vllm serve server "
        "of Step-Audio-EditX, e.g. http://gpu-host:8000/v1",
    )
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=None, help="--backend vllm: share of the GPU vLLM takes"
    )
    parser.add_argument(
        "--tensor-parallel-size", type=int, default=None, help="--backend vllm: GPUs the LM is split over"
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="decode while the LM generates (clone, and the last edit iteration; only its file is written) and "
        "report the first-audio time",
    )
    add_common_options(parser)


def output_name(prompt_audio_path: str, edit_type: str, iteration: int = 1) -> str:
    """The original's file name: the clip's name up to its first dot, ``_cloned`` or ``_edited_iter<N>``, ``.wav``."""
    stem = os.path.basename(prompt_audio_path).split(".")[0]
    return f"{stem}_cloned.wav" if edit_type == "clone" else f"{stem}_edited_iter{iteration}.wav"


def _as_option_error(error: InvalidArgumentError) -> InvalidArgumentError:
    option = _OPTION_OF.get(error.name or "", error.name or "")
    return InvalidArgumentError(f"{option} {error.requirement}", name=option, value=error.value)


def check_args(args: argparse.Namespace) -> None:
    """Every option, checked before anything is loaded (raises a UsageError naming the option)."""
    check_input_dir(args.model_path, "--model-path", hint="pass the folder holding Step-Audio-EditX/")
    for option in ("tts_model_id", "editx_path", "tokenizer_path"):
        if getattr(args, option) is not None:
            check_input_dir(getattr(args, option), "--" + option.replace("_", "-"))
    if args.model_source in ("modelscope", "huggingface"):
        raise InvalidArgumentError(
            f"--model-source {args.model_source}: stepaudio reads local folders only; download stepfun-ai/"
            "Step-Audio-EditX and stepfun-ai/Step-Audio-Tokenizer into one folder and pass it as --model-path",
            name="--model-source",
            value=args.model_source,
        )
    from ..llm.backends import check_backend_spec  # imports torch: only when the command runs
    from .model import resolve_lm_source

    spec = check_backend_spec(args.backend, "--backend")
    if args.quantization is not None:
        try:
            resolve_lm_source(spec, args.quantization, args.model_path, Path(args.model_path), None)
        except InvalidArgumentError as error:
            raise _as_option_error(error) from None
    for option in ("gpu_memory_utilization", "tensor_parallel_size"):
        if getattr(args, option) is not None and spec != "vllm":
            flag = "--" + option.replace("_", "-")
            raise InvalidArgumentError(
                f"{flag} only applies to --backend vllm (an in-process vLLM engine), got {getattr(args, option)} "
                f"with --backend {spec if isinstance(spec, str) else 'transformers'}",
                name=flag,
                value=getattr(args, option),
            )
    if args.gpu_memory_utilization is not None:
        check_float(
            args.gpu_memory_utilization, "--gpu-memory-utilization", minimum=0.0, maximum=1.0, exclusive_minimum=True
        )
    if args.tensor_parallel_size is not None:
        check_int(args.tensor_parallel_size, "--tensor-parallel-size", minimum=1)
    check_output_dir(args.output_dir, "--output-dir")
    if args.seed is not None:
        check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    check_float(args.max_segment_seconds, "--max-segment-seconds", minimum=1.0, maximum=60.0)
    if not args.prompt_audio_path:
        raise InvalidArgumentError(
            "--prompt-audio-path is required: the clip to clone or edit", name="--prompt-audio-path", value=""
        )
    check_audio_file_option(args.prompt_audio_path, "--prompt-audio-path")
    if args.edit_type == "clone":
        check_text(args.prompt_text, "--prompt-text")
        check_text(args.generated_text, "--generated-text")
        if args.edit_info:
            raise InvalidArgumentError(
                "--edit-info does not apply to --edit-type clone", name="--edit-info", value=args.edit_info
            )
        return
    if args.language is not None:
        raise InvalidArgumentError(
            "--language applies to --edit-type clone only", name="--language", value=args.language
        )
    check_n_edit_iter(args.n_edit_iter, "--n-edit-iter")
    try:
        check_edit_request(args.edit_type, args.edit_info, args.prompt_text, _new_text(args))
    except InvalidArgumentError as error:
        raise _as_option_error(error) from None


def _new_text(args: argparse.Namespace) -> str | None:
    """``--generated-text`` for paralinguistic edits; the other edits do not use it (as in the original)."""
    if args.edit_type == "paralinguistic":
        return args.generated_text
    if args.generated_text:
        logger.warning(
            "--generated-text is ignored by --edit-type %s (it only applies to clone and paralinguistic)",
            args.edit_type,
        )
    return None


def _collect(chunks: Iterator[Any], start: float) -> tuple[Any, float]:
    """All streamed chunks as one ``[N]`` waveform, and the seconds from ``start`` to the first one."""
    import torch

    pieces, first = [], float("nan")
    for chunk in chunks:
        if not pieces:
            first = time.perf_counter() - start
        pieces.append(chunk)
    return (torch.cat(pieces, dim=-1)[0] if pieces else torch.zeros(0)), first


def _device(args: argparse.Namespace) -> str | None:
    return None if args.device_map in (None, "auto") else args.device_map


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.tokenizer_model_id != DEFAULT_PARAFORMER_ID:
        logger.warning("--tokenizer-model-id is ignored: the Paraformer folder is found inside Step-Audio-Tokenizer")

    from ..audio import write_audio
    from ..tokenizer import StepAudioTokenizer
    from .model import StepAudioEditX

    device = _device(args)
    tokenizer = StepAudioTokenizer(args.tokenizer_path or Path(args.model_path), device=device)
    options = {
        key: getattr(args, key)
        for key in ("gpu_memory_utilization", "tensor_parallel_size")
        if getattr(args, key) is not None
    }
    editx = StepAudioEditX(
        args.editx_path or args.tts_model_id or args.model_path,
        tokenizer,
        device=device,
        dtype=args.torch_dtype,
        backend=args.backend,
        quantization=args.quantization,
        seed=args.seed,
        max_segment_seconds=args.max_segment_seconds,
        backend_options=options,
    )
    output_dir = Path(args.output_dir)
    start = time.perf_counter()
    new_text = args.generated_text if args.edit_type == "paralinguistic" else None
    # The clip, its transcript, the edit and the iterations, as edit_stream and edit_steps take them.
    edit_args = (args.prompt_audio_path, args.prompt_text, args.edit_type, args.edit_info or None, args.n_edit_iter)
    if args.stream:
        if args.edit_type == "clone":
            chunks = editx.clone_stream(
                args.generated_text, args.prompt_audio_path, args.prompt_text, language=args.language
            )
        else:
            chunks = editx.edit_stream(*edit_args, text=new_text)
        wav, first = _collect(chunks, start)
        rate = editx.sample_rate
        path = write_audio(
            output_dir / output_name(args.prompt_audio_path, args.edit_type, args.n_edit_iter), wav, rate
        )
        seconds = wav.shape[0] / rate
        total = time.perf_counter() - start
        print(f"wrote {path}: {seconds:.2f} s of audio in {total:.2f} s (first audio after {first:.2f} s)")
        return 0
    if args.edit_type == "clone":
        wav, rate = editx.clone(args.generated_text, args.prompt_audio_path, args.prompt_text, language=args.language)
        path = write_audio(output_dir / output_name(args.prompt_audio_path, "clone"), wav[0], rate)
        print(f"wrote {path}: {wav.shape[1] / rate:.2f} s of audio in {time.perf_counter() - start:.2f} s")
        return 0
    steps = editx.edit_steps(*edit_args, text=new_text)
    for step in steps:
        path = write_audio(
            output_dir / output_name(args.prompt_audio_path, args.edit_type, step.iteration),
            step.waveform[0],
            step.sample_rate,
        )
        print(f"iteration {step.iteration}: wrote {path} ({step.waveform.shape[1] / step.sample_rate:.2f} s)")
    return 0
