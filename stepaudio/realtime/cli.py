"""``stepaudio serve-realtime``: the realtime voice WebSocket server with its browser page."""

from __future__ import annotations

import argparse
import logging
import re
from typing import TYPE_CHECKING

from ..assembly import ModelSettings
from ..cli_options import (
    add_backend_options,
    add_common_options,
    add_model_folder_options,
    add_speech_options,
    check_model_folder_options,
    check_registered_speaker,
    check_speech_options,
    default_speakers_dir,
    model_settings_from_options,
)
from ..errors import RealtimeConfigError

if TYPE_CHECKING:
    from .config import RealtimeConfig
    from .server import ServerConfig
logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve-realtime`` sub-command."""
    parser = subparsers.add_parser(
        "serve-realtime",
        help="serve real-time voice chat over WebSocket, with a browser page",
        description="Serve real-time voice conversations: a WebSocket endpoint at /ws (protocol: "
        "stepaudio/realtime/protocol.md) and a browser page at /. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser, default_port: int = 8765) -> None:
    """The options of ``serve-realtime``; ``stepaudio serve`` takes them too (with its own default port)."""
    add_model_folder_options(
        parser, "the folder holding Step-Audio-Chat, Step-Audio-TTS-3B, Step-Audio-Tokenizer (and speakers/)", True
    )
    add_speech_options(parser)
    parser.add_argument("--speaker", default="Tingting", help="voice of the real-time replies (default Tingting)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, local only)")
    parser.add_argument("--port", type=int, default=default_port, help=f"TCP port (default {default_port})")
    parser.add_argument("--workers", type=int, default=1, help="model jobs run at once across sessions (default 1)")
    parser.add_argument("--max-sessions", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024, help="client message limit (64 KiB)")
    parser.add_argument("--idle-timeout", type=float, default=60.0, help="close silent connections after N s (60)")
    parser.add_argument(
        "--max-input-speed",
        type=float,
        default=1.5,
        help="seconds of audio a session may send per second; the rest is dropped (1.5)",
    )
    parser.add_argument(
        "--input-burst", type=float, default=2.0, help="seconds of audio a session may send at once above that (2.0)"
    )
    parser.add_argument("--pause-ms", type=int, default=200, help="pause that starts a speculative reply (200)")
    parser.add_argument("--end-of-turn-ms", type=int, default=600, help="pause that ends the user turn (600)")
    parser.add_argument("--no-speculation", action="store_true", help="generate replies only at the end of turn")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="reply length limit in tokens (256)")
    parser.add_argument("--context-tokens", type=int, default=3000, help="history token budget (3000)")
    add_backend_options(parser)
    add_common_options(parser)


# RealtimeConfig / ServerConfig field -> the option that sets it, so their errors name what the user typed.
OPTION_OF_FIELD = {
    "speaker": "--speaker",
    "pause_ms": "--pause-ms",
    "end_of_turn_ms": "--end-of-turn-ms",
    "max_new_tokens": "--max-new-tokens",
    "context_token_budget": "--context-tokens",
    "host": "--host",
    "port": "--port",
    "max_message_bytes": "--max-message-bytes",
    "idle_timeout_s": "--idle-timeout",
    "max_sessions": "--max-sessions",
    "workers": "--workers",
    "max_input_speed": "--max-input-speed",
    "input_burst_s": "--input-burst",
}


def build_configs(args: argparse.Namespace) -> tuple[RealtimeConfig, ServerConfig]:
    """The session and server settings of the options, checked; errors name the option."""
    from .config import RealtimeConfig
    from .server import ServerConfig

    try:
        config = RealtimeConfig(
            speaker=args.speaker,
            pause_ms=args.pause_ms,
            end_of_turn_ms=args.end_of_turn_ms,
            speculative=not args.no_speculation,
            max_new_tokens=args.max_new_tokens,
            context_token_budget=args.context_tokens,
        )
        server_config = ServerConfig(
            host=args.host,
            port=args.port,
            max_message_bytes=args.max_message_bytes,
            idle_timeout_s=args.idle_timeout,
            max_sessions=args.max_sessions,
            workers=args.workers,
            max_input_speed=args.max_input_speed,
            input_burst_s=args.input_burst,
        )
    except RealtimeConfigError as error:
        option = OPTION_OF_FIELD.get(error.name or "")
        if option is None:
            raise
        message = str(error)
        for field_name, field_option in OPTION_OF_FIELD.items():  # speak in the options the user typed
            message = re.sub(rf"(?<![\w-]){field_name}\b", field_option, message)
        raise RealtimeConfigError(message, name=option, value=error.value) from None
    return config, server_config


def check_args(args: argparse.Namespace) -> tuple[RealtimeConfig, ServerConfig]:
    """Every option, the speaker and the port, checked before any model is loaded."""
    from .server import check_bindable

    check_model_folder_options(args, needs=("Step-Audio-Chat", "Step-Audio-TTS-3B", "Step-Audio-Tokenizer"))
    check_speech_options(args)
    config, server_config = build_configs(args)
    if server_config.port == 0:
        raise RealtimeConfigError("--port must be a port number from 1 to 65535, got 0", name="--port", value=0)
    check_registered_speaker(args.speaker, default_speakers_dir(args.model_path, args.speakers_dir))
    check_bindable(server_config.host, server_config.port, "--host", "--port")
    return config, server_config


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The models' settings the options say (the one place this command turns options into settings)."""
    return model_settings_from_options(args, allow_unknown_tags=True)  # replies are the model's text, as upstream


def run(args: argparse.Namespace) -> int:
    config, server_config = check_args(args)

    import torch

    from ..assembly import load_pipeline
    from .server import RealtimeServer, serve_until_interrupted

    if args.seed is not None:
        torch.manual_seed(args.seed)
    pipeline = load_pipeline(args.model_path, model_settings(args))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "serving on %s: the realtime server has no authentication; anyone who reaches it can talk", args.host
        )
    server = RealtimeServer(pipeline, config, server_config)
    serve_until_interrupted(server, lambda port: print(f"open http://{args.host}:{port}/ (Ctrl-C to stop)", flush=True))
    return 0
