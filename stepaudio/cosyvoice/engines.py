"""Execution engines of the CosyVoice decoder: the eager reference and the fast paths.

``engine`` of :class:`~stepaudio.cosyvoice.decoder.CosyVoiceDecoder`:

* ``"eager"``: the loaded torch modules as they are (weight norm parametrised): the reference path.
* ``"onnxruntime"`` (CPU, float32 flow): the flow estimator with both classifier-free-guidance
  branches (:class:`GuidedVelocity`), the HiFT F0 predictor and the HiFT convolutional body
  (:class:`HiFTBody`, weight norm folded into plain weights) are exported once with the TorchScript
  ONNX exporter and run in ONNX Runtime sessions.  The rest (conformer encoder, length regulator,
  Euler loop, harmonic source, STFT / iSTFT, streaming logic) stays in torch.  Same math, outputs
  within float32 rounding of the eager path (see ``tests/test_cosyvoice_fast.py`` for the bound).
* ``"cuda-graphs"`` (CUDA): the guided estimator and the HiFT body with folded weight norm in the
  flow dtype (bfloat16 by default on CUDA), each captured in a CUDA graph per input shape
  (:class:`CudaGraphRunner`; the Euler steps of one utterance, and the equal-sized windows of a
  stream, replay the same graph).  Written without GPU access here: not verified on hardware.
* ``"auto"`` (default): ``"onnxruntime"`` on CPU with a float32 flow, ``"cuda-graphs"`` on CUDA,
  ``"eager"`` otherwise (CPU with a bfloat16 flow).
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InvalidArgumentError
from ..validation import check_choice
from .estimator import ConditionalDecoder
from .flow import VelocityFn
from .hift import HiFTGenerator, HiFTRunner

__all__ = [
    "ENGINES",
    "CudaGraphRunner",
    "EngineRuntime",
    "GuidedVelocity",
    "HiFTBody",
    "OnnxModule",
    "build_runtime",
    "fold_weight_norm",
    "resolve_engine",
]

logger = logging.getLogger(__name__)

#: the accepted values of ``engine``
ENGINES = ("auto", "eager", "onnxruntime", "cuda-graphs")
_ONNX_OPSET = 17


def resolve_engine(engine: str, device: torch.device, flow_dtype: torch.dtype) -> str:
    """The concrete engine for ``engine`` (one of :data:`ENGINES`) on ``device`` with a ``flow_dtype`` flow.

    Raises:
        InvalidArgumentError: an unknown name, or an engine that cannot run on this device / dtype.
    """
    check_choice(engine, "engine", ENGINES, hint="'auto' picks onnxruntime on CPU and cuda-graphs on CUDA")
    if engine == "auto":
        if device.type == "cuda":
            return "cuda-graphs"
        return "onnxruntime" if device.type == "cpu" and flow_dtype == torch.float32 else "eager"
    if engine == "onnxruntime" and (device.type != "cpu" or flow_dtype != torch.float32):
        raise InvalidArgumentError.about(
            "engine",
            f"'onnxruntime' runs a float32 flow on the CPU, got device {device.type} with a {flow_dtype} flow; "
            "use engine='auto' or 'eager', or dtype='float32' on device='cpu'",
            engine,
        )
    if engine == "cuda-graphs" and device.type != "cuda":
        raise InvalidArgumentError.about(
            "engine", f"'cuda-graphs' needs a CUDA device, got {device.type}; use engine='auto' or 'eager'", engine
        )
    return engine


# ---------------------------------------------------------------------------------------------- graph modules
class GuidedVelocity(nn.Module):
    """Classifier-free-guided flow velocity ``(1 + r) v(x | mu, spks, cond) - r v(x | 0, 0, 0)`` (r = cfg rate).

    Exactly the eager :class:`~stepaudio.cosyvoice.flow.ConditionalCFM` step (one estimator call on a
    batch of 2, or of 1 when ``r == 0``) with an all-ones mask, as one module to export or capture.
    """

    def __init__(self, estimator: ConditionalDecoder, cfg_rate: float) -> None:
        super().__init__()
        self.estimator = estimator
        self.cfg_rate = float(cfg_rate)

    def forward(
        self, x: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """``x``, ``mu``, ``cond`` [1, 80, T]; ``spks`` [1, 80]; ``t`` [1] -> guided velocity [1, 80, T]."""
        mask = torch.ones_like(x[:, :1])
        if self.cfg_rate <= 0:
            return self.estimator(x, mask, mu, t, spks, cond)
        pair = self.estimator(
            torch.cat([x, x]),
            torch.cat([mask, mask]),
            torch.cat([mu, torch.zeros_like(mu)]),
            t.expand(2),
            torch.cat([spks, torch.zeros_like(spks)]),
            torch.cat([cond, torch.zeros_like(cond)]),
        )
        return (1.0 + self.cfg_rate) * pair[:1] - self.cfg_rate * pair[1:]


class HiFTBody(nn.Module):
    """:meth:`HiFTGenerator.conv_body` of a (weight-norm folded) vocoder as a module of its own."""

    def __init__(self, hift: HiFTGenerator) -> None:
        super().__init__()
        self.hift = hift

    def forward(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor:
        """mel [1, 80, T] + source STFT [1, n_fft + 2, L] -> [1, n_fft + 2, L]."""
        return self.hift.conv_body(mel, source_spec)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose weight-normed layers hold plain weights ``g * v / |v|`` (computed once).

    ``module`` itself is left untouched.  (``parametrize.remove_parametrizations`` on a deep copy would
    delete the ``weight`` property from the parametrised class that the copy shares with the original.)
    """
    folded = copy.deepcopy(module)
    for layer in folded.modules():
        if parametrize.is_parametrized(layer, "weight"):
            with torch.no_grad():
                weight = layer.weight.detach().clone()
            layer.__class__ = type(layer).__bases__[0]  # the plain class the parametrised one was made from
            del layer._modules["parametrizations"]
            layer.register_parameter("weight", nn.Parameter(weight, requires_grad=False))
    return folded


# ---------------------------------------------------------------------------------------------- onnxruntime
class OnnxModule:
    """A torch module exported to ONNX (TorchScript exporter) and run in an ONNX Runtime CPU session.

    Args:
        module: the module (float32, CPU); only its forward with tensor inputs is exported.
        example: example inputs (small shapes are enough: every axis in ``dynamic`` stays symbolic).
        input_names, output_name: graph names.
        dynamic: ``{input_name: {axis: symbol}}`` of the axes that vary between calls.
        output_axes: ``{axis: symbol}`` of the output's varying axes.
        threads: intra-op threads of the session (the torch intra-op thread count by default).
        label: name used in log lines.
    """

    def __init__(
        self,
        module: nn.Module,
        example: tuple[torch.Tensor, ...],
        input_names: tuple[str, ...],
        output_name: str,
        dynamic: dict[str, dict[int, str]],
        output_axes: dict[int, str],
        threads: int | None = None,
        label: str = "module",
    ) -> None:
        import onnxruntime

        started = time.perf_counter()
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter is deprecated in favour of the dynamo one (which needs onnxscript)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            torch.onnx.export(
                module.eval(),
                example,
                buffer,
                dynamo=False,
                opset_version=_ONNX_OPSET,
                input_names=list(input_names),
                output_names=[output_name],
                dynamic_axes={**dynamic, output_name: output_axes},
            )
        exported = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # do not let idle session threads spin on cores that torch uses between the calls
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.input_names = input_names
        self.label = label
        logger.info(
            "%s exported to ONNX in %.1f s, ONNX Runtime session in %.1f s (%d threads)",
            label,
            exported - started,
            time.perf_counter() - exported,
            options.intra_op_num_threads,
        )

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run the session on CPU tensors (float32) -> float32 CPU tensor."""
        feeds = {
            name: np.ascontiguousarray(value.detach().to("cpu", torch.float32).numpy())
            for name, value in zip(self.input_names, inputs, strict=True)
        }
        (output,) = self.session.run(None, feeds)
        return torch.from_numpy(output)


class _OnnxHiFT:
    """:class:`~stepaudio.cosyvoice.hift.HiFTRunner` of ONNX Runtime sessions (F0 predictor, conv body)."""

    def __init__(self, hift: HiFTGenerator) -> None:
        folded = fold_weight_norm(hift).float().eval()
        frames = 8
        mel = torch.zeros(1, folded.conv_pre.in_channels, frames)
        spec = torch.zeros(1, folded.n_fft + 2, frames * folded.samples_per_frame // folded.istft_hop + 1)
        self._f0 = OnnxModule(
            folded.f0_predictor,
            (mel,),
            ("mel",),
            "f0",
            {"mel": {2: "frames"}},
            {1: "frames"},
            label="HiFT F0 predictor",
        )
        self._body = OnnxModule(
            HiFTBody(folded),
            (mel, spec),
            ("mel", "source_spec"),
            "spec",
            {"mel": {2: "frames"}, "source_spec": {2: "stft_frames"}},
            {2: "stft_frames"},
            label="HiFT body",
        )

    def f0(self, mel: torch.Tensor) -> torch.Tensor:
        return self._f0(mel)

    def body(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor:
        return self._body(mel, source_spec)


def _onnx_velocity(estimator: ConditionalDecoder, cfg_rate: float, mel_bins: int, spk_dim: int) -> VelocityFn:
    frames = 16
    example = (
        torch.zeros(1, mel_bins, frames),
        torch.zeros(1, mel_bins, frames),
        torch.zeros(1, spk_dim),
        torch.zeros(1, mel_bins, frames),
        torch.zeros(1),
    )
    axes = {name: {2: "frames"} for name in ("x", "mu", "cond")}
    module = OnnxModule(
        GuidedVelocity(estimator, cfg_rate).float(),
        example,
        ("x", "mu", "spks", "cond", "t"),
        "velocity",
        axes,
        {2: "frames"},
        label="flow estimator (guided)",
    )

    def velocity(
        x: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return module(x, mu, spks, cond, t).to(x.device, x.dtype)

    return velocity


# ---------------------------------------------------------------------------------------------- CUDA graphs
class CudaGraphRunner:
    """Runs a module through CUDA graphs captured per input signature (shapes and dtypes), LRU-bounded.

    Each new signature is warmed up once on a side stream, then captured; later calls with the same
    signature copy their inputs into the static buffers and replay the graph.  At most ``max_graphs``
    graphs are kept (the least recently used is dropped).  Not verified on hardware in this project.
    """

    def __init__(self, module: nn.Module, max_graphs: int = 8) -> None:
        if max_graphs < 1:
            raise InvalidArgumentError.about("max_graphs", f"must be >= 1, got {max_graphs}", max_graphs)
        self.module = module
        self.max_graphs = int(max_graphs)
        self._graphs: OrderedDict[tuple, tuple[object, tuple[torch.Tensor, ...], torch.Tensor]] = OrderedDict()
        self.captures = 0

    @staticmethod
    def signature(inputs: tuple[torch.Tensor, ...]) -> tuple:
        """The key a graph is captured for: shape, dtype and device of every input."""
        return tuple((tuple(value.shape), value.dtype, str(value.device)) for value in inputs)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple[object, tuple[torch.Tensor, ...], torch.Tensor]:
        static = tuple(value.clone() for value in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.module(*static)  # warm-up: lazy initialisation must not happen during capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.module(*static)
        self.captures += 1
        return graph, static, output

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = self.signature(inputs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(inputs)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            for buffer, value in zip(entry[1], inputs, strict=True):
                buffer.copy_(value)
        graph, _, output = entry
        graph.replay()
        return output.clone()


class _CudaGraphHiFT:
    """:class:`~stepaudio.cosyvoice.hift.HiFTRunner`: float32 F0 predictor, reduced-precision graphed body."""

    def __init__(self, hift: HiFTGenerator, dtype: torch.dtype) -> None:
        folded = fold_weight_norm(hift).eval()
        self._f0 = folded.f0_predictor.float()
        self._body = CudaGraphRunner(HiFTBody(folded.to(dtype)))
        self.dtype = dtype

    def f0(self, mel: torch.Tensor) -> torch.Tensor:
        return self._f0(mel.float())

    def body(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor:
        return self._body(mel.to(self.dtype), source_spec.to(self.dtype)).float()


# ---------------------------------------------------------------------------------------------- runtime
@dataclass
class EngineRuntime:
    """What an engine replaces: the guided-velocity function of the flow and the vocoder's networks.

    ``None`` members mean "the eager modules" (the engine ``"eager"`` has both ``None``).
    """

    engine: str
    velocity: VelocityFn | None = None
    hift: HiFTRunner | None = None


def build_runtime(engine: str, flow: nn.Module, hift: HiFTGenerator, flow_dtype: torch.dtype) -> EngineRuntime:
    """Prepare the resolved ``engine`` (see :func:`resolve_engine`) for the loaded ``flow`` and ``hift``."""
    if engine == "eager":
        return EngineRuntime(engine)
    cfm = flow.decoder
    cfg_rate = float(cfm.params.inference_cfg_rate)
    if engine == "onnxruntime":
        velocity = _onnx_velocity(cfm.estimator, cfg_rate, flow.output_size, flow.output_size)
        return EngineRuntime(engine, velocity, _OnnxHiFT(hift))
    if engine == "cuda-graphs":
        graphed: Callable[..., torch.Tensor] = CudaGraphRunner(GuidedVelocity(cfm.estimator, cfg_rate).eval())

        def velocity(
            x: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
        ) -> torch.Tensor:
            return graphed(x, mu, spks, cond, t.to(x.dtype))

        return EngineRuntime(engine, velocity, _CudaGraphHiFT(hift, flow_dtype))
    raise InvalidArgumentError.about("engine", "must be a resolved engine (eager, onnxruntime, cuda-graphs)", engine)
