"""stepaudio.resample: torchaudio-equal values and lengths, streaming == offline, bounded state, errors.

The reference numbers below were computed with torchaudio 2.11.0's own ``transforms.Resample`` code
(defaults: sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99, dtype None) on the signals that
:func:`_signal` regenerates.  Observed agreement: at most 2.4e-7 absolute (torchaudio's float32
convolution rounding; impulse responses, i.e. the kernel values, are bit-identical); asserted: 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import stepaudio.resample as resample_module
from stepaudio.audio import resample as audio_resample
from stepaudio.errors import AudioInputError, StreamClosedError
from stepaudio.resample import ResamplerStream, resample, resampled_length

TOLERANCE = 1e-6


def _signal(kind: str, sr: int) -> np.ndarray:
    """Deterministic test signals of ``sr // 4 + 37`` samples (no files, no random generator)."""
    n = sr // 4 + 37
    i = np.arange(n, dtype=np.int64)
    t = i / sr
    if kind == "sine":
        x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    elif kind == "chirp":  # 50 Hz rising to 0.45 * sr (close to the input Nyquist) over 0.25 s
        x = 0.8 * np.sin(2 * np.pi * (50.0 * t + 0.5 * 0.9 * (sr / 2) / 0.25 * t * t))
    elif kind == "impulse":
        x = np.zeros(n)
        x[n // 3] = 1.0
    elif kind == "noise":  # integer hash: white-ish noise in [-1, 1)
        x = ((i * 2654435761 + 12345) % 4294967296) / 2147483648.0 - 1.0
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


# (signal, orig_sr, target_sr): (output length, {output index: torchaudio's value})
# fmt: off
REFERENCE: dict[tuple[str, int, int], tuple[int, dict[int, float]]] = {
    ("sine", 44100, 16000): (4014, {
        0: 0.008123721, 1: 0.084855698, 2: 0.17001003, 7: 0.46782586, 1003: -0.247784808, 1338: -0.480253905,
        2007: 0.467826843, 2008: 0.491253197, 3010: -0.49395448, 4011: 0.462071806, 4012: 0.462845117,
        4013: 0.291899979,
    }),
    ("sine", 48000, 16000): (4013, {
        0: 0.00827582832, 1: 0.0848522931, 2: 0.170009941, 7: 0.467826128, 1003: -0.24778451, 1337: -0.497091115,
        2006: 0.43046695, 2007: 0.467826128, 3009: -0.500049591, 4010: 0.479510754, 4011: 0.505643666,
        4012: 0.295407653,
    }),
    ("sine", 22050, 16000): (4027, {
        0: 0.00495465426, 1: 0.0850645229, 2: 0.169942513, 7: 0.467814296, 1006: -0.43047148, 1342: -0.281092733,
        2013: 0.390291333, 2014: 0.330731779, 3020: 0.154536143, 4024: -0.401945412, 4025: -0.50745827,
        4026: -0.305199742,
    }),
    ("sine", 44100, 22050): (5531, {
        0: 0.0052420483, 1: 0.0617518015, 2: 0.1245443, 7: 0.384745508, 1382: -0.233552948, 1843: -0.493288875,
        2765: 0.445080936, 2766: 0.470121264, 4148: -0.495443046, 5528: 0.469678819, 5529: 0.430244476,
        5530: 0.427666217,
    }),
    ("sine", 48000, 22050): (5530, {
        0: 0.0054618991, 1: 0.0617459491, 2: 0.124549732, 7: 0.384750038, 1382: -0.233556256, 1843: -0.493291378,
        2765: 0.445083648, 2766: 0.470125407, 4147: -0.500131488, 5527: 0.472832233, 5528: 0.492467344,
        5529: 0.337008893,
    }),
    ("sine", 16000, 22050): (5564, {
        0: 0.000236448162, 1: 0.0578214526, 2: 0.127615139, 7: 0.38465026, 1391: -0.499699593, 1854: -0.0127721671,
        2782: -0.0433627777, 2783: -0.105420321, 4173: 0.495754331, 5561: -0.0989296287, 5562: -0.0369674526,
        5563: -0.00466912147,
    }),
    ("sine", 8000, 16000): (4074, {
        0: 0.00045341035, 1: 0.070872061, 2: 0.168942466, 7: 0.468953252, 1018: -0.0157042164, 1358: 0.413509637,
        2037: 0.0548407882, 2038: 0.13948524, 3055: 0.039210692, 4071: -0.139778331, 4072: -0.0628008023,
        4073: -0.0165299177,
    }),
    ("sine", 11025, 16000): (4054, {
        0: 0.000336930854, 1: 0.0782835707, 2: 0.174305364, 7: 0.467679739, 1013: -0.390194386, 1351: 0.409043491,
        2027: -0.499445856, 2028: -0.496071875, 3040: -0.293852568, 4051: 0.303200096, 4052: 0.203937545,
        4053: 0.0394791663,
    }),
    ("noise", 44100, 16000): (4014, {
        0: -0.335978091, 1: 0.0287301075, 2: -0.137771875, 7: 0.012800687, 1003: 0.0469515808, 1338: 0.071861051,
        2007: 0.263371557, 2008: 0.00473118108, 3010: 0.0966203883, 4011: 0.214769006, 4012: 0.179121092,
        4013: -0.287228793,
    }),
    ("noise", 48000, 16000): (4013, {
        0: -0.285439879, 1: -0.0205748715, 2: -0.0558890998, 7: 0.287413388, 1003: -0.102808811, 1337: 0.248584911,
        2006: 0.0884107873, 2007: 0.0955817774, 3009: 0.315596253, 4010: 0.222131014, 4011: -0.095573172,
        4012: -0.145898521,
    }),
    ("noise", 22050, 16000): (4027, {
        0: -0.546085, 1: -0.23039861, 2: 0.346866488, 7: -0.406113774, 1006: -0.206859142, 1342: 0.0857970715,
        2013: -0.279347986, 2014: -0.397837251, 3020: 0.0174299683, 4024: 0.575077415, 4025: -0.287172675,
        4026: 0.472629935,
    }),
    ("noise", 44100, 22050): (5531, {
        0: -0.514764667, 1: 0.0927690566, 2: -0.0637219027, 7: -0.324117512, 1382: 0.0916355997, 1843: -0.345792383,
        2765: -0.14387536, 2766: 0.423002541, 4148: 0.0289739519, 5528: 0.456205577, 5529: 0.060484428,
        5530: -0.116602644,
    }),
    ("noise", 48000, 22050): (5530, {
        0: -0.488761693, 1: 0.133157432, 2: -0.18774949, 7: 0.195057169, 1382: -0.349978864, 1843: 0.177399591,
        2765: 0.345178783, 2766: 0.00721096899, 4147: 0.385078549, 5527: 0.0995376632, 5528: -0.189721346,
        5529: -0.172808111,
    }),
    ("noise", 16000, 22050): (5564, {
        0: -0.980675936, 1: 0.00571643095, 2: -0.0447180569, 7: -0.714523792, 1391: -0.376397401, 1854: -0.298471957,
        2782: 0.272221893, 2783: 0.667864084, 4173: -0.242372259, 5561: 0.518387437, 5562: -0.154182196,
        5563: -0.220995978,
    }),
    ("noise", 8000, 16000): (4074, {
        0: -0.980675936, 1: -0.332660794, 2: 0.216242462, 7: 0.761354268, 1018: 0.163779259, 1358: 0.276656628,
        2037: -0.0648198798, 2038: 0.554863155, 3055: 0.0939174816, 4071: 0.136738762, 4072: -0.354465276,
        4073: -0.358066499,
    }),
    ("noise", 11025, 16000): (4054, {
        0: -0.980675936, 1: -0.0419824719, 2: 0.0350027457, 7: -0.949098527, 1013: -0.267799914, 1351: -0.0838380679,
        2027: 0.25257194, 2028: -0.917424083, 3040: 0.30095011, 4051: 0.829971313, 4052: 0.0350247398,
        4053: -0.090147838,
    }),
    ("chirp", 44100, 16000): (4014, {
        0: 0.00148595648, 1: 0.0162927993, 2: 0.03466345, 7: 0.14737685, 1003: 0.493217647, 1338: -0.7103917,
        2007: -0.00410689507, 2008: 0.00276718079, 3010: 8.21307767e-05, 4011: 0.00836228207, 4012: -0.02029166,
        4013: 0.104643121,
    }),
    ("chirp", 16000, 22050): (5564, {
        0: 4.43061545e-05, 1: 0.0107036931, 2: 0.024048768, 7: 0.0869287252, 1391: 0.198437229, 1854: 0.0409171283,
        2782: -0.160667509, 2783: -0.757598579, 4173: 0.780992687, 5561: 0.210700318, 5562: -0.483461082,
        5563: -0.286695957,
    }),
    ("chirp", 11025, 16000): (4054, {
        0: 6.42710293e-05, 1: 0.0145347165, 2: 0.0331226289, 7: 0.119069606, 1013: -0.295988649, 1351: -0.168652236,
        2027: -0.419014841, 2028: -0.797802746, 3040: -0.766355574, 4051: -0.321907133, 4052: 0.0806342363,
        4053: 0.0745125189,
    }),
    ("impulse", 48000, 16000): (4013, {
        1332: -0.000538223714, 1333: 0.00362526067, 1334: -0.0108616697, 1335: 0.025451893, 1336: -0.0594799332,
        1337: 0.271942794, 1338: 0.135345906, 1339: -0.0467810147, 1340: 0.0213740058, 1341: -0.00897746626,
        1342: 0.00264129974, 1343: -0.000183017488,
    }),
    ("impulse", 8000, 16000): (4074, {
        1353: 0.0806928948, 1354: -0.00754024368, 1355: -0.181514859, 1356: 0.00934162084, 1357: 0.625911057,
        1358: 0.99000001, 1359: 0.625911057, 1360: 0.00934162084, 1361: -0.181514859, 1362: -0.00754024368,
        1363: 0.0806928948, 1364: 0.00507102162,
    }),
    ("impulse", 11025, 16000): (4054, {
        1346: -0.0337698124, 1347: 0.0356884785, 1348: 0.0401748382, 1349: -0.185823232, 1350: 0.275394499,
        1351: 0.980284274, 1352: 0.478672117, 1353: -0.171460494, 1354: -0.0111134583, 1355: 0.0621930175,
        1356: -0.0338790715, 1357: 0.00104466185,
    }),
}
# fmt: on

PAIRS = [(44100, 16000), (48000, 16000), (22050, 16000), (44100, 22050), (48000, 22050), (16000, 22050),
         (8000, 16000), (11025, 16000)]  # fmt: skip


@pytest.mark.parametrize(("kind", "orig_sr", "target_sr"), sorted(REFERENCE))
def test_matches_torchaudio_reference_values(kind: str, orig_sr: int, target_sr: int) -> None:
    length, values = REFERENCE[(kind, orig_sr, target_sr)]
    out = resample(_signal(kind, orig_sr), orig_sr, target_sr)
    assert out.dtype == np.float32 and out.shape == (length,)
    indices = sorted(values)
    np.testing.assert_allclose(out[indices], [values[j] for j in indices], rtol=0, atol=TOLERANCE)


def test_every_rate_pair_is_covered() -> None:
    assert {(o, n) for _, o, n in REFERENCE} == set(PAIRS)


# torchaudio's lengths, including inputs where its float32 rounding of new * T / orig gives one sample
# less than the exact ceiling (180697 samples at 44.1 kHz: 65559, not ceil(65559.8...) = 65560).
TORCHAUDIO_LENGTHS = [
    (44100, 16000, 180697, 65559),
    (22050, 48000, 60287, 131237),
    (16000, 88200, 47561, 262180),
    (16000, 22050, 47561, 65545),
    (11025, 16000, 45505, 66039),
    (44100, 16000, 441, 160),
    (44100, 16000, 442, 161),
    (48000, 16000, 1, 1),
    (8000, 16000, 3, 6),
    (16000, 22050, 2**20 + 7, 1445079),
]


@pytest.mark.parametrize(("orig_sr", "target_sr", "samples", "expected"), TORCHAUDIO_LENGTHS)
def test_output_length_is_torchaudios(orig_sr: int, target_sr: int, samples: int, expected: int) -> None:
    assert resampled_length(samples, orig_sr, target_sr) == expected
    if samples < 200_000:
        assert resample(np.zeros(samples, np.float32), orig_sr, target_sr).shape == (expected,)


@pytest.mark.parametrize(("orig_sr", "target_sr"), PAIRS)
def test_short_lengths_are_the_exact_ceiling(orig_sr: int, target_sr: int) -> None:
    for samples in range(0, 3000):
        assert resampled_length(samples, orig_sr, target_sr) == math.ceil(target_sr * samples / orig_sr)
    for samples in (0, 1, 2, 5, 440, 441, 442):
        assert resample(np.ones(samples, np.float32), orig_sr, target_sr).shape == (
            math.ceil(target_sr * samples / orig_sr),
        )


def test_equal_rates_return_the_input_object() -> None:
    audio = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert resample(audio, 16000, 16000) is audio
    pcm = np.arange(10, dtype=np.int16)
    assert resample(pcm, 8000, 8000) is pcm
    assert resampled_length(1234, 16000, 16000) == 1234
    stream = ResamplerStream(16000, 16000)
    parts = [stream.feed(audio[:300]), stream.feed(audio[300:]), stream.close()]
    np.testing.assert_array_equal(np.concatenate(parts), audio)


def test_audio_module_delegates_to_the_resampler() -> None:
    audio = _signal("noise", 44100)
    np.testing.assert_array_equal(audio_resample(audio, 44100, 16000), resample(audio, 44100, 16000))


def test_channels_float64_and_blocks() -> None:
    a, b = _signal("sine", 44100), _signal("noise", 44100)
    both = resample(np.stack([a, b]), 44100, 16000)
    assert both.shape == (2, 4014) and both.dtype == np.float32
    # float32 convolution of a batch may round differently from one row at a time (torchaudio's does too)
    np.testing.assert_allclose(both[0], resample(a, 44100, 16000), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(both[1], resample(b, 44100, 16000), rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(resample(a.astype(np.float64), 44100, 16000), resample(a, 44100, 16000))


def test_long_inputs_are_processed_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    audio = np.tile(_signal("chirp", 22050), 3)
    whole = resample(audio, 22050, 16000)
    monkeypatch.setattr(resample_module, "_SINGLE_CALL_SAMPLES", 1000)  # no single torchaudio-style call
    monkeypatch.setattr(resample_module, "_BLOCK_INPUT_SAMPLES", 1000)  # ~2 frames of 441 per conv call
    blocked = resample(audio, 22050, 16000)
    assert blocked.shape == whole.shape
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=TOLERANCE)


def _stream_output(orig_sr: int, target_sr: int, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    stream = ResamplerStream(orig_sr, target_sr)
    parts, start = [], 0
    for size in sizes:
        out = stream.feed(audio[start : start + size])
        assert out.dtype == np.float32 and out.ndim == 1
        parts.append(out)
        start += size
    assert start >= len(audio)
    parts.append(stream.close())
    assert stream.state.samples_out == sum(len(p) for p in parts)
    return np.concatenate(parts)


def _chunkings(length: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(7)
    random_sizes = []
    while sum(random_sizes) < length:
        random_sizes.append(int(rng.integers(0, 900)))
    return {
        "whole": [length],
        "one sample": [1] * length,
        "with empty chunks": [0, 5, 0, 0, 700, 0, 1, 1, length, 0],
        "random": random_sizes,
        "320": [320] * (length // 320 + 1),
    }


@pytest.mark.parametrize(("orig_sr", "target_sr"), [(44100, 16000), (48000, 16000), (16000, 22050), (8000, 16000),
                                                    (11025, 16000), (48000, 22050)])  # fmt: skip
def test_stream_equals_offline_for_any_chunking(orig_sr: int, target_sr: int) -> None:
    audio = np.concatenate([_signal("noise", orig_sr), _signal("chirp", orig_sr)])[:3000]
    offline = resample(audio, orig_sr, target_sr)
    for name, sizes in _chunkings(len(audio)).items():
        streamed = _stream_output(orig_sr, target_sr, audio, sizes)
        assert streamed.shape == offline.shape, name
        np.testing.assert_allclose(streamed, offline, rtol=0, atol=TOLERANCE, err_msg=name)


def test_stream_of_nothing_and_of_tiny_input() -> None:
    assert ResamplerStream(44100, 16000).close().shape == (0,)
    for samples in (1, 2, 3):
        audio = np.full(samples, 0.5, np.float32)
        streamed = _stream_output(8000, 16000, audio, [1] * samples)
        np.testing.assert_allclose(streamed, resample(audio, 8000, 16000), rtol=0, atol=TOLERANCE)


def test_stream_emits_early_and_keeps_bounded_state() -> None:
    orig_sr, target_sr = 48000, 16000
    audio = np.tile(_signal("noise", orig_sr), 20)  # 5 s
    kernel = resample_module._kernel(orig_sr, target_sr)
    stream = ResamplerStream(orig_sr, target_sr)
    parts, largest = [], 0
    for start in range(0, len(audio), 480):
        parts.append(stream.feed(audio[start : start + 480]))
        largest = max(largest, stream.state.history.shape[0])
        # everything but the filter's look-ahead has been returned
        assert stream.state.samples_out >= (stream.state.samples_in - kernel.width - kernel.orig) // 3 - 1
    assert largest < kernel.taps
    parts.append(stream.close())
    np.testing.assert_allclose(np.concatenate(parts), resample(audio, orig_sr, target_sr), rtol=0, atol=TOLERANCE)


def test_stream_length_follows_torchaudios_float32_rounding_on_very_long_input() -> None:
    """Past 2**24 outputs torchaudio's length can be several samples off the exact ceiling (either way);
    the stream never returns more than the length of the input so far and ends at exactly that length."""
    rng = np.random.default_rng(3)
    for orig_sr, target_sr in ((44100, 16000), (8000, 16000)):
        stream = ResamplerStream(orig_sr, target_sr)
        kernel, state = stream._kernel, stream.state
        # fast-forward: the state after `fed` zero samples (what feeding them would leave)
        fed = 2**28 * orig_sr // target_sr + 12345
        complete = (fed + kernel.width - kernel.taps) // kernel.orig + 1
        state.samples_in = fed
        state.samples_out = min(complete * kernel.new, resampled_length(fed, orig_sr, target_sr))
        state.frame = state.samples_out // kernel.new
        state.history = np.zeros(fed + kernel.width - state.frame * kernel.orig, np.float32)
        total = state.samples_out
        for _ in range(200):
            size = int(rng.integers(0, 600))
            total += len(stream.feed(np.zeros(size, np.float32)))
            fed += size
            assert total <= resampled_length(fed, orig_sr, target_sr)
        total += len(stream.close())
        assert total == resampled_length(fed, orig_sr, target_sr)


def test_stream_reset_and_closed_errors() -> None:
    audio = _signal("sine", 22050)
    stream = ResamplerStream(22050, 16000)
    first = np.concatenate([stream.feed(audio), stream.close()])
    with pytest.raises(StreamClosedError):
        stream.feed(audio)
    stream.reset()
    assert stream.state.samples_in == 0 and not stream.closed
    again = np.concatenate([stream.feed(audio[:1000]), stream.feed(audio[1000:]), stream.close()])
    np.testing.assert_allclose(again, first, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("bad", [0, -16000, 16000.0, 44100.5, "16000", None, True])
def test_bad_rates_are_refused(bad: object) -> None:
    audio = np.zeros(100, np.float32)
    with pytest.raises(AudioInputError, match="orig_sr must be a positive integer"):
        resample(audio, bad, 16000)  # type: ignore[arg-type]
    with pytest.raises(AudioInputError, match="target_sr must be a positive integer"):
        resample(audio, 16000, bad)  # type: ignore[arg-type]
    with pytest.raises(AudioInputError, match="orig_sr"):
        ResamplerStream(bad, 16000)  # type: ignore[arg-type]
    with pytest.raises(AudioInputError, match="target_sr"):
        resampled_length(100, 16000, bad)  # type: ignore[arg-type]


def test_numpy_integer_rates_are_accepted() -> None:
    audio = _signal("sine", 48000)
    np.testing.assert_array_equal(resample(audio, np.int64(48000), np.int32(16000)), resample(audio, 48000, 16000))


def test_bad_audio_and_unusual_ratios_are_refused() -> None:
    with pytest.raises(AudioInputError, match="float samples"):
        resample(np.zeros(100, np.int16), 44100, 16000)
    with pytest.raises(AudioInputError, match=r"shape \[T\] or \[C, T\]"):
        resample(np.zeros((1, 2, 100), np.float32), 44100, 16000)
    with pytest.raises(AudioInputError, match="mono chunks"):
        ResamplerStream(44100, 16000).feed(np.zeros((2, 100), np.float32))
    with pytest.raises(AudioInputError, match="common rate"):
        resample(np.zeros(100, np.float32), 44099, 16000)  # coprime rates: a 16000 x 44133 filter
