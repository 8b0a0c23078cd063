"""stepaudio.kaldi_fbank against numbers computed by ``torchaudio.compliance.kaldi.fbank`` (torchaudio 2.5.1).

The reference values below were produced once by torchaudio's own ``fbank`` on the very signals
:func:`_signal` builds (closed-form sines / a chirp plus seeded numpy noise); torchaudio is not needed here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stepaudio.kaldi_fbank as kaldi_fbank_module
from stepaudio.cosyvoice import frontend
from stepaudio.errors import AudioInputError
from stepaudio.kaldi_fbank import WINDOW_TYPES, kaldi_fbank

RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-4


def _signal(num_samples: int, kind: str) -> np.ndarray:
    t = np.arange(num_samples, dtype=np.float64) / 16000.0
    if kind == "mix":
        x = (
            0.3 * np.sin(2 * np.pi * 440.0 * t)
            + 0.2 * np.sin(2 * np.pi * 1234.5 * t + 0.5)
            + 0.1 * np.sin(2 * np.pi * 3001.0 * t)
        )
    else:  # linear chirp 100 Hz -> 4000 Hz over the signal
        x = 0.5 * np.sin(2 * np.pi * (100.0 * t + 0.5 * 3900.0 * t * t / (num_samples / 16000.0)))
    x = x + 0.01 * np.random.default_rng(20240601).standard_normal(num_samples)
    return x.astype(np.float32)


# name: (samples, kind, scale, options, shape, [(frame, bin, value)], sum, sum of absolute values)
CASES = {
    # Paraformer frontend (funasr WavFrontend): hamming, energy_floor 0, int16-scaled waveform
    "A_paraformer": (
        16000, "mix", 32768.0,
        dict(num_mel_bins=80, frame_length_ms=25, frame_shift_ms=10, dither=0.0, energy_floor=0.0,
             window_type="hamming", sample_rate=16000),
        (98, 80),
        [(0, 0, 12.810307502746582), (3, 5, 13.436240196228027), (17, 40, 15.981954574584961),
         (42, 79, 20.210233688354492), (97, 20, 14.821515083312988), (49, 53, 24.804475784301758)],
        139248.78353357315, 139248.78353357315,
    ),
    # CAM++ speaker embedding input (CosyVoice): povey defaults, 80 bins, dither 0, unscaled
    "B_campplus": (
        16000, "mix", 1.0,
        dict(num_mel_bins=80, dither=0.0, sample_rate=16000),
        (98, 80),
        [(0, 0, -12.153385162353516), (3, 5, -9.774698257446289), (17, 40, -4.590541839599609),
         (42, 79, -0.5629165172576904), (97, 20, -7.1012091636657715), (49, 53, 4.029570579528809)],
        -25759.762717703357, 31746.78876977414,
    ),
    # a length that is not a multiple of the shift, frames centred with mirrored edges
    "C_no_snip": (
        12345, "chirp", 1.0,
        dict(num_mel_bins=80, dither=0.0, sample_rate=16000, snip_edges=False),
        (77, 80),
        [(0, 0, -1.3370157480239868), (3, 5, -2.4165477752685547), (17, 40, -3.691580295562744),
         (42, 79, -0.9266050457954407), (76, 20, -3.731362819671631), (38, 53, -2.484618663787842)],
        -24849.510422159918, 27999.26430362556,
    ),
    "hanning_energy_last": (
        8000, "chirp", 32768.0,
        dict(num_mel_bins=40, window_type="hanning", use_energy=True, htk_compat=True, energy_floor=0.0),
        (48, 41),
        [(0, 0, 18.04092788696289), (3, 5, 22.62128448486328), (17, 20, 17.639101028442383),
         (42, 40, 24.698894500732422), (47, 10, 15.426451683044434), (24, 27, 18.426185607910156)],
        35096.58065986633, 35096.58065986633,
    ),
    "blackman_windowed_energy_cms": (
        8000, "chirp", 32768.0,
        dict(num_mel_bins=40, window_type="blackman", use_energy=True, raw_energy=False, subtract_mean=True,
             low_freq=60.0, high_freq=-400.0),
        (48, 41),
        [(0, 0, -3.8424530029296875), (3, 5, 7.948017120361328), (17, 20, 3.4847068786621094),
         (42, 40, -0.4989299774169922), (47, 10, -0.924708366394043), (24, 27, -1.621011734008789)],
        0.00014495849609375, 2973.117359161377,
    ),
    "rectangular_linear_magnitude": (
        8000, "mix", 1.0,
        dict(num_mel_bins=30, window_type="rectangular", round_to_power_of_two=False, use_power=False,
             use_log_fbank=False, preemphasis=0.0, remove_dc_offset=False),
        (48, 30),
        [(0, 0, 0.13841210305690765), (3, 5, 43.31646728515625), (17, 15, 2.0829854011535645),
         (42, 29, 2.886174201965332), (47, 7, 1.0478746891021729), (24, 20, 9.394599914550781)],
        9117.777802817523, 9117.777802817523,
    ),
    "all_defaults_23_bins": (
        8000, "mix", 1.0,
        dict(),
        (48, 23),
        [(0, 0, -9.774554252624512), (3, 5, -4.515267372131348), (17, 11, -2.8735709190368652),
         (42, 22, 0.2103261947631836), (47, 5, -4.5195136070251465), (24, 15, 5.255776405334473)],
        -978.6506394247408, 3455.993994309276,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torchaudio_reference(name: str) -> None:
    num_samples, kind, scale, options, shape, values, total, abs_total = CASES[name]
    waveform = torch.from_numpy(_signal(num_samples, kind)) * scale
    features = kaldi_fbank(waveform, **options)
    assert features.dtype == torch.float32
    assert tuple(features.shape) == shape
    for frame, column, expected in values:
        got = float(features[frame, column])
        assert abs(got - expected) <= max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * abs(expected)), (frame, column)
    count = shape[0] * shape[1]
    assert abs(features.double().sum().item() - total) <= RELATIVE_TOLERANCE * abs_total + ABSOLUTE_TOLERANCE * count
    assert features.double().abs().sum().item() == pytest.approx(abs_total, rel=RELATIVE_TOLERANCE)


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("num_samples", [0, 1, 200, 399])
def test_shorter_than_one_frame_gives_no_frames(num_samples: int, snip_edges: bool) -> None:
    # case D: torchaudio asserts here; Kaldi (and we) return zero frames
    waveform = _signal(num_samples, "mix")
    assert tuple(kaldi_fbank(waveform, num_mel_bins=80, snip_edges=snip_edges).shape) == (0, 80)
    assert tuple(kaldi_fbank(waveform, num_mel_bins=80, use_energy=True).shape) == (0, 81)


def test_frame_count_rules() -> None:
    for num_samples in (400, 401, 559, 560, 561, 1000, 16000, 16159, 16160, 12345):
        waveform = _signal(num_samples, "chirp")
        assert kaldi_fbank(waveform, num_mel_bins=80).shape[0] == 1 + (num_samples - 400) // 160
        assert kaldi_fbank(waveform, num_mel_bins=80, snip_edges=False).shape[0] == (num_samples + 80) // 160


def test_input_layouts_agree() -> None:
    waveform = _signal(4321, "mix")
    reference = kaldi_fbank(waveform, num_mel_bins=80)
    assert torch.equal(kaldi_fbank(waveform[None], num_mel_bins=80), reference)
    assert torch.equal(kaldi_fbank(torch.from_numpy(waveform), num_mel_bins=80), reference)
    assert torch.equal(kaldi_fbank(torch.from_numpy(waveform)[None], num_mel_bins=80), reference)
    assert torch.equal(kaldi_fbank(waveform.astype(np.float64), num_mel_bins=80), reference)
    read_only = waveform.copy()
    read_only.flags.writeable = False
    assert torch.equal(kaldi_fbank(read_only, num_mel_bins=80), reference)


def test_long_input_in_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    waveform = _signal(16000, "chirp") * 32768
    options = dict(num_mel_bins=80, window_type="hamming", energy_floor=0.0, use_energy=True, subtract_mean=True)
    whole = kaldi_fbank(waveform, **options)
    monkeypatch.setattr(kaldi_fbank_module, "FRAMES_PER_BLOCK", 7)
    blocked = kaldi_fbank(waveform, **options)
    assert blocked.shape == whole.shape
    assert torch.allclose(blocked, whole, rtol=1e-6, atol=1e-5)


def test_windows_and_banks_are_cached() -> None:
    first = kaldi_fbank_module.feature_window("povey", 400, 0.42, "cpu")
    assert kaldi_fbank_module.feature_window("povey", 400, 0.42, "cpu") is first
    banks = kaldi_fbank_module.mel_banks(80, 512, 16000.0, 20.0, 0.0, "cpu")
    assert tuple(banks.shape) == (80, 257)
    assert kaldi_fbank_module.mel_banks(80, 512, 16000.0, 20.0, 0.0, "cpu") is banks
    assert float(banks[:, -1].abs().sum()) == 0.0


def test_dither_needs_a_generator_and_is_reproducible_with_one() -> None:
    waveform = _signal(3200, "mix")
    with pytest.raises(AudioInputError, match="generator"):
        kaldi_fbank(waveform, dither=1.0)
    first = kaldi_fbank(waveform, dither=1.0, generator=torch.Generator().manual_seed(3))
    again = kaldi_fbank(waveform, dither=1.0, generator=torch.Generator().manual_seed(3))
    other = kaldi_fbank(waveform, dither=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, kaldi_fbank(waveform))


def test_bad_window_name_lists_the_allowed_ones() -> None:
    with pytest.raises(AudioInputError) as info:
        kaldi_fbank(_signal(1000, "mix"), window_type="hann")
    message = str(info.value)
    assert "'hann'" in message and "\n" not in message
    for window_type in WINDOW_TYPES:
        assert window_type in message


@pytest.mark.parametrize(
    ("waveform", "options", "match"),
    [
        (np.full(800, np.nan, dtype=np.float32), {}, "NaN or infinite"),
        (np.array([0.0] * 799 + [np.inf], dtype=np.float32), {}, "NaN or infinite"),
        (np.zeros(800, dtype=np.int16), {}, "float"),
        (np.zeros((2, 800), dtype=np.float32), {}, "mono"),
        (np.zeros(800, dtype=np.float32), {"num_mel_bins": 3}, "num_mel_bins"),
        (np.zeros(800, dtype=np.float32), {"sample_rate": 0.0}, "sample_rate"),
        (np.zeros(800, dtype=np.float32), {"frame_shift_ms": 0.01}, "frame_shift_ms"),
        (np.zeros(800, dtype=np.float32), {"preemphasis": 1.5}, "preemphasis"),
        (np.zeros(800, dtype=np.float32), {"energy_floor": -1.0}, "energy_floor"),
        (np.zeros(800, dtype=np.float32), {"high_freq": 9000.0}, "Nyquist"),
        (np.zeros(800, dtype=np.float32), {"low_freq": 5000.0, "high_freq": 4000.0}, "low_freq"),
        (np.zeros(800, dtype=np.float32), {"vtln_warp": 0.9}, "vtln_warp"),
        (np.zeros(800, dtype=np.float32), {"round_to_power_of_two": False, "frame_length_ms": 25.0625}, "odd"),
    ],
)
def test_bad_arguments_are_one_line_audio_input_errors(waveform: np.ndarray, options: dict, match: str) -> None:
    with pytest.raises(AudioInputError, match=match) as info:
        kaldi_fbank(waveform, **options)
    assert "\n" not in str(info.value)


def test_silence_is_floored_at_float32_eps() -> None:
    features = kaldi_fbank(np.zeros(1600, dtype=np.float32), num_mel_bins=80)
    assert torch.all(features == float(np.log(np.float32(np.finfo(np.float32).eps))))


def test_campplus_frontend_is_the_cosyvoice_setting() -> None:
    waveform = _signal(16000, "mix")
    features = frontend.kaldi_fbank(waveform)
    assert isinstance(features, np.ndarray) and features.dtype == np.float32
    expected = kaldi_fbank(waveform, num_mel_bins=80, dither=0.0, sample_rate=16000)
    np.testing.assert_array_equal(features, expected.numpy())
    with pytest.raises(AudioInputError, match="shorter than one 25 ms frame"):
        frontend.kaldi_fbank(waveform[:399])
