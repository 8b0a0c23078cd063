"""``stepaudio tts`` (and ``tts_inference.py``): synthesise speech with a registered speaker or a cloned voice."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..cli_options import add_model_folder_options, add_speech_options, default_speakers_dir

logger = logging.getLogger(__name__)

DEFAULT_TTS_TEXT = "（高兴1）你好，欢迎使用 Step-Audio 的语音合成。"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tts`` sub-command."""
    parser = subparsers.add_parser(
        "tts",
        help="text to speech with Step-Audio-TTS-3B (a registered speaker, or --synthesis-type clone)",
        description="Synthesise speech. --model-path is the folder holding Step-Audio-TTS-3B/ and "
        "Step-Audio-Tokenizer/ (or pass --tts-path / --tokenizer-path). Start the text with a tag such as "
        "(高兴1), (四川话), (RAP) or (哼唱) to choose emotion, dialect or style.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_folder_options(
        parser, "folder containing Step-Audio-TTS-3B and Step-Audio-Tokenizer (and speakers/)", with_llm=False
    )
    parser.add_argument("--output-path", required=True, help="folder to write the wav files to")
    parser.add_argument("--synthesis-type", choices=["tts", "clone"], default="tts")
    parser.add_argument("--text", default=DEFAULT_TTS_TEXT, help="text to speak (may start with a (tag))")
    parser.add_argument("--speaker", default="Tingting", help="registered speaker id (tts) or a name for the clone")
    parser.add_argument("--prompt-wav", default=None, help="voice prompt clip to clone (clone)")
    parser.add_argument("--prompt-text", default=None, help="transcript of --prompt-wav (clone)")
    parser.add_argument("--speed", type=float, default=1.0, help="tempo factor, pitch kept (default 1.0)")
    parser.add_argument("--volume", type=float, default=1.0, help="volume factor (default 1.0)")
    parser.add_argument("--stream", action="store_true", help="generate with the streaming path, printing chunk times")
    add_speech_options(parser)


def run(args: argparse.Namespace) -> int:
    import soundfile
    import torch

    from ..tokenizer import StepAudioTokenizer
    from .tts import StepAudioTTS

    if args.seed is not None:
        torch.manual_seed(args.seed)
    clone_dict = None
    if args.synthesis_type == "clone":
        if not args.prompt_wav or not args.prompt_text:
            print("error: --synthesis-type clone needs --prompt-wav and --prompt-text", file=sys.stderr)
            return 2
        clone_dict = {"speaker": args.speaker, "prompt_text": args.prompt_text, "wav_path": args.prompt_wav}
    model_path = Path(args.model_path)
    speakers_dir = default_speakers_dir(model_path, args.speakers_dir)
    tokenizer = StepAudioTokenizer(args.tokenizer_path or model_path / "Step-Audio-Tokenizer", device=args.device)
    tts = StepAudioTTS(
        args.tts_path or model_path,
        tokenizer,
        speakers_dir=speakers_dir,
        device=args.device,
        max_speech_seconds=args.max_speech_seconds,
    )
    speaker = None if clone_dict else args.speaker
    start = time.perf_counter()
    if args.stream:
        chunks = []
        for chunk in tts.stream(args.text, speaker, clone_dict, speed_ratio=args.speed, volume_ratio=args.volume):
            chunks.append(chunk)
            print(
                f"chunk {len(chunks)}: {chunk.shape[1] / 22050:.2f} s of audio at {time.perf_counter() - start:.2f} s"
            )
        wav = torch.cat(chunks, dim=1) if chunks else torch.zeros(1, 0)
        sample_rate = 22050
    else:
        wav, sample_rate = tts(args.text, speaker, clone_dict, speed_ratio=args.speed, volume_ratio=args.volume)
    output = Path(args.output_path)
    output.mkdir(parents=True, exist_ok=True)
    name = f"{args.speaker}_{args.synthesis_type}.wav"
    soundfile.write(output / name, wav[0].numpy(), sample_rate)
    seconds = wav.shape[1] / sample_rate
    elapsed = time.perf_counter() - start
    print(
        f"wrote {output / name}: {seconds:.2f} s of audio in {elapsed:.2f} s (RTF {elapsed / max(seconds, 1e-9):.2f})"
    )
    return 0
