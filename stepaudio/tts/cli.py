"""``stepaudio tts`` (and ``tts_inference.py``): synthesise speech with a registered speaker or a cloned voice."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..assembly import ModelSettings
from ..cli_options import (
    add_backend_options,
    add_common_options,
    add_model_folder_options,
    add_speech_options,
    check_audio_file_option,
    check_model_folder_options,
    check_registered_speaker,
    check_speech_options,
    default_speakers_dir,
    model_settings_from_options,
)
from ..errors import InvalidArgumentError, PromptError
from ..validation import check_output_dir, check_safe_name, check_text

logger = logging.getLogger(__name__)

DEFAULT_TTS_TEXT = "（高兴1）你好，欢迎使用 Step-Audio 的语音合成。"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tts`` sub-command."""
    parser = subparsers.add_parser(
        "tts",
        help="text to speech with Step-Audio-TTS-3B (a registered speaker, or --synthesis-type clone)",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


DESCRIPTION = (
    "Synthesise speech and write OUTPUT_PATH/SPEAKER_TYPE.wav. --model-path is the folder holding "
    "Step-Audio-TTS-3B/ and Step-Audio-Tokenizer/ (or pass --tts-path / --tokenizer-path). Start the text with a "
    "tag such as (高兴1), (四川话), (RAP) or (哼唱) to choose emotion, dialect or style."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_folder_options(
        parser, "folder containing Step-Audio-TTS-3B and Step-Audio-Tokenizer (and speakers/)", with_llm=False
    )
    parser.add_argument("--output-path", required=True, help="folder to write the wav file to (created if needed)")
    parser.add_argument("--synthesis-type", choices=["tts", "clone"], default="tts")
    parser.add_argument("--text", default=DEFAULT_TTS_TEXT, help="text to speak (may start with a (tag))")
    parser.add_argument(
        "--speaker",
        default="Tingting",
        help="registered speaker id (tts) or a name for the cloned voice (clone); it names the output file",
    )
    parser.add_argument("--prompt-wav", default=None, help="voice prompt clip to clone (clone only)")
    parser.add_argument("--prompt-text", default=None, help="transcript of --prompt-wav (clone only)")
    parser.add_argument("--speed", type=float, default=1.0, help="tempo factor 0.25-4, pitch kept (default 1.0)")
    parser.add_argument("--volume", type=float, default=1.0, help="volume factor 0-10 (default 1.0)")
    parser.add_argument(
        "--allow-unknown-tags",
        action="store_true",
        help="pass a leading (tag) the model was not trained on to it anyway, as the original does",
    )
    parser.add_argument("--stream", action="store_true", help="generate with the streaming path, printing chunk times")
    add_speech_options(parser)
    add_backend_options(parser, chat=False)
    add_common_options(parser)


def output_file(args: argparse.Namespace) -> Path:
    """``OUTPUT_PATH/SPEAKER_TYPE.wav``; the speaker name was checked to be a plain file-name part."""
    return Path(args.output_path) / f"{args.speaker}_{args.synthesis_type}.wav"


def check_args(args: argparse.Namespace) -> None:
    """Every option, checked before anything is loaded (raises a UsageError naming the option)."""
    from .postprocess import check_speed_ratio, check_volume_ratio
    from .text import check_tts_text

    check_model_folder_options(args, needs=("Step-Audio-TTS-3B", "Step-Audio-Tokenizer"))
    check_speech_options(args)
    check_output_dir(args.output_path, "--output-path")
    try:
        check_tts_text(args.text, name="--text", allow_unknown_tags=args.allow_unknown_tags)
    except PromptError as error:  # found on the command line, before any work: a usage error
        message = str(error).replace("(allow_unknown_tags=True)", "(--allow-unknown-tags)")
        raise InvalidArgumentError(f"--text: {message}", name="--text", value=args.text) from None
    check_safe_name(args.speaker, "--speaker", hint="it names the output file SPEAKER_TYPE.wav")
    check_speed_ratio(args.speed, "--speed")
    check_volume_ratio(args.volume, "--volume")
    if args.synthesis_type == "clone":
        if not args.prompt_wav or args.prompt_text is None:
            raise InvalidArgumentError(
                "--synthesis-type clone needs --prompt-wav CLIP (3-10 s of the voice) and --prompt-text TRANSCRIPT "
                "(what is said in it)",
                name="--synthesis-type",
                value="clone",
            )
        check_audio_file_option(args.prompt_wav, "--prompt-wav")
        check_text(args.prompt_text, "--prompt-text")
    else:
        given = [option for option in ("prompt_wav", "prompt_text") if getattr(args, option) is not None]
        if given:
            options = " and ".join("--" + option.replace("_", "-") for option in given)
            raise InvalidArgumentError(
                f"{options} only apply to --synthesis-type clone; add --synthesis-type clone to clone that voice, "
                f"or drop {options} to speak with the registered speaker {args.speaker!r}",
                name="--synthesis-type",
                value=args.synthesis_type,
            )
        check_registered_speaker(args.speaker, default_speakers_dir(args.model_path, args.speakers_dir))


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The models' settings the options say (the one place this command turns options into settings)."""
    return model_settings_from_options(args, allow_unknown_tags=args.allow_unknown_tags)


def run(args: argparse.Namespace) -> int:
    check_args(args)

    import torch

    from ..assembly import load_tts
    from ..audio import write_audio
    from .tts import SAMPLE_RATE

    if args.seed is not None:
        torch.manual_seed(args.seed)
    clone_dict = None
    if args.synthesis_type == "clone":
        clone_dict = {"speaker": args.speaker, "prompt_text": args.prompt_text, "wav_path": args.prompt_wav}
    tts = load_tts(args.model_path, model_settings(args))
    speaker = None if clone_dict else args.speaker
    start = time.perf_counter()
    if args.stream:
        chunks = []
        for chunk in tts.stream(args.text, speaker, clone_dict, speed_ratio=args.speed, volume_ratio=args.volume):
            chunks.append(chunk)
            print(
                f"chunk {len(chunks)}: {chunk.shape[1] / SAMPLE_RATE:.2f} s of audio at "
                f"{time.perf_counter() - start:.2f} s"
            )
        wav = torch.cat(chunks, dim=1) if chunks else torch.zeros(1, 0)
        sample_rate = SAMPLE_RATE
    else:
        wav, sample_rate = tts(
            args.text, speaker, clone_dict, speed_ratio=args.speed, volume_ratio=args.volume, progress=True
        )
    path = write_audio(output_file(args), wav[0], sample_rate)
    seconds = wav.shape[1] / sample_rate
    elapsed = time.perf_counter() - start
    print(f"wrote {path}: {seconds:.2f} s of audio in {elapsed:.2f} s (RTF {elapsed / max(seconds, 1e-9):.2f})")
    return 0
