"""Benchmark of Step-Audio-EditX speed: first-audio latency and RTF of clone, offline vs streamed, and of token2wav.

Random weights (speed does not depend on them), measured side by side in one process (alternating
repeats, the best repeat counts), so the ratios are not skewed by other load on the machine.

Sizes:

* ``tiny``: the test fixture (tiny Step-1 LM, tiny 24 kHz decoder);
* ``official``: the LM in the Step-Audio-EditX / TTS-3B shape (3072 wide, 48 heads / 4 KV groups, vocabulary
  74752) with ``--lm-layers`` of its 32 layers (all 32 on a GPU; few on a CPU), and the 24 kHz decoder with
  the published hyper-parameters (``OFFICIAL_HPARAMS_24K``: 512-wide encoder, 16-layer DiT, HiFT 512).  The
  ``<|EOT|>`` row of the random LM head is zeroed so every run generates ``--seconds`` of speech.

The prompt clip (``--prompt-seconds`` of a voiced tone) goes through the tiny fixture tokenizer and CAM++ in
every size (the official tokenizer's cost is the same for both paths and is measured by benchmarks/tokenizer.py).

Rows (``first_s``: seconds from the call to the first audio; ``RTF``: total seconds / audio seconds):

* ``LM codes``: ``generate_codes`` alone (the clone prompt), for reference;
* ``token2wav offline`` / ``offline chunked`` / ``streamed``: the decoder on ready codes: full attention (what
  ``clone()`` uses), the stream's chunked attention, and the stream fed group by group;
* ``clone offline`` (``clone()``: the first audio is the whole clip) and ``clone streamed``
  (``clone_stream()``: the decoder runs while the LM generates).

    python benchmarks/editx.py                                   # tiny + official (2 LM layers), CPU
    python benchmarks/editx.py --sizes official --lm-layers 32 --device cuda --seconds 10
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stepaudio.cosyvoice.config import parse_recipe  # noqa: E402
from stepaudio.cosyvoice.frontend import CampPlusSpeakerEncoder  # noqa: E402
from stepaudio.cosyvoice2 import CosyVoice2Decoder  # noqa: E402
from stepaudio.cosyvoice2.builder import build_24k_recipe  # noqa: E402
from stepaudio.editx import StepAudioEditX  # noqa: E402
from stepaudio.editx.decoder import CosyVoice2SpeechDecoder  # noqa: E402
from stepaudio.editx.prompts import build_clone_prompt_ids, clone_speaker_id  # noqa: E402
from stepaudio.llm.backends import StaticCacheBackend, TransformersBackend  # noqa: E402
from stepaudio.llm.configuration import STEP_AUDIO_TTS_3B_CONFIG, Step1Config  # noqa: E402
from stepaudio.llm.modeling import Step1ForCausalLM  # noqa: E402
from stepaudio.llm.text_tokenizer import EOT_ID  # noqa: E402
from stepaudio.testing.cosyvoice2_fixture import OFFICIAL_HPARAMS_24K, recipe_text_24k  # noqa: E402
from stepaudio.testing.editx_fixture import build_tiny_editx_checkpoint  # noqa: E402
from stepaudio.testing.tokenizer_fixture import build_tiny_tokenizer_checkpoint  # noqa: E402
from stepaudio.tokenizer import StepAudioTokenizer  # noqa: E402

PROMPT_RATE = 16000
TEXT = "hello there, this is a benchmark sentence"
PROMPT_TEXT = "a short prompt clip"


def _voice(seconds: float) -> np.ndarray:
    t = np.arange(int(PROMPT_RATE * seconds)) / PROMPT_RATE
    return (0.9 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _official_decoder(device: torch.device, steps: int, campplus: Path) -> CosyVoice2SpeechDecoder:
    """The 24 kHz decoder with the published sizes and random weights (a voiced random vocoder, as the fixture)."""
    torch.manual_seed(0)
    built = build_24k_recipe(parse_recipe(recipe_text_24k(OFFICIAL_HPARAMS_24K, label="official size")))
    with torch.no_grad():
        built.hift.f0_predictor.classifier.bias.fill_(150.0)
        built.hift.conv_post.parametrizations.weight.original0.mul_(0.3)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    decoder = CosyVoice2Decoder(
        built.flow, built.hift, built.mel_config, CampPlusSpeakerEncoder(campplus), device, dtype, n_timesteps=steps
    )
    return CosyVoice2SpeechDecoder(decoder)


def _official_lm(layers: int, device: torch.device, backend: str) -> TransformersBackend | StaticCacheBackend:
    """A random LM of the TTS-3B shape with ``layers`` layers (peaked logits, no <|EOT|>)."""
    config = Step1Config(**{**STEP_AUDIO_TTS_3B_CONFIG, "num_hidden_layers": layers, "max_seq_len": 8192})
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Step1ForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaked next-token distributions, like a trained model's
        model.lm_head.weight[EOT_ID].zero_()  # never stops early: every run makes --seconds of speech
    if backend == "static":
        return StaticCacheBackend(model, max_len=4096, cuda_graphs=device.type == "cuda")
    return TransformersBackend(model, pad_token_id=0, thread_name="bench-editx-generate")


def _timed(run: Callable[[], Iterator[torch.Tensor]]) -> tuple[float, float, int]:
    """``(seconds to the first non-empty chunk, total seconds, samples)`` of an iterator of waveform chunks."""
    start = time.perf_counter()
    first, samples = None, 0
    for chunk in run():
        if first is None and chunk.shape[-1]:
            first = time.perf_counter() - start
        samples += chunk.shape[-1]
    total = time.perf_counter() - start
    return (total if first is None else first), total, samples


def _once(value: Callable[[], torch.Tensor]) -> Callable[[], Iterator[torch.Tensor]]:
    def run() -> Iterator[torch.Tensor]:
        yield value()

    return run


def _measure(editx: StepAudioEditX, prompt_seconds: float, repeats: int) -> list[tuple[str, float, float, float]]:
    """Rows ``(path, audio seconds, first-audio seconds, total seconds)``, best of ``repeats`` alternating runs."""
    clip = _voice(prompt_seconds)
    prepared = editx.prepare_audio(clip, PROMPT_RATE)
    decoder = editx.decoder
    prompt = decoder.prompt_features(prepared.waveform, prepared.sample_rate)
    prompt_codes = [token - 65536 for token in prepared.audio_ids]
    speaker = clone_speaker_id(PROMPT_TEXT, clip[None])
    prompt_ids = build_clone_prompt_ids(editx.text_tokenizer, speaker, PROMPT_TEXT, prepared.audio_ids, TEXT)
    room = int(editx.max_speech_seconds * 41.6666667)

    codes: list[int] = []

    def lm() -> Iterator[torch.Tensor]:
        codes[:] = editx.generate_codes(prompt_ids, room)
        yield torch.zeros(1, 0)

    def streamed_decode() -> Iterator[torch.Tensor]:
        with decoder.stream(prompt_codes, prompt) as session:
            for start in range(0, len(codes), 5):
                yield session.feed(codes[start : start + 5])
            yield session.close()

    paths: dict[str, Callable[[], Iterator[torch.Tensor]]] = {
        "LM codes": lm,
        "token2wav offline": _once(lambda: decoder.decode(codes, prompt_codes, prompt)),
        "token2wav offline chunked": _once(
            lambda: decoder.inner.token_to_wav_offline(
                codes, prompt_codes, prompt.speech_feat, prompt.embedding, attention="chunked"
            )
        ),
        "token2wav streamed": streamed_decode,
        "clone offline": _once(lambda: editx.clone(TEXT, clip, PROMPT_TEXT, sample_rate=PROMPT_RATE)[0]),
        "clone streamed": lambda: editx.clone_stream(TEXT, clip, PROMPT_TEXT, sample_rate=PROMPT_RATE),
    }
    for run in paths.values():  # warm-up (first-call costs: allocator, lazy inits)
        _timed(run)
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(repeats):
        for name, run in paths.items():
            first, total, samples = _timed(run)
            if name not in best or total < best[name][1]:
                best[name] = (min(first, best.get(name, (first,))[0]), total, samples)
    audio_s = len(codes) / 41.6666667
    rows = []
    for name, (first, total, samples) in best.items():
        seconds = samples / decoder.sample_rate if samples else audio_s
        rows.append((name, seconds, first, total))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,official", help="comma list of tiny, official")
    parser.add_argument("--seconds", type=float, default=4.0, help="speech generated per clone")
    parser.add_argument("--prompt-seconds", type=float, default=3.0, help="length of the prompt clip")
    parser.add_argument("--lm-layers", type=int, default=0, help="official LM layers (0: 32 on CUDA, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps of the flow (the original's 10)")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "static"], help="LM backend")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats (the best counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args(argv)
    # the random LMs do not keep the 2 vq02 + 3 vq06 layout; the decoder decodes such codes and warns each time
    logging.getLogger("stepaudio.cosyvoice2.tokens").setLevel(logging.ERROR)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    layers = options.lm_layers or (32 if device.type == "cuda" else 2)
    print(
        f"device={device} threads={torch.get_num_threads()} speech={options.seconds:g}s "
        f"prompt={options.prompt_seconds:g}s flow_steps={options.steps} backend={options.backend} "
        f"stream chunks 15,24,48 steps (first audio after 30 codes = 0.72 s of speech)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer_folder = build_tiny_tokenizer_checkpoint(scratch / "Step-Audio-Tokenizer")
        tokenizer = StepAudioTokenizer(tokenizer_folder, device=device)
        folder = build_tiny_editx_checkpoint(scratch / "Step-Audio-EditX", with_decoder=True)
        header = f"{'size':9s} {'path':27s} {'audio_s':>7s} {'first_s':>8s} {'total_s':>8s} {'RTF':>7s}"
        print(header)
        for size in [s for s in options.sizes.split(",") if s]:
            if size not in ("tiny", "official"):
                parser.error(f"unknown size {size!r}; use tiny or official")
            settings = {"device": device, "seed": 0, "max_speech_seconds": options.seconds}
            if size == "tiny":
                editx = StepAudioEditX(folder, tokenizer, backend=options.backend, **settings)
                editx.decoder.inner.n_timesteps = options.steps
                label = "tiny"
            else:
                backend = _official_lm(layers, device, options.backend)
                decoder = _official_decoder(device, options.steps, folder / "CosyVoice-300M-25Hz" / "campplus.onnx")
                editx = StepAudioEditX(folder, tokenizer, backend=backend, decoder=decoder, **settings)
                label = f"off/{layers}L"
            rows = _measure(editx, options.prompt_seconds, options.repeats)
            for name, audio_s, first, total in rows:
                print(
                    f"{label:9s} {name:27s} {audio_s:7.2f} {first:8.2f} {total:8.2f} {total / audio_s:7.3f}",
                    flush=True,
                )
            first = {name: first for name, _, first, _ in rows}
            clone_gain = first["clone offline"] / first["clone streamed"]
            decode_gain = first["token2wav offline"] / first["token2wav streamed"]
            print(
                f"{label:9s} first audio: clone streamed {clone_gain:.1f}x earlier than clone offline; "
                f"token2wav streamed {decode_gain:.1f}x earlier than token2wav offline",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
