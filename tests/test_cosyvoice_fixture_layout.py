"""The tiny CosyVoice fixture folders have the original's layout and a voice-dependent CAM++ stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import soundfile as sf
import torch
from cosyvoice_fixtures import tiny_cosyvoice_dir  # noqa: F401  (pytest fixture)

from stepaudio.cosyvoice import CampPlusSpeakerEncoder, parse_recipe, resample_audio

REPO_ROOT = Path(__file__).resolve().parents[1]
#: two different voices: a Mandarin speaker (16 kHz) and an English synthetic voice (22.05 kHz)
VOICE_CLIPS = ("../shared/audio/BAC009S0764W0121.wav", "../shared/audio/piper_en_22k.wav")

#: every file the original loader opens, plus the version marker
ORIGINAL_FILES = (
    "cosyvoice.yaml",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v1.onnx",
    "VERSION_Vq0206Vocoder_1202",
)


def _read_clip(relative: str) -> tuple[np.ndarray, int]:
    path = REPO_ROOT / relative
    if not path.is_file():
        pytest.fail(f"test audio {relative} (relative to the repo root) is missing: expected {path.resolve()}")
    waveform, sample_rate = sf.read(path, dtype="float32")
    return (waveform.mean(axis=1) if waveform.ndim == 2 else waveform), sample_rate


@pytest.mark.parametrize("decoder", ["CosyVoice-300M-25Hz", "CosyVoice-300M-25Hz-Music"])
def test_tts_fixture_decoder_folders_hold_every_file_the_original_opens(tiny_tts_dir: Path, decoder: str) -> None:
    folder = tiny_tts_dir / decoder
    assert sorted(path.name for path in folder.iterdir()) == sorted(ORIGINAL_FILES)
    session = onnxruntime.InferenceSession(str(folder / "speech_tokenizer_v1.onnx"), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert [(i.name, i.type) for i in inputs] == [("feats", "tensor(float)"), ("feats_length", "tensor(int32)")]
    feats = np.zeros((1, 128, 100), dtype=np.float32)
    (indices,) = session.run(None, {inputs[0].name: feats, inputs[1].name: np.array([100], dtype=np.int32)})
    assert indices.shape == (1, 25) and indices.min() >= 0 and indices.max() < 4096


def test_both_decoder_folders_share_one_speech_tokenizer(tiny_tts_dir: Path) -> None:
    speech = (tiny_tts_dir / "CosyVoice-300M-25Hz" / "speech_tokenizer_v1.onnx").read_bytes()
    music = (tiny_tts_dir / "CosyVoice-300M-25Hz-Music" / "speech_tokenizer_v1.onnx").read_bytes()
    assert speech == music


def test_fixture_recipe_is_written_in_the_original_spelling(tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    text = (tiny_cosyvoice_dir / "cosyvoice.yaml").read_text(encoding="utf-8")
    recipe = parse_recipe(text)
    assert recipe["feat_extractor"].tag == "!name:cosyvoice.matcha.audio.mel_spectrogram"
    encoder = recipe["flow"].kwargs["encoder"]
    assert encoder.target == "cosyvoice.transformer.encoder.ConformerEncoder"
    assert encoder.kwargs["selfattention_layer_type"] == "rel_selfattn" and "selfattn_layer_type" not in encoder.kwargs
    targets = {
        recipe["flow"].target,
        recipe["flow"].kwargs["length_regulator"].target,
        recipe["flow"].kwargs["decoder"].target,
        recipe["flow"].kwargs["decoder"].kwargs["estimator"].target,
        recipe["hift"].target,
        recipe["hift"].kwargs["f0_predictor"].target,
    }
    assert targets == {
        "cosyvoice.flow.flow.MaskedDiffWithXvec",
        "cosyvoice.flow.length_regulator.InterpolateRegulator",
        "cosyvoice.flow.flow_matching.ConditionalCFM",
        "cosyvoice.flow.decoder.ConditionalDecoder",
        "cosyvoice.hifigan.generator.HiFTGenerator",
        "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor",
    }


def test_campplus_fixture_has_the_official_io(tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    session = onnxruntime.InferenceSession(
        str(tiny_cosyvoice_dir / "campplus.onnx"), providers=["CPUExecutionProvider"]
    )
    (model_input,) = session.get_inputs()
    (model_output,) = session.get_outputs()
    assert (model_input.name, model_input.type) == ("input", "tensor(float)")
    assert model_input.shape[0] == 1 and isinstance(model_input.shape[1], str) and model_input.shape[2] == 80
    assert (model_output.name, model_output.shape) == ("output", [1, 192])
    for frames in (7, 300):  # any number of fbank frames
        features = np.random.default_rng(frames).standard_normal((1, frames, 80)).astype(np.float32)
        assert session.run(None, {"input": features})[0].shape == (1, 192)


def test_campplus_fixture_embedding_depends_on_the_voice(tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    encoder = CampPlusSpeakerEncoder(tiny_cosyvoice_dir / "campplus.onnx")
    embeddings = []
    for clip in VOICE_CLIPS:
        waveform, sample_rate = _read_clip(clip)
        embeddings.append(encoder(resample_audio(waveform, sample_rate, 16000)))
    first, second = embeddings
    assert first.shape == second.shape == (1, 192)
    assert bool(torch.isfinite(first).all()) and bool(torch.isfinite(second).all())
    similarity = float(torch.nn.functional.cosine_similarity(first, second))
    assert similarity < 0.99, f"two different voices got nearly the same embedding (cosine {similarity:.5f})"
    waveform, sample_rate = _read_clip(VOICE_CLIPS[0])
    again = encoder(resample_audio(waveform, sample_rate, 16000))
    assert torch.equal(again, first)
