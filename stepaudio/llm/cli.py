"""``stepaudio chat``: talk to Step-Audio-Chat from the terminal (text turns; streaming output)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``chat`` sub-command."""
    parser = subparsers.add_parser(
        "chat",
        help="chat with Step-Audio-Chat (one turn with --text, else an interactive multi-turn session)",
        description="Chat with Step-Audio-Chat. With --text, answer one message and exit; otherwise read "
        "messages from standard input, one per line, keeping the conversation history.",
    )
    parser.add_argument("--model-path", required=True, help="Step-Audio-Chat folder, or the folder containing it")
    parser.add_argument("--text", action="append", help="a user message (repeat for several single-turn prompts)")
    parser.add_argument("--system", default=None, help="system prompt of the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="reply length limit in tokens (default 512)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "flex", "eager"], help="attention backend")
    parser.set_defaults(func=run)


def _reply(chat, history: list[dict], args: argparse.Namespace) -> str:
    pieces = []
    for piece in chat.stream(
        history,
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
    import torch

    from .chat import StepAudioChat

    if args.seed is not None:
        torch.manual_seed(args.seed)
    chat = StepAudioChat(args.model_path, device=args.device, dtype=args.dtype, attn_implementation=args.attention)
    system = [{"role": "system", "content": args.system}] if args.system else []
    if args.text:
        for text in args.text:
            print(f"user: {text}")
            sys.stdout.write("assistant: ")
            _reply(chat, system + [{"role": "user", "content": text}], args)
        return 0
    history = list(system)
    print("Type a message and press Enter (Ctrl-D to quit).", file=sys.stderr)
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        history.append({"role": "user", "content": text})
        sys.stdout.write("assistant: ")
        history.append({"role": "assistant", "content": _reply(chat, history, args)})
    return 0
