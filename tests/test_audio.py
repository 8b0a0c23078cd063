"""stepaudio.audio: loading, layout rules, mono mixing, resampling, energy norm and trimming."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stepaudio.audio import as_waveform, check_finite, energy_norm, load_audio, resample, to_mono, trim_silence
from stepaudio.errors import AudioInputError
from stepaudio.resample import ResamplerStream


def test_load_wav_flac_mp3_and_24_bit(shared_audio_dir: Path) -> None:
    wav, sr = load_audio(shared_audio_dir / "BAC009S0764W0121.wav")
    assert sr == 16000 and wav.shape[0] == 1 and wav.dtype == np.float32
    assert abs(wav.shape[1] / sr - 4.2) < 0.05
    flac, flac_sr = load_audio(shared_audio_dir / "espeak_en.flac")
    mp3, mp3_sr = load_audio(shared_audio_dir / "espeak_en.mp3")
    assert flac_sr == soundfile.info(str(shared_audio_dir / "espeak_en.flac")).samplerate
    assert mp3_sr == soundfile.info(str(shared_audio_dir / "espeak_en.mp3")).samplerate
    assert abs(flac.shape[1] / flac_sr - 2.9) < 0.1 and abs(mp3.shape[1] / mp3_sr - 2.9) < 0.15
    hum_path = shared_audio_dir / "speakers" / "Tingting哼唱_prompt.wav"
    assert soundfile.info(str(hum_path)).subtype == "PCM_24"
    hum, hum_sr = load_audio(hum_path)
    raw = soundfile.read(str(hum_path), dtype="int32")[0]
    # 24-bit samples land in the top bytes of int32: the float read must equal int32 / 2**31.
    np.testing.assert_allclose(hum[0], raw / 2**31, atol=1e-7)
    assert hum_sr == 48000 and np.abs(hum).max() > 0.01


def test_load_errors(tmp_path: Path, shared_audio_dir: Path) -> None:
    with pytest.raises(AudioInputError, match="directory"):
        load_audio(shared_audio_dir)
    with pytest.raises(AudioInputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioInputError, match="cannot read"):
        load_audio(text)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes((shared_audio_dir / "BAC009S0764W0121.wav").read_bytes()[:30])
    with pytest.raises(AudioInputError, match="cannot read"):
        load_audio(corrupt)


def test_as_waveform_pcm_scaling_and_layout_rule() -> None:
    pcm16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(as_waveform(pcm16)[0], [0.0, 0.5, -1.0, 32767 / 32768])
    pcm32 = np.array([0, 2**30, -(2**31)], dtype=np.int32)
    np.testing.assert_allclose(as_waveform(pcm32)[0], [0.0, 0.5, -1.0])
    assert as_waveform(np.zeros((3, 100))).shape == (3, 100)
    with pytest.raises(AudioInputError, match=r"\[T, C\]"):
        as_waveform(np.zeros((16000, 2), dtype=np.float32))
    with pytest.raises(AudioInputError, match="dimensions"):
        as_waveform(np.zeros((1, 2, 100), dtype=np.float32))
    with pytest.raises(AudioInputError, match="dtype"):
        as_waveform(np.zeros(10, dtype=np.complex64))


def test_torch_tensor_input_matches_numpy() -> None:
    import torch

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 400)).astype(np.float32)
    np.testing.assert_array_equal(as_waveform(torch.from_numpy(audio)), audio)


def test_to_mono_averages_channels() -> None:
    stereo = np.stack([np.ones(10, np.float32), -np.ones(10, np.float32) * 0.5])
    np.testing.assert_allclose(to_mono(stereo), 0.25)
    mono = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(to_mono(mono[np.newaxis]), mono)


def test_check_finite() -> None:
    check_finite(np.zeros(4, np.float32))
    with pytest.raises(AudioInputError, match="NaN/inf"):
        check_finite(np.array([0.0, np.nan, np.inf], np.float32))


def test_resample_is_noop_for_equal_rates_and_torchaudio_equal_otherwise() -> None:
    # stepaudio.audio.resample is stepaudio.resample.resample (values checked in tests/test_resample.py)
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    assert resample(audio, 16000, 16000) is audio
    up = resample(audio, 8000, 16000)
    assert up.shape == (16000,) and up.dtype == np.float32
    stream = ResamplerStream(8000, 16000)
    streamed = np.concatenate([stream.feed(audio[:3000]), stream.feed(audio[3000:]), stream.close()])
    np.testing.assert_allclose(streamed, up, rtol=0, atol=1e-6)
    # a band-limited 2x upsample keeps the input's (low-passed) samples at the even positions
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    np.testing.assert_allclose(resample(tone, 8000, 16000)[200:-200:2], tone[100:-100], atol=0.02)
    with pytest.raises(AudioInputError):
        resample(audio, 0, 16000)


def test_energy_norm_matches_upstream_formula() -> None:
    audio = np.array([0.0, 0.2, -0.5], np.float32)
    np.testing.assert_allclose(energy_norm(audio), audio / 0.5 * 0.999, rtol=1e-6)
    quiet = np.array([0.0, 0.001], np.float32)
    np.testing.assert_allclose(energy_norm(quiet), quiet / 0.01 * 0.999, rtol=1e-6)


def test_trim_silence_keeps_margins() -> None:
    sr = 16000
    rng = np.random.default_rng(2)
    speech = rng.uniform(-0.5, 0.5, sr).astype(np.float32)  # 1 s of "speech" between 1 s silences
    audio = np.concatenate([np.zeros(sr, np.float32), speech, np.zeros(sr, np.float32)])
    trimmed = trim_silence(audio, sr)
    import librosa

    _, (start, end) = librosa.effects.trim(audio, top_db=20, frame_length=512, hop_length=128)
    expected_length = math.ceil((end - start) / 240) * 240 + int(0.27 * sr)
    assert trimmed.shape[0] == expected_length
    margin = int(0.05 * sr)
    np.testing.assert_array_equal(trimmed[:margin], audio[start - margin : start])
    # Speech starting at sample 0: the 0.05 s left margin is zero padding.
    early = trim_silence(np.concatenate([speech, np.zeros(sr, np.float32)]), sr)
    assert np.all(early[: int(0.05 * sr)] == 0) and np.array_equal(
        early[int(0.05 * sr) : int(0.05 * sr) + 100], speech[:100]
    )
