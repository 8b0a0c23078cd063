"""The decoder's engines: the fast default (ONNX Runtime on CPU) against the eager reference, and their options.

Equivalence metric: ``max |fast - eager| / max |eager|`` on the mel and on the waveform, bound 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cosyvoice_fixtures import one_torch_thread, tiny_cosyvoice_dir, tiny_decoder  # noqa: F401

from stepaudio.cosyvoice import ENGINES, CosyVoiceDecoder, StreamingConfig
from stepaudio.cosyvoice.engines import CudaGraphRunner, GuidedVelocity, HiFTBody, fold_weight_norm, resolve_engine
from stepaudio.cosyvoice.flow import FrameNoise
from stepaudio.errors import InvalidArgumentError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4


def _relative(fast: torch.Tensor, reference: torch.Tensor) -> float:
    return float((fast - reference).abs().max() / reference.abs().max())


def _inputs(count: int, seed: int = 3) -> tuple[torch.Tensor, tuple]:
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, 40, 80, generator=generator) - 5
    prompt = torch.randint(0, 5120, (1, 20), generator=generator)
    tokens = torch.randint(0, 5120, (1, count), generator=generator)
    return tokens, (mel, torch.tensor([40], dtype=torch.int32), prompt, torch.tensor([20]), torch.randn(1, 192))


@pytest.fixture(scope="module")
def eager_decoder(tiny_decoder) -> CosyVoiceDecoder:  # noqa: F811
    """The eager reference sharing the tiny decoder's modules."""
    return CosyVoiceDecoder(
        tiny_decoder.flow,
        tiny_decoder.hift,
        tiny_decoder.mel_config,
        None,
        torch.device("cpu"),
        torch.float32,
        engine="eager",
    )


def test_default_cpu_engine_is_onnxruntime(tiny_decoder, eager_decoder) -> None:  # noqa: F811
    assert tiny_decoder.engine == "onnxruntime"
    assert tiny_decoder.runtime.velocity is not None and tiny_decoder.runtime.hift is not None
    assert eager_decoder.engine == "eager"
    assert eager_decoder.runtime.velocity is None and eager_decoder.runtime.hift is None


def test_fast_offline_matches_eager(tiny_decoder, eager_decoder) -> None:  # noqa: F811
    tokens, args = _inputs(150)
    mel_fast = tiny_decoder.token_to_mel_offline(tokens, *args)
    mel_eager = eager_decoder.token_to_mel_offline(tokens, *args)
    assert mel_fast.shape == mel_eager.shape == (1, 80, int(150 / 41.6666666667 * 22050 / 256))
    assert _relative(mel_fast, mel_eager) < TOLERANCE
    wav_fast = tiny_decoder.token_to_wav_offline(tokens, *args)
    wav_eager = eager_decoder.token_to_wav_offline(tokens, *args)
    assert wav_fast.shape == wav_eager.shape
    assert _relative(wav_fast, wav_eager) < TOLERANCE
    assert _relative(tiny_decoder.mel_to_wav(mel_fast), wav_eager) < TOLERANCE


def test_fast_streaming_matches_eager_streaming(tiny_decoder, eager_decoder) -> None:  # noqa: F811
    tokens, args = _inputs(140, seed=5)
    config = StreamingConfig(first_chunk_tokens=10, chunk_tokens=20, max_chunk_tokens=40, left_context_tokens=30)
    fast = list(tiny_decoder.token_to_wav_stream(tokens[0].tolist(), *args, config=config))
    eager = list(eager_decoder.token_to_wav_stream(tokens[0].tolist(), *args, config=config))
    assert [c.shape for c in fast] == [c.shape for c in eager] and len(fast) >= 4
    assert _relative(torch.cat(fast, dim=1), torch.cat(eager, dim=1)) < TOLERANCE


def test_guided_velocity_is_the_eager_cfm_step(tiny_decoder) -> None:  # noqa: F811
    flow = tiny_decoder.flow
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 80, 33, generator=generator)
    prompt = torch.randn(1, 10, 80, generator=generator)
    speaker = torch.randn(1, 80, generator=generator)
    noise = FrameNoise(0, 80).frames(0, 33)
    guided = GuidedVelocity(flow.decoder.estimator, flow.decoder.params.inference_cfg_rate)
    with torch.inference_mode():
        eager = flow.decode_frames(mu, prompt, speaker, noise, 4)
        through_module = flow.decode_frames(mu, prompt, speaker, noise, 4, velocity=guided)
    torch.testing.assert_close(through_module, eager, rtol=0, atol=1e-6)


def test_fold_weight_norm_keeps_the_original_and_its_state_dict_names(tiny_decoder) -> None:  # noqa: F811
    hift = tiny_decoder.hift
    keys = set(hift.state_dict())
    folded = fold_weight_norm(hift)
    assert set(hift.state_dict()) == keys and "conv_pre.weight_g" in keys and "conv_pre.weight_v" in keys
    assert type(hift.conv_pre).__name__ == "ParametrizedConv1d" and hift.conv_pre.weight.shape[0] > 0
    assert type(folded.conv_pre) is torch.nn.Conv1d and "conv_pre.weight" in folded.state_dict()
    torch.testing.assert_close(folded.conv_pre.weight, hift.conv_pre.weight, rtol=0, atol=0)
    generator = torch.Generator().manual_seed(1)
    mel = torch.randn(1, 80, 6, generator=generator)
    spec = torch.randn(1, hift.n_fft + 2, 6 * 64 + 1, generator=generator)
    with torch.inference_mode():
        torch.testing.assert_close(HiFTBody(folded)(mel, spec), hift.conv_body(mel, spec), rtol=1e-5, atol=1e-5)


def test_official_layout_still_loads_strictly_with_the_fast_engine(tiny_cosyvoice_dir: Path) -> None:  # noqa: F811
    decoder = CosyVoiceDecoder.from_pretrained(tiny_cosyvoice_dir, device="cpu")
    assert decoder.engine == "onnxruntime"
    for name, module in (("flow.pt", decoder.flow), ("hift.pt", decoder.hift)):
        on_disk = torch.load(tiny_cosyvoice_dir / name, map_location="cpu", weights_only=True)
        state = module.state_dict()
        assert set(state) == set(on_disk)
        module.load_state_dict(on_disk, strict=True)


def test_engine_choices_and_errors() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ENGINES == ("auto", "eager", "onnxruntime", "cuda-graphs")
    assert resolve_engine("auto", cpu, torch.float32) == "onnxruntime"
    assert resolve_engine("auto", cpu, torch.bfloat16) == "eager"
    assert resolve_engine("auto", cuda, torch.bfloat16) == "cuda-graphs"
    assert resolve_engine("eager", cuda, torch.bfloat16) == "eager"
    with pytest.raises(InvalidArgumentError, match=r"^engine must be one of auto, eager, onnxruntime, cuda-graphs"):
        resolve_engine("onnx", cpu, torch.float32)
    with pytest.raises(InvalidArgumentError, match=r"^engine 'cuda-graphs' needs a CUDA device, got cpu"):
        resolve_engine("cuda-graphs", cpu, torch.float32)
    with pytest.raises(InvalidArgumentError, match=r"^engine 'onnxruntime' runs a float32 flow on the CPU"):
        resolve_engine("onnxruntime", cpu, torch.bfloat16)


def test_from_pretrained_checks_the_engine_before_reading_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^engine must be one of"):
        CosyVoiceDecoder.from_pretrained(tmp_path / "missing", device="cpu", engine="fast")


def test_cuda_graph_runner_signature_and_bounds() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^max_graphs must be >= 1, got 0"):
        CudaGraphRunner(torch.nn.Identity(), max_graphs=0)
    a, b = torch.zeros(1, 80, 5), torch.zeros(1, 80, 6)
    assert CudaGraphRunner.signature((a,)) != CudaGraphRunner.signature((b,))
    assert CudaGraphRunner.signature((a,)) == CudaGraphRunner.signature((a.clone(),))
    assert CudaGraphRunner.signature((a,)) != CudaGraphRunner.signature((a.bfloat16(),))


def test_reduced_precision_hift_body_stays_close(tiny_decoder) -> None:  # noqa: F811
    """The cuda-graphs engine's HiFT body runs in bfloat16; its numerics are checked on the CPU (no graphs)."""
    hift = tiny_decoder.hift
    folded = fold_weight_norm(hift)
    generator = torch.Generator().manual_seed(2)
    mel = torch.randn(1, 80, 12, generator=generator) - 4
    spec = torch.randn(1, hift.n_fft + 2, 12 * 64 + 1, generator=generator) * 0.1
    with torch.inference_mode():
        reference = hift.conv_body(mel, spec)
        reduced = HiFTBody(folded.to(torch.bfloat16))(mel.bfloat16(), spec.bfloat16()).float()
    snr = 10 * torch.log10(reference.pow(2).sum() / (reference - reduced).pow(2).sum())
    assert float(snr) > 20.0
