"""Prompt frontend on real clips: the 22.05 kHz prompt mel against librosa, CAM++ x-vectors via kaldi fbank."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from cosyvoice_fixtures import tiny_cosyvoice_dir, tiny_decoder  # noqa: F401  (pytest fixtures)

from stepaudio.cosyvoice import CampPlusSpeakerEncoder, kaldi_fbank, prompt_mel, resample_audio
from stepaudio.errors import AudioInputError, CheckpointFileNotFoundError


def _read(path: Path) -> tuple[np.ndarray, int]:
    waveform, sample_rate = sf.read(path, dtype="float32")
    return (waveform.mean(axis=1) if waveform.ndim == 2 else waveform), sample_rate


def test_prompt_mel_matches_librosa_on_real_speech(shared_audio_dir: Path) -> None:
    waveform, sample_rate = _read(shared_audio_dir / "piper_en_22k.wav")
    assert sample_rate == 22050
    mel = prompt_mel(waveform)
    padded = np.pad(waveform, (384, 384), mode="reflect")
    spectrum = librosa.stft(padded, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=False)
    magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2 + 1e-9)
    filters = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    reference = np.log(np.maximum(filters @ magnitude, 1e-5)).T
    assert mel.shape == (1, (len(waveform) + 768 - 1024) // 256 + 1, 80)
    assert np.abs(mel[0].numpy() - reference).max() < 2e-3
    # and against librosa's own mel pipeline (power 1, no epsilon) wherever the speech is not near-silent
    power_one = librosa.feature.melspectrogram(y=padded, sr=22050, n_fft=1024, hop_length=256, win_length=1024,
                                               center=False, power=1.0, n_mels=80, fmin=0, fmax=8000)
    loud = power_one.T > 1e-2
    assert np.abs(mel[0].numpy()[loud] - np.log(power_one.T[loud])).max() < 1e-3


def test_prompt_mel_rejects_bad_audio() -> None:
    with pytest.raises(AudioInputError, match="empty"):
        prompt_mel(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        prompt_mel(np.full(4096, np.nan, dtype=np.float32))
    with pytest.raises(AudioInputError, match="mono"):
        prompt_mel(np.zeros((2, 4096), dtype=np.float32))


def test_kaldi_fbank_frames_and_values(shared_audio_dir: Path) -> None:
    waveform, sample_rate = _read(shared_audio_dir / "BAC009S0764W0121.wav")
    assert sample_rate == 16000
    features = kaldi_fbank(waveform)
    assert features.shape == (1 + (len(waveform) - 400) // 160, 80)
    assert np.isfinite(features).all()
    # louder speech frames have more energy than the quietest frames
    energy = features.mean(axis=1)
    assert energy.max() - energy.min() > 3.0


def test_campplus_embedding_on_real_clips(shared_audio_dir: Path, tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    encoder = CampPlusSpeakerEncoder(tiny_cosyvoice_dir / "campplus.onnx")
    first, rate = _read(shared_audio_dir / "speakers" / "Tingting_prompt.wav")
    second, rate2 = _read(shared_audio_dir / "prompt_wav_yuqian.wav")
    emb_first = encoder(resample_audio(first, rate, 16000))
    emb_again = encoder(resample_audio(first, rate, 16000))
    emb_second = encoder(resample_audio(second, rate2, 16000))
    assert emb_first.shape == (1, 192) and emb_first.dtype == torch.float32
    assert bool(torch.isfinite(emb_first).all())
    assert torch.equal(emb_first, emb_again)
    assert not torch.allclose(emb_first, emb_second)


def test_prompt_features_from_a_44k_clip(shared_audio_dir: Path, tiny_decoder) -> None:  # noqa: F811
    waveform, rate = _read(shared_audio_dir / "speakers" / "Tingting_prompt.wav")
    features = tiny_decoder.prompt_features(waveform, rate)
    samples_22k = round(len(waveform) * 22050 / rate)
    assert features.speech_feat.shape == (1, (samples_22k + 768 - 1024) // 256 + 1, 80)
    assert features.speech_feat_len.dtype == torch.int32
    assert int(features.speech_feat_len[0]) == features.speech_feat.shape[1]
    assert features.embedding.shape == (1, 192)


def test_missing_campplus_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFileNotFoundError, match="campplus.onnx"):
        CampPlusSpeakerEncoder(tmp_path / "campplus.onnx")


def test_resample_keeps_duration_and_tone() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100).astype(np.float32)
    resampled = resample_audio(tone, 44100, 16000).numpy()
    assert resampled.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(resampled))
    assert abs(np.argmax(spectrum) * 16000 / len(resampled) - 440) < 2
