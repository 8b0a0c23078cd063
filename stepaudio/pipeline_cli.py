"""``stepaudio chat`` (and ``offline_inference.py``): chat by text or audio, answer in text and optionally speech."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_options import add_model_folder_options, add_speech_options, default_speakers_dir

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
    parser.add_argument("--dtype", default=None, help="LLM dtype: bf16, fp16 or fp32 (default: bf16 on GPU)")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "flex", "eager"], help="attention backend")


def _stream_reply(chat, messages: list[dict], args: argparse.Namespace) -> str:
    pieces = []
    for piece in chat.stream(
        messages,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        do_sample=not args.greedy,
    ):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(pieces)


def run(args: argparse.Namespace) -> int:
    import soundfile
    import torch

    from .llm.chat import StepAudioChat

    if args.seed is not None:
        torch.manual_seed(args.seed)
    model_path = Path(args.model_path)
    turns = args.turns or []
    tokenizer_path = Path(args.tokenizer_path or model_path / "Step-Audio-Tokenizer")
    speak = args.output_path is not None
    tts = None
    if speak or any(kind == "audio" for kind, _ in turns):
        from .tokenizer import StepAudioTokenizer

        tokenizer = StepAudioTokenizer(tokenizer_path, device=args.device)
        chat = StepAudioChat(
            args.llm_path or model_path,
            device=args.device,
            dtype=args.dtype,
            attn_implementation=args.attention,
            audio_tokenizer=tokenizer,
        )
        if speak:
            from .tts.tts import StepAudioTTS

            speakers_dir = default_speakers_dir(model_path, args.speakers_dir)
            tts = StepAudioTTS(
                args.tts_path or model_path,
                tokenizer,
                speakers_dir=speakers_dir,
                device=args.device,
                max_speech_seconds=args.max_speech_seconds,
            )
    else:
        chat = StepAudioChat(
            args.llm_path or model_path, device=args.device, dtype=args.dtype, attn_implementation=args.attention
        )
    system = [{"role": "system", "content": args.system}] if args.system else []

    if not turns:
        history = list(system)
        print("Type a message and press Enter (Ctrl-D to quit).", file=sys.stderr)
        for line in sys.stdin:
            if line.strip():
                history.append({"role": "user", "content": line.strip()})
                sys.stdout.write("assistant: ")
                history.append({"role": "assistant", "content": _stream_reply(chat, history, args)})
        return 0

    output = Path(args.output_path) if speak else None
    previous_wav: Path | None = None
    for index, (kind, value) in enumerate(turns):
        if kind == "audio":
            if value == PREVIOUS_REPLY:
                if previous_wav is None:
                    print(f"error: --audio {PREVIOUS_REPLY} needs a spoken reply before it", file=sys.stderr)
                    return 2
                value = str(previous_wav)
            content = {"type": "audio", "audio": value}
            print(f"user (audio): {value}")
        else:
            content = value
            print(f"user: {value}")
        sys.stdout.write("assistant: ")
        reply = _stream_reply(chat, system + [{"role": "user", "content": content}], args)
        if tts is not None and output is not None:
            if not reply.strip():
                logger.warning("turn %d: the reply is empty, so there is nothing to speak", index)
                continue
            wav, sample_rate = tts(reply, args.speaker, progress=True)
            output.mkdir(parents=True, exist_ok=True)
            previous_wav = output / f"reply_{index}.wav"
            soundfile.write(previous_wav, wav[0].numpy(), sample_rate)
            print(f"speech: {previous_wav} ({wav.shape[1] / sample_rate:.2f} s)")
    return 0
