"""``stepaudio serve``: the OpenAI-compatible API, the real-time WebSocket + page and (``--ui``) the Gradio demo
on one FastAPI app served by uvicorn; ``--editx`` adds Step-Audio-EditX (cloning and ``/v1/audio/edits``).

EditX is opt-in: its Step-1 3B language model is as large as the TTS's (about 7 GB more in bf16), and a
model folder holding ``Step-Audio-EditX`` should not silently double what the server needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math

from ..assembly import EDITX_FOLDER
from ..cli_options import OPTION_OF_SETTING, check_model_folder_options
from ..errors import InvalidArgumentError
from ..realtime.cli import add_arguments, check_args, model_settings

logger = logging.getLogger(__name__)

#: The API's ServerSettings field -> the option that sets it, so its errors name what the user typed.
API_OPTION_OF_FIELD = {
    "api_key": "--api-key",
    "max_queued_requests": "--max-queued-requests",
    "max_audio_seconds": "--max-audio-seconds",
    "max_body_bytes": "--max-body-mb",
    "sample_rate": "--sample-rate",
    "workers": "--workers",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the OpenAI-compatible API, real-time voice chat and (--ui) a Gradio demo on one port",
        description="Serve Step-Audio on one HTTP port: the OpenAI audio API (/v1/audio/speech, "
        "/v1/chat/completions, /v1/audio/transcriptions, /v1/models, /health), the real-time WebSocket /ws with its "
        "page at /realtime/, and with --ui a Gradio demo at /ui/. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    add_arguments(parser, default_port=8000)
    parser.add_argument("--ui", action="store_true", help="also serve the Gradio demo at /ui/ (needs stepaudio[ui])")
    parser.add_argument(
        "--editx",
        action="store_true",
        help="also load Step-Audio-EditX (found in MODEL_PATH or --editx-path; its 3B LM needs about 7 GB more): "
        "model step-audio-editx on /v1/audio/speech (cloning from ref_audio) and POST /v1/audio/edits",
    )
    parser.add_argument(
        "--editx-path", default=None, help="Step-Audio-EditX folder (default: found in MODEL_PATH); implies --editx"
    )
    parser.add_argument(
        "--editx-backend",
        default=None,
        metavar="BACKEND",
        help="Step-Audio-EditX's LM on: transformers (default), static, compiled, vllm or a vllm serve URL",
    )
    parser.add_argument(
        "--editx-quantization",
        default=None,
        metavar="METHOD",
        help="load Step-Audio-EditX's LM quantized: int8 or int4 (bitsandbytes); awq-4bit with --editx-backend vllm",
    )
    parser.add_argument("--no-realtime", action="store_true", help="do not serve the real-time WebSocket and page")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/* requests")
    parser.add_argument(
        "--max-queued-requests", type=int, default=16, help="API requests waiting for a worker; more get 429 (16)"
    )
    parser.add_argument(
        "--max-audio-seconds", type=float, default=120.0, help="seconds of input audio one API request may hold (120)"
    )
    parser.add_argument("--max-body-mb", type=float, default=25.0, help="largest API request body in MiB (25)")
    parser.add_argument(
        "--sample-rate", type=int, default=24000, help="rate of the API's audio output (24000, as OpenAI; 22050 native)"
    )
    parser.set_defaults(func=run)


def build_api_settings(args: argparse.Namespace):
    """The API's :class:`~stepaudio.server.settings.ServerSettings` of the options; errors name the option."""
    from .settings import ServerSettings

    body = args.max_body_mb
    max_body_bytes = int(body * 1024 * 1024) if isinstance(body, (int, float)) and math.isfinite(body) else body
    try:
        return ServerSettings(
            api_key=args.api_key,
            workers=args.workers,
            max_queued_requests=args.max_queued_requests,
            max_audio_seconds=args.max_audio_seconds,
            max_body_bytes=max_body_bytes,
            sample_rate=args.sample_rate,
        )
    except InvalidArgumentError as error:
        option = API_OPTION_OF_FIELD.get(error.name or "")
        if option is None:
            raise
        message = str(error).replace(error.name, option, 1)
        if option == "--max-body-mb":
            message = f"--max-body-mb must be a positive number of MiB, got {body}"
        raise InvalidArgumentError(message, name=option, value=getattr(args, option[2:].replace("-", "_"))) from None


def check_ui_available() -> None:
    """``--ui`` needs Gradio (the ``ui`` extra): refuse before loading the models when it is missing."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise InvalidArgumentError(
            "--ui needs Gradio, which is not installed: pip install 'stepaudio[ui]' (or drop --ui)",
            name="--ui",
            value=True,
        )


def add_front_page(app, target: str) -> None:
    """``GET /`` redirects to the page a person opening the server's address wants (the demo or the voice chat)."""
    from fastapi.responses import RedirectResponse

    app.add_api_route("/", lambda: RedirectResponse(target), methods=["GET"], include_in_schema=False)


def wants_editx(args: argparse.Namespace) -> bool:
    """Whether Step-Audio-EditX is to be served: ``--editx``, or its folder given with ``--editx-path``."""
    return bool(args.editx or args.editx_path is not None)


def run(args: argparse.Namespace) -> int:
    config, server_config = check_args(args)  # the real-time settings, the folders, the speaker, the port
    for option in ("editx_backend", "editx_quantization"):
        value = getattr(args, option)
        if value is not None and not wants_editx(args):
            detail = f"only applies with --editx (or --editx-path), got {value!r}"
            raise InvalidArgumentError.about("--" + option.replace("_", "-"), detail, value)
    if wants_editx(args):
        check_model_folder_options(args, needs=(EDITX_FOLDER,))
    settings = build_api_settings(args)
    if args.ui:
        check_ui_available()

    import torch

    from ..assembly import load_editx, load_pipeline
    from ..realtime.server import AsgiServer, serve_until_interrupted
    from .app import create_app

    if args.seed is not None:
        torch.manual_seed(args.seed)
    # Clones arrive with requests from anyone: their features are not kept on disk.
    models = dataclasses.replace(model_settings(args), cache_cloned_voices=False)
    pipeline = load_pipeline(args.model_path, models)
    # One audio tokenizer for every model: EditX shares the pipeline's.
    editx = (
        load_editx(args.model_path, models, pipeline.tokenizer, names=OPTION_OF_SETTING) if wants_editx(args) else None
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.api_key is None:
        logger.warning("serving on %s without --api-key: anyone who reaches it can use the models", args.host)
    front_page = "/ui/" if args.ui else None if args.no_realtime else "/realtime/"
    app = create_app(
        pipeline,
        settings,
        editx=editx,
        realtime=not args.no_realtime,
        realtime_options={"config": config, "server_config": server_config},
        ui=args.ui,
        extra=None if front_page is None else lambda app: add_front_page(app, front_page),
    )
    # Open Gradio pages keep a connection until told to stop: shutdown waits for them at most this long.
    server = AsgiServer(
        app, args.host, server_config.port, ws_max_size=4 * server_config.max_message_bytes, graceful_timeout_s=5.0
    )

    def announce(port: int) -> None:
        base = f"http://{args.host}:{port}"
        print(f"OpenAI-compatible API at {base}/v1", flush=True)
        if editx is not None:
            print(
                f"Step-Audio-EditX: model {settings.editx_model} on {base}/v1/audio/speech (with ref_audio) and "
                f"{base}/v1/audio/edits",
                flush=True,
            )
        if not args.no_realtime:
            print(f"real-time voice chat: open {base}/realtime/", flush=True)
        if args.ui:
            print(f"Gradio demo: open {base}/ui/", flush=True)
        print("Ctrl-C to stop", flush=True)

    serve_until_interrupted(server, announce)
    return 0


__all__ = ["register", "run", "build_api_settings", "wants_editx"]
