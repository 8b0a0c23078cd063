"""A catalogue of hostile inputs to StepAudioTokenizer: each is refused with one clear line, before any work.

Also: the folder may be given as its parent, and ``wav2token(progress=True)`` shows bars on stderr
without changing the codes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from stepaudio.errors import AudioInputError, CheckpointFileNotFoundError, InvalidArgumentError, UsageError
from stepaudio.tokenizer import StepAudioTokenizer
from stepaudio.tokenizer.layout import PARAFORMER_SUBFOLDER

RATE = 16000
NOISE = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir: Path) -> StepAudioTokenizer:
    return StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------------------------- folder
def test_missing_folder(tmp_path):
    with pytest.raises(
        CheckpointFileNotFoundError, match=r"Step-Audio-Tokenizer folder .*nowhere does not exist"
    ) as caught:
        StepAudioTokenizer(tmp_path / "nowhere", device="cpu")
    message = _one_line(caught.value)
    assert "linguistic_tokenizer.npy" in message and PARAFORMER_SUBFOLDER in message and "huggingface.co" in message


def test_a_file_instead_of_the_folder(tiny_tokenizer_dir):
    path = tiny_tokenizer_dir / "linguistic_tokenizer.npy"
    with pytest.raises(
        CheckpointFileNotFoundError, match=r"linguistic_tokenizer\.npy is a file, not a folder"
    ) as caught:
        StepAudioTokenizer(path, device="cpu")
    _one_line(caught.value)


def test_a_folder_without_the_tokenizer(tmp_path):
    (tmp_path / "Step-Audio-Chat").mkdir()
    with pytest.raises(
        CheckpointFileNotFoundError,
        match=r"is not a Step-Audio-Tokenizer folder: it holds neither linguistic_tokenizer\.npy nor a "
        r"Step-Audio-Tokenizer subfolder",
    ) as caught:
        StepAudioTokenizer(tmp_path, device="cpu")
    _one_line(caught.value)


def test_the_parent_folder_is_accepted(tiny_tokenizer_dir):
    assert tiny_tokenizer_dir.name == "Step-Audio-Tokenizer"
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir.parent, device="cpu")
    assert tokenizer.files.folder == tiny_tokenizer_dir.resolve()


@pytest.mark.parametrize(
    "relative",
    ["speech_tokenizer_v1.onnx", f"{PARAFORMER_SUBFOLDER}/tokens.json", f"{PARAFORMER_SUBFOLDER}/model.pt"],
)
def test_incomplete_folder_names_the_missing_file_on_one_line(tiny_tokenizer_dir, tmp_path, relative):
    folder = tmp_path / "Step-Audio-Tokenizer"
    shutil.copytree(tiny_tokenizer_dir, folder)
    (folder / relative).unlink()
    for given in (folder, tmp_path):  # the folder itself, or its parent
        with pytest.raises(
            CheckpointFileNotFoundError, match=r"Step-Audio-Tokenizer folder .* is incomplete"
        ) as caught:
            StepAudioTokenizer(given, device="cpu")
        message = _one_line(caught.value)
        assert str(folder.resolve() / relative) in message and caught.value.file == folder.resolve() / relative


@pytest.mark.parametrize(
    ("path", "device", "match"),
    [
        (None, "cpu", r"path must be the path of the Step-Audio-Tokenizer folder, got None"),
        (5, "cpu", r"path must be the path of the Step-Audio-Tokenizer folder, got 5"),
        ("", "cpu", r"path must be the path of the Step-Audio-Tokenizer folder, got ''"),
        ("TOKENIZER", "gpu", r"device must be a device such as 'cpu'"),
    ],
)
def test_bad_constructor_arguments(tiny_tokenizer_dir, path, device, match):
    path = tiny_tokenizer_dir if path == "TOKENIZER" else path
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        StepAudioTokenizer(path, device=device)
    _one_line(caught.value)


# ----------------------------------------------------------------------------------------- arguments
BAD_SR = [0, -16000, True, 16000.5, 16000.0, "16000"]


@pytest.mark.parametrize("sr", BAD_SR, ids=repr)
def test_bad_sample_rate_everywhere(tokenizer, sr):
    calls = [
        lambda: tokenizer.wav2token(NOISE, sr),
        lambda: tokenizer(NOISE, sr),
        lambda: tokenizer.preprocess_wav(NOISE, sr),
        lambda: tokenizer.batch_wav2token([NOISE], sr),
    ]
    for call in calls:
        with pytest.raises(
            InvalidArgumentError, match=r"^sr must be a positive whole number, got .*; the sample rate"
        ) as caught:
            call()
        _one_line(caught.value)
        assert isinstance(caught.value, UsageError) and caught.value.name == "sr"
    with pytest.raises(InvalidArgumentError, match=r"^the sample rate of clip 1 must be a positive whole number"):
        tokenizer.batch_wav2token([(NOISE, RATE), (NOISE, sr)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"enable_trim": "no"}, r"enable_trim must be True or False, got 'no'"),
        ({"energy_norm": 1}, r"energy_norm must be True or False, got 1"),
        ({"progress": None}, r"progress must be True or False, got None"),
    ],
)
def test_flags_must_be_bools(tokenizer, kwargs, match):
    for call in (tokenizer.wav2token, tokenizer.batch_wav2token):
        audio = NOISE if call == tokenizer.wav2token else [NOISE]
        with pytest.raises(InvalidArgumentError, match=match) as caught:
            call(audio, RATE, **kwargs)
        _one_line(caught.value)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "8"], ids=repr)
def test_bad_batch_size(tokenizer, batch_size):
    with pytest.raises(InvalidArgumentError, match=r"^batch_size must be a positive whole number, got ") as caught:
        tokenizer.batch_wav2token([NOISE], RATE, batch_size=batch_size)
    _one_line(caught.value)


def test_batch_of_one_array_instead_of_a_list(tokenizer):
    with pytest.raises(InvalidArgumentError, match=r"^wavs must be a list of clips .*; use wav2token for one clip"):
        tokenizer.batch_wav2token(NOISE, RATE)
    with pytest.raises(InvalidArgumentError, match=r"^wavs must be a list of clips"):
        tokenizer.batch_wav2token("clip.wav")


def test_bad_stream_arguments(tokenizer):
    with pytest.raises(AudioInputError, match=r"stream sample_rate must be a positive integer number of Hz; got True"):
        tokenizer.stream(True)
    with pytest.raises(InvalidArgumentError, match=r"^peak must be a number 0 or more, got -1"):
        tokenizer.stream(RATE, peak=-1)
    with pytest.raises(InvalidArgumentError, match=r"^semantic_right_context_s must be a finite number 0 or more"):
        tokenizer.stream(RATE, semantic_right_context_s=float("nan"))


# ------------------------------------------------------------------------------------------------ audio
def test_bad_audio(tokenizer, tmp_path):
    broken = NOISE.copy()
    broken[10] = np.nan
    cases = [
        (lambda: tokenizer.wav2token(np.zeros(0, np.float32), RATE), r"audio array of shape \(0,\) is empty"),
        (lambda: tokenizer(broken, RATE), r"contains 1 NaN/inf sample\(s\) out of 16000"),
        (lambda: tokenizer.wav2token(tmp_path), rf"{tmp_path} is a directory, not an audio file"),
        (lambda: tokenizer.wav2token(tmp_path / "missing.wav"), r"audio file .*missing\.wav does not exist"),
        (lambda: tokenizer.wav2token(NOISE), r"the sample rate is required for array/tensor audio"),
        (lambda: tokenizer.batch_wav2token([NOISE, NOISE[:0]], RATE), r"^clip 1: audio array of shape \(0,\) is empty"),
    ]
    for call, match in cases:
        with pytest.raises(AudioInputError, match=match) as caught:
            call()
        _one_line(caught.value)


def test_sr_given_with_a_file_of_another_rate(tokenizer, shared_audio_dir):
    clip = shared_audio_dir / "piper_en_22k.wav"
    with pytest.raises(AudioInputError, match=r"sr=16000 was passed with the file .*, which is 22050 Hz; omit sr"):
        tokenizer.wav2token(clip, 16000)


# --------------------------------------------------------------------------------------------- progress
def test_progress_bars_leave_the_codes_unchanged(tokenizer, shared_audio_dir, tmp_path, capfd):
    speech, rate = soundfile.read(shared_audio_dir / "BAC009S0764W0121.wav", dtype="float32")
    clip = tmp_path / "eight_seconds.wav"
    soundfile.write(clip, np.tile(speech, 2), rate)
    capfd.readouterr()
    quiet = tokenizer.wav2token(clip, enable_trim=False)
    assert capfd.readouterr().err == ""
    shown = tokenizer.wav2token(clip, enable_trim=False, progress=True)
    err = capfd.readouterr().err
    assert shown == quiet
    assert "vq02 (linguistic)" in err and "vq06 (semantic)" in err and "s of audio" in err
    assert tokenizer(clip) == tokenizer(str(clip))  # __call__ stays quiet
    assert capfd.readouterr().err == ""
