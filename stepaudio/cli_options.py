"""Command-line options shared by the ``stepaudio`` sub-commands, and their checks.

Options are parsed by argparse and then checked by the ``check_*`` functions here (with the same
validators the Python API uses, :mod:`stepaudio.validation`) before any model is loaded; a refused
value raises a :class:`~stepaudio.errors.UsageError` naming the option, which the command line
prints as one line and exits 2 for (:func:`stepaudio.cli.run_cli`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, NoReturn

from .assembly import OFFICIAL_FOLDERS, ModelSettings, find_model_folder, find_speakers_dir
from .errors import InputFileError, InvalidArgumentError
from .validation import check_float, check_input_dir, check_input_file, check_int, check_safe_name

__all__ = [
    "MAX_SEED",
    "MODEL_FOLDERS",
    "OPTION_OF_SETTING",
    "StepAudioArgumentParser",
    "add_backend_options",
    "add_common_options",
    "add_version_option",
    "add_model_folder_options",
    "add_speech_options",
    "check_audio_file_option",
    "check_model_folder_options",
    "check_registered_speaker",
    "check_speech_options",
    "default_speakers_dir",
]

#: Largest ``--seed`` (torch takes 64-bit seeds).
MAX_SEED = 2**63 - 1


class StepAudioArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, in the style of every other stepaudio error, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version``: print the package version and exit."""
    from . import __version__

    parser.add_argument("--version", action="version", version=f"stepaudio {__version__}")


def add_common_options(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``-v/--verbose``, on every parser so that it may come before or after the sub-command."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        # Sub-parsers must not reset a top-level `stepaudio -v tts ...` to False.
        default=False if top_level else argparse.SUPPRESS,
        help="debug logging, third-party warnings, and a traceback with every error",
    )


def add_model_folder_options(parser: argparse.ArgumentParser, model_path_help: str, with_llm: bool) -> None:
    """``--model-path`` (the folder holding the official folders) and overrides for each official folder."""
    parser.add_argument("--model-path", required=True, help=model_path_help)
    if with_llm:
        parser.add_argument("--llm-path", default=None, help="Step-Audio-Chat folder (default: found in MODEL_PATH)")
    parser.add_argument("--tts-path", default=None, help="Step-Audio-TTS-3B folder (default: found in MODEL_PATH)")
    parser.add_argument(
        "--tokenizer-path", default=None, help="Step-Audio-Tokenizer folder (default: found in MODEL_PATH)"
    )


def add_speech_options(parser: argparse.ArgumentParser) -> None:
    """Voice registry, speech length limit, sampling seed and device."""
    parser.add_argument(
        "--speakers-dir", default=None, help="speakers folder (default: MODEL_PATH/speakers when it exists)"
    )
    parser.add_argument(
        "--max-speech-seconds", type=float, default=None, help="limit on the speech generated per text segment"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")


def add_backend_options(parser: argparse.ArgumentParser, chat: bool = True, tts: bool = True) -> None:
    """``--chat-backend`` / ``--tts-backend`` (what generates with each language model) and the vLLM engine sizes."""
    where = (
        "transformers (in this process, the default), vllm (in-process vLLM engine) or the URL of a vllm serve "
        "server, e.g. http://gpu-host:8000/v1 (then the weights are not loaded here)"
    )
    quantized = (
        "load it quantized: int8 or int4 (bitsandbytes weight-only, read shard by shard) with transformers; "
        "vLLM's own method (e.g. fp8) with vllm"
    )
    if chat:
        parser.add_argument("--chat-backend", default=None, metavar="BACKEND", help=f"Step-Audio-Chat on: {where}")
        parser.add_argument("--chat-quantization", default=None, metavar="METHOD", help=f"Step-Audio-Chat: {quantized}")
    if tts:
        parser.add_argument("--tts-backend", default=None, metavar="BACKEND", help=f"Step-Audio-TTS-3B on: {where}")
        parser.add_argument(
            "--tts-quantization", default=None, metavar="METHOD", help=f"Step-Audio-TTS-3B: {quantized}"
        )
    parser.add_argument(
        "--tensor-parallel-size", type=int, default=None, help="GPUs a vllm backend splits the model over (1)"
    )
    parser.add_argument(
        "--pipeline-parallel-size", type=int, default=None, help="pipeline stages of a vllm backend (1)"
    )
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=None, help="share of each GPU a vllm backend reserves (0.9)"
    )


def default_speakers_dir(model_path: str | Path, speakers_dir: str | Path | None) -> Path | None:
    """``--speakers-dir`` if given, else ``MODEL_PATH/speakers`` when that folder exists (the factory's rule)."""
    if speakers_dir is not None:
        return Path(speakers_dir)
    return find_speakers_dir(model_path, None)


#: ModelSettings field (and ``root``) -> the command-line option that sets it, so errors name what the user typed.
OPTION_OF_SETTING = {
    "root": "--model-path",
    "tokenizer_path": "--tokenizer-path",
    "chat_path": "--llm-path",
    "tts_path": "--tts-path",
    "editx_path": "--editx-path",
    "speakers_dir": "--speakers-dir",
    "max_speech_seconds": "--max-speech-seconds",
    "device": "--device",
    "dtype": "--dtype",
    "attention": "--attention",
    "allow_unknown_tags": "--allow-unknown-tags",
    "chat_backend": "--chat-backend",
    "tts_backend": "--tts-backend",
    "tensor_parallel_size": "--tensor-parallel-size",
    "pipeline_parallel_size": "--pipeline-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "chat_quantization": "--chat-quantization",
    "tts_quantization": "--tts-quantization",
    "editx_backend": "--editx-backend",
    "editx_quantization": "--editx-quantization",
}

#: Official folder name -> (the option that overrides it, a file that marks the folder).
MODEL_FOLDERS = {name: (OPTION_OF_SETTING[field], marker) for name, (field, marker) in OFFICIAL_FOLDERS.items()}


def check_model_folder_options(args: argparse.Namespace, needs: tuple[str, ...]) -> None:
    """``--model-path`` is a folder, and each official folder in ``needs`` is found in it or in its override.

    The folders are found by the factory's one path rule (:func:`stepaudio.assembly.find_model_folder`);
    only the marker files are looked at (nothing is loaded); the loaders check the rest.
    """
    hint = "pass the folder holding the official Step-Audio folders (or one made by `stepaudio make-fixtures DIR`)"
    check_input_dir(args.model_path, "--model-path", hint=hint)
    for name in needs:
        option = MODEL_FOLDERS[name][0]
        override = getattr(args, option[2:].replace("-", "_"), None)
        find_model_folder(name, args.model_path, override, names=OPTION_OF_SETTING)


def check_speech_options(args: argparse.Namespace) -> None:
    """``--speakers-dir``, ``--max-speech-seconds``, ``--seed`` and ``--device`` (checked, nothing loaded)."""
    from .device import resolve_device

    if args.speakers_dir is not None:
        check_input_dir(args.speakers_dir, "--speakers-dir", "a speakers folder (speakers_info.json + *_prompt.wav)")
    if args.max_speech_seconds is not None:
        check_float(args.max_speech_seconds, "--max-speech-seconds", minimum=0, exclusive_minimum=True)
    if args.seed is not None:
        check_int(args.seed, "--seed", minimum=0, maximum=MAX_SEED)
    resolve_device(args.device, name="--device")


def check_registered_speaker(speaker: str, speakers_dir: Path | None, option: str = "--speaker") -> None:
    """``speaker`` is a safe name listed in the speakers folder's ``speakers_info.json``."""
    from .tts.speakers import SPEAKERS_INFO_FILE, read_speakers_info

    check_safe_name(speaker, option)
    if speakers_dir is None:
        raise InvalidArgumentError(
            f"{option} {speaker!r} needs a speakers folder ({SPEAKERS_INFO_FILE} + {speaker}_prompt.wav) and "
            "none was found: pass --speakers-dir, put one at MODEL_PATH/speakers, or clone a voice "
            "(stepaudio tts --synthesis-type clone --prompt-wav CLIP --prompt-text TRANSCRIPT)",
            name=option,
            value=speaker,
        )
    try:
        registered = read_speakers_info(speakers_dir)
    except InputFileError:
        raise
    except FileNotFoundError as error:  # the folder has no speakers_info.json: the option names the wrong folder
        raise InputFileError(f"--speakers-dir: {error}", path=Path(speakers_dir)) from None
    if speaker not in registered:
        raise InvalidArgumentError(
            f"{option} {speaker!r} is not registered: {Path(speakers_dir) / SPEAKERS_INFO_FILE} lists "
            f"{', '.join(sorted(registered)) or 'no speakers'}; pick one of them, register the voice there with a "
            f"{speaker}_prompt.wav, or clone it (stepaudio tts --synthesis-type clone --prompt-wav CLIP "
            "--prompt-text TRANSCRIPT)",
            name=option,
            value=speaker,
        )
    prompt = Path(speakers_dir) / f"{speaker}_prompt.wav"
    if not prompt.is_file():
        raise InputFileError(
            f"{option} {speaker!r} is listed in {Path(speakers_dir) / SPEAKERS_INFO_FILE} but its prompt clip "
            f"{prompt} is missing; add the clip or remove the entry",
            path=prompt,
        )


def check_audio_file_option(value: str, option: str) -> float:
    """An existing, readable audio file (its header is read; nothing is decoded); returns its duration in seconds."""
    from .audio import audio_duration
    from .errors import AudioInputError

    path = check_input_file(value, option, "an audio file (wav, flac, mp3, ogg)")
    try:
        return audio_duration(path)
    except AudioInputError as error:
        raise InputFileError(f"{option} {error}", path=path) from error


#: ``ModelSettings`` field -> the option (argparse destination) that sets it, where a command has it.
_SETTING_OF_OPTION = {
    "device": "device",
    "dtype": "dtype",
    "attention": "attention",
    "speakers_dir": "speakers_dir",
    "tokenizer_path": "tokenizer_path",
    "chat_path": "llm_path",
    "tts_path": "tts_path",
    "editx_path": "editx_path",
    "max_speech_seconds": "max_speech_seconds",
    "chat_backend": "chat_backend",
    "tts_backend": "tts_backend",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "chat_quantization": "chat_quantization",
    "tts_quantization": "tts_quantization",
    "editx_backend": "editx_backend",
    "editx_quantization": "editx_quantization",
}
#: Settings whose errors are first found when the settings are made (the others are checked by the commands).
_BACKEND_SETTINGS = (
    "chat_backend",
    "tts_backend",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "gpu_memory_utilization",
    "chat_quantization",
    "tts_quantization",
    "editx_backend",
    "editx_quantization",
)


def model_settings_from_options(args: argparse.Namespace, **fixed: Any) -> ModelSettings:
    """The :class:`~stepaudio.assembly.ModelSettings` a command's options say (the options it does not have
    keep their defaults); ``fixed`` sets what the command decides itself, e.g. ``allow_unknown_tags``.

    Raises:
        InvalidArgumentError: a backend option refused by the settings, its message speaking in options
            (``--chat-backend must be ...``).
    """
    values = {field: getattr(args, option) for field, option in _SETTING_OF_OPTION.items() if hasattr(args, option)}
    try:
        return ModelSettings(**values, **fixed)
    except InvalidArgumentError as error:
        if error.name not in _BACKEND_SETTINGS:
            raise
        message = str(error)
        for field_name in _BACKEND_SETTINGS:  # speak in the options the user typed
            message = re.sub(rf"(?<![\w-]){field_name}\b", OPTION_OF_SETTING[field_name], message)
        option = OPTION_OF_SETTING[error.name]
        raise InvalidArgumentError(message, name=option, value=error.value) from None
