"""``stepaudio chat`` (and ``offline_inference.py``): chat by text or audio, answer in text and optionally speech."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .assembly import ModelSettings
from .cli_options import (
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
from .errors import InvalidArgumentError, PromptError
from .validation import check_float, check_int, check_output_dir, check_text

if TYPE_CHECKING:
    from .llm.chat import StepAudioChat
    from .tts.tts import StepAudioTTS

logger = logging.getLogger(__name__)

#: ``--audio @previous`` means: the speech written for the previous turn (upstream's offline demo).
PREVIOUS_REPLY = "@previous"


class _AppendTurn(argparse.Action):
    """Collect ``--text`` and ``--audio`` values in command-line order as (kind, value) pairs."""

    def __call__(self, parser, namespace, values, option_string=None):
        turns = list(getattr(namespace, self.dest, None) or [])
        turns.append(("audio" if option_string == "--audio" else "text", values))
        setattr(namespace, self.dest, turns)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``chat`` sub-command."""
    parser = subparsers.add_parser(
        "chat",
        help="chat with Step-Audio (text or audio turns; with --output-path also speak the replies)",
        description="Chat with Step-Audio-Chat. Each --text/--audio is answered as its own turn, in order; without "
        "any, messages are read from standard input (one per line) as a multi-turn conversation. With "
        "--output-path, replies are also spoken by Step-Audio-TTS-3B and written as wav files.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_folder_options(
        parser, "Step-Audio-Chat folder, or the folder holding the official folders (and speakers/)", with_llm=True
    )
    parser.add_argument("--text", dest="turns", action=_AppendTurn, metavar="TEXT", help="a user text turn")
    parser.add_argument(
        "--audio",
        dest="turns",
        action=_AppendTurn,
        metavar="FILE",
        help=f"a user audio turn (wav/flac/mp3/ogg); {PREVIOUS_REPLY} = the speech written for the previous turn",
    )
    parser.add_argument("--output-path", default=None, help="also speak each reply and write OUTPUT_PATH/reply_N.wav")
    parser.add_argument("--speaker", default="Tingting", help="voice of the spoken replies (default Tingting)")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="reply length limit in tokens (default 512)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    add_speech_options(parser)
    parser.add_argument(
        "--dtype", default=None, help="dtype of the chat and TTS models: bf16, fp16 or fp32 (default: bf16 on GPU)"
    )
    parser.add_argument(
        "--attention", default="sdpa", choices=["sdpa", "flex", "eager"], help="attention backend of the chat and TTS"
    )
    add_backend_options(parser)
    add_common_options(parser)


def check_args(args: argparse.Namespace) -> None:
    """Every option, checked before anything is loaded (raises a UsageError naming the option)."""
    from .device import resolve_device, resolve_dtype

    speak = args.output_path is not None
    hears = any(kind == "audio" for kind, _ in args.turns or [])
    needs = (
        ("Step-Audio-Chat",)
        + (("Step-Audio-Tokenizer",) if speak or hears else ())
        + (("Step-Audio-TTS-3B",) if speak else ())
    )
    check_model_folder_options(args, needs=needs)
    check_speech_options(args)
    check_int(args.max_new_tokens, "--max-new-tokens", minimum=1)
    if not args.greedy:
        check_float(args.temperature, "--temperature", minimum=0, exclusive_minimum=True, hint="or pass --greedy")
        check_float(args.top_p, "--top-p", minimum=0, maximum=1.0, exclusive_minimum=True)
    if args.dtype is not None:
        resolve_dtype(args.dtype, resolve_device(args.device), name="--dtype")
    if args.system is not None:
        check_text(args.system, "--system")
    if speak:
        check_output_dir(args.output_path, "--output-path")
        check_registered_speaker(args.speaker, default_speakers_dir(args.model_path, args.speakers_dir))
    for position, (kind, value) in enumerate(args.turns or []):
        if kind == "text":
            check_text(value, "--text")
        elif value == PREVIOUS_REPLY:
            if not speak or position == 0:
                raise InvalidArgumentError(
                    f"--audio {PREVIOUS_REPLY} means the speech of the previous reply, so it needs --output-path "
                    "(to speak the replies) and a --text or --audio turn before it",
                    name="--audio",
                    value=value,
                )
        else:
            check_audio_file_option(value, "--audio")


def _stream_reply(chat, messages: list[dict], args: argparse.Namespace) -> str:
    """Print ``assistant: `` and the reply as it is generated; a prompt that cannot be used fails before printing."""
    pieces = []
    stream = chat.stream(  # checks the messages and their length (from the audio's duration) right here
        messages,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        do_sample=not args.greedy,
    )
    sys.stdout.write("assistant: ")
    for piece in stream:
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(pieces)


def _stdin_lines():
    """Lines of standard input; bytes that are not UTF-8 become unpaired surrogates, refused per line by check_text."""
    import io

    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text-only stream (tests, notebooks)
        return sys.stdin
    return io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape")


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The models' settings the options say (the one place this command turns options into settings)."""
    return model_settings_from_options(args, allow_unknown_tags=True)  # replies are the model's text, as upstream


def load_chat_models(args: argparse.Namespace) -> tuple[StepAudioChat, StepAudioTTS | None]:
    """The chat model (hearing audio if a turn is audio) and, with ``--output-path``, the TTS; built by the factory."""
    from .assembly import load_chat, load_models, load_tokenizer

    settings = model_settings(args)
    if args.output_path is not None:
        models = load_models(args.model_path, settings)
        return models.chat, models.tts
    if any(kind == "audio" for kind, _ in args.turns or []):
        return load_chat(args.model_path, settings, tokenizer=load_tokenizer(args.model_path, settings)), None
    return load_chat(args.model_path, settings), None


def run(args: argparse.Namespace) -> int:
    check_args(args)

    import torch

    from .audio import write_audio
    from .tts.text import has_speakable_text

    if args.seed is not None:
        torch.manual_seed(args.seed)
    turns = args.turns or []
    speak = args.output_path is not None
    chat, tts = load_chat_models(args)
    system = [{"role": "system", "content": args.system}] if args.system else []

    if not turns:
        history = list(system)
        print("Type a message and press Enter (Ctrl-D to quit).", file=sys.stderr)
        for number, line in enumerate(_stdin_lines(), start=1):
            if not line.strip():
                continue
            try:  # a bad line is reported and skipped; the conversation goes on
                check_text(line.strip(), f"line {number} of standard input")
                messages = history + [{"role": "user", "content": line.strip()}]
                reply = _stream_reply(chat, messages, args)
            except PromptError as error:  # e.g. the history outgrew the model's context
                print(f"stepaudio chat: error: {error}", file=sys.stderr)
                continue
            except InvalidArgumentError as error:
                print(f"stepaudio chat: error: {error}; the line was skipped", file=sys.stderr)
                continue
            history = messages + [{"role": "assistant", "content": reply}]
        return 0

    output = Path(args.output_path) if speak else None
    previous_wav: Path | None = None
    for index, (kind, value) in enumerate(turns):
        if kind == "audio":
            if value == PREVIOUS_REPLY:
                if previous_wav is None:
                    raise PromptError(
                        f"turn {index}: --audio {PREVIOUS_REPLY} has no speech to use, because the previous reply "
                        "had nothing to speak"
                    )
                value = str(previous_wav)
            content = {"type": "audio", "audio": value}
            print(f"user (audio): {value}")
        else:
            content = value
            print(f"user: {value}")
        reply = _stream_reply(chat, system + [{"role": "user", "content": content}], args)
        if tts is not None and output is not None:
            if not has_speakable_text(reply):
                logger.warning("turn %d: the reply has nothing to speak (no letters or digits); no speech", index)
                previous_wav = None
                continue
            wav, sample_rate = tts(reply, args.speaker, progress=True)
            previous_wav = write_audio(output / f"reply_{index}.wav", wav[0], sample_rate)
            print(f"speech: {previous_wav} ({wav.shape[1] / sample_rate:.2f} s)")
    return 0
