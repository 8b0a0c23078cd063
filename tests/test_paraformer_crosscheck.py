"""Dev-only cross-check of the native vq02 path against funasr 1.4.14 (the `crosscheck` extra).

funasr 1.4.14 is the last release whose online frontend ends a clip exactly as the funasr copy vendored
by the original Step-Audio does (1.4.15 yields one more frame for some short final strides).  Its
model classes are driven here the way the original's ``infer_encoder`` drives them (3840-sample
strides, chunk [0, 4, 5], look-back 4, the last partial stride final, the "skip < 480 samples" rule),
on the fixture folder, which funasr loads through its own ``configuration.json`` path.  funasr's fbank
is routed to :func:`stepaudio.kaldi_fbank.kaldi_fbank`, whose agreement with torchaudio's Kaldi fbank
(the original's) is tested on its own in ``test_kaldi_fbank.py``; what is compared here is everything
after the fbank: stride bookkeeping, LFR/CMVN, the streaming encoder and the k-means codes.
"""

from __future__ import annotations

import importlib.metadata
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from stepaudio.kaldi_fbank import kaldi_fbank
from stepaudio.tokenizer.layout import PARAFORMER_SUBFOLDER
from stepaudio.tokenizer.linguistic import LinguisticTokenizer
from stepaudio.tokenizer.paraformer_frontend import pcm_strides

FUNASR_VERSION = "1.4.14"


def _funasr_or_skip() -> None:
    try:
        version = importlib.metadata.version("funasr")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"funasr=={FUNASR_VERSION} is not installed (pip install -e '.[crosscheck]')")
    if version != FUNASR_VERSION:
        pytest.skip(f"funasr {version} is installed; the cross-check needs exactly {FUNASR_VERSION}")


class _FunasrReference:
    """funasr's ParaformerStreaming driven like the original's ``infer_encoder`` (reference only)."""

    def __init__(self, paraformer_folder: Path, centroids: torch.Tensor) -> None:
        import funasr.frontends.wav_frontend as wav_frontend
        from funasr import AutoModel

        def fbank(waveform: torch.Tensor, **options: object) -> torch.Tensor:
            return kaldi_fbank(
                waveform[0],
                sample_rate=float(options["sample_frequency"]),
                num_mel_bins=int(options["num_mel_bins"]),
                frame_length_ms=float(options["frame_length"]),
                frame_shift_ms=float(options["frame_shift"]),
                dither=float(options["dither"]),
                energy_floor=float(options["energy_floor"]),
                window_type=str(options["window_type"]),
            )

        wav_frontend.kaldi = types.SimpleNamespace(fbank=fbank)
        local = str(paraformer_folder)
        self.auto = AutoModel(model=local, hub="ms", disable_update=True, device="cpu", disable_pbar=True)
        self.centroids = centroids

    def encoder_frames(self, audio: np.ndarray) -> torch.Tensor:
        from funasr.utils.load_utils import extract_fbank

        model, kwargs = self.auto.model, self.auto.kwargs
        frontend = kwargs["frontend"]
        cache: dict = {}
        model.init_cache(
            cache,
            chunk_size=[0, 4, 5],
            encoder_chunk_look_back=4,
            decoder_chunk_look_back=1,
            encoder_conf=kwargs["encoder_conf"],
            frontend_conf=kwargs["frontend_conf"],
        )
        samples = torch.from_numpy(audio)
        stride = 3840
        count = len(samples) // stride + 1
        outputs = []
        with torch.no_grad():
            for index in range(count):
                final = index == count - 1
                piece = samples[index * stride : (index + 1) * stride]
                if final and len(piece) == 0:
                    break
                try:
                    speech, lengths = extract_fbank(
                        [piece], data_type="sound", frontend=frontend, cache=cache["frontend"], is_final=final
                    )
                except Exception:
                    if final and piece.shape[0] < 480:
                        break
                    raise
                if len(speech) == 0 and final:
                    break
                if final and int(lengths[0]) == 0:
                    # The vendored funasr raises here (stacking zero LFR frames) and the original then skips a
                    # final piece under 480 samples; funasr 1.4.14 returns zero frames instead.
                    if piece.shape[0] < 480:
                        break
                    raise RuntimeError("infer failed")
                encoded, _ = model.encode_chunk(speech, lengths, cache=cache, is_final=final)
                outputs.append(encoded[0, -int(lengths[0]) :])
        return torch.cat(outputs) if outputs else torch.zeros(0, self.centroids.shape[1])

    def codes(self, audio: np.ndarray) -> list[int]:
        frames = self.encoder_frames(audio)
        return torch.cdist(frames, self.centroids).argmin(dim=1).tolist() if len(frames) else []


@pytest.fixture(scope="module")
def pair(tiny_tokenizer_dir: Path) -> tuple[LinguisticTokenizer, _FunasrReference]:
    _funasr_or_skip()
    native = LinguisticTokenizer(
        tiny_tokenizer_dir / PARAFORMER_SUBFOLDER,
        tiny_tokenizer_dir / "linguistic_tokenizer.npy",
        torch.device("cpu"),
        tiny_tokenizer_dir,
    )
    return native, _FunasrReference(tiny_tokenizer_dir / PARAFORMER_SUBFOLDER, native.centroids)


def test_funasr_loads_the_fixture_folder_through_its_configuration_json(pair, tiny_tokenizer_dir: Path) -> None:
    _, reference = pair
    assert type(reference.auto.model).__name__ == "ParaformerStreaming"
    assert type(reference.auto.kwargs["frontend"]).__name__ == "WavFrontendOnline"
    assert reference.auto.kwargs["frontend_conf"]["dither"] == 0.0
    saved = torch.load(tiny_tokenizer_dir / PARAFORMER_SUBFOLDER / "model.pt", weights_only=True)
    loaded = reference.auto.model.state_dict()
    assert saved.keys() == loaded.keys()  # every tensor of the model, no more, no less
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)


def _speech(shared_audio: Path, length: int) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(str(shared_audio / "BAC009S0764W0121.wav"), dtype="float32")
    assert rate == 16000
    audio = np.tile(audio, 1 + length // len(audio))[:length]
    return np.ascontiguousarray(audio / np.abs(audio).max() * 0.999, dtype=np.float32)


# Every tail case of the stride bookkeeping: lengths just around multiples of the 3840-sample stride,
# the 400-sample frame, the 160-sample shift and the 6-frame LFR step, plus a spread of others.
_TAILS = sorted(
    {0, 1, 159, 160, 239, 240, 399, 400, 401, 479, 480, 481, 559, 560, 720, 959, 960, 961, 1200, 1439}
    | set(range(0, 3840, 97))
    | {3839, 3680, 3520}
)
_LENGTHS = [3840 * strides + tail for strides in (1, 2, 3) for tail in _TAILS if 3840 * strides + tail >= 1600]


def test_native_vq02_equals_funasr_for_every_tail_length(pair, shared_audio_dir: Path) -> None:
    native, reference = pair
    mismatched = []
    worst = 0.0
    for length in _LENGTHS:
        audio = _speech(shared_audio_dir, length)
        expected_frames = reference.encoder_frames(audio)
        state = native.new_state()
        frames = [native.encode_stride_frames(state, piece, final) for piece, final in pcm_strides(audio, 3840)]
        got_frames = torch.cat(frames) if frames else torch.zeros(0, expected_frames.shape[1])
        if got_frames.shape != expected_frames.shape:
            mismatched.append((length, tuple(got_frames.shape), tuple(expected_frames.shape)))
            continue
        worst = max(worst, float((got_frames - expected_frames).abs().max()) if len(got_frames) else 0.0)
        if native.encode(audio) != reference.codes(audio):
            mismatched.append((length, "codes"))
    assert not mismatched, f"native vq02 differs from funasr {FUNASR_VERSION} at lengths {mismatched[:10]}"
    assert worst < 1e-4, f"encoder outputs differ by up to {worst}"


def test_batched_native_vq02_equals_funasr(pair, shared_audio_dir: Path) -> None:
    native, reference = pair
    clips = [_speech(shared_audio_dir, length) for length in (5000, 3840 * 3, 20000, 3840 * 2 + 481, 1700)]
    assert native.encode_batch(clips) == [reference.codes(clip) for clip in clips]
