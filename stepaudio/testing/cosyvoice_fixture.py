"""Tiny, deterministic ``CosyVoice-300M-25Hz`` folders for tests and demos (random weights, official layout).

:func:`build_tiny_cosyvoice_folder` writes

* ``cosyvoice.yaml`` — a hyperpyyaml recipe in the spelling Step-Audio's own loader
  (``cosyvoice/cli/cosyvoice.py`` + ``load_hyperpyyaml`` inside the Step-Audio tree) can import:
  ``!apply:`` seed lines, ``!new:cosyvoice.flow...`` / ``!new:cosyvoice.transformer...`` /
  ``!new:cosyvoice.hifigan...`` classes with their original parameter names (e.g.
  ``selfattention_layer_type``), ``!new:omegaconf.DictConfig``, ``!ref`` and
  ``!name:cosyvoice.matcha.audio.mel_spectrogram`` — but tiny widths;
* ``flow.pt`` / ``hift.pt`` — ``torch.save``d plain fp32 state dicts in the official key naming
  (weight-normed convolutions as legacy ``weight_g`` / ``weight_v`` pairs);
* ``campplus.onnx`` — a tiny speaker-embedding graph with the official I/O (input 0 ``input`` float32
  ``[1, T, 80]`` with dynamic ``T`` -> output ``output`` ``[1, 192]``): two 1-D convolutions over the
  fbank frames, statistics pooling (mean and standard deviation over time) and a linear projection,
  so different voices get different embeddings;
* ``speech_tokenizer_v1.onnx`` — the tiny 25 Hz tokenizer of the ``Step-Audio-Tokenizer`` fixture
  (the original's frontend opens this file when it loads the folder; this project does not read it);
* the empty ``VERSION_Vq0206Vocoder_1202`` marker.

:func:`recipe_text` also renders the official-size recipe (hyper-parameters of checkpoints.md
section 2.2) used by the manifest test and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["TINY_HPARAMS", "OFFICIAL_HPARAMS", "recipe_text", "build_tiny_cosyvoice_folder"]

#: hyper-parameters of the official CosyVoice-300M-25Hz decoder (checkpoints.md 2.2 + state-dict manifest)
OFFICIAL_HPARAMS: dict[str, object] = {
    "vocab_size": 5121,
    "input_frame_rate": 41.6666666667,
    "token_dim": 512,
    "encoder_heads": 8,
    "encoder_units": 2048,
    "encoder_blocks": 6,
    "estimator_channels": [256, 256],
    "estimator_head_dim": 64,
    "estimator_blocks": 4,
    "estimator_mid_blocks": 12,
    "estimator_heads": 8,
    "hift_base_channels": 512,
    "hift_resblock_kernels": [3, 7, 11],
    "hift_resblock_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "hift_source_kernels": [7, 11],
    "hift_source_dilations": [[1, 3, 5], [1, 3, 5]],
    "f0_cond_channels": 512,
}

#: tiny hyper-parameters: same structure, widths small enough to run a decode in well under a second
TINY_HPARAMS: dict[str, object] = {
    "vocab_size": 5121,
    "input_frame_rate": 41.6666666667,
    "token_dim": 32,
    "encoder_heads": 2,
    "encoder_units": 64,
    "encoder_blocks": 2,
    "estimator_channels": [32, 32],
    "estimator_head_dim": 16,
    "estimator_blocks": 1,
    "estimator_mid_blocks": 1,
    "estimator_heads": 2,
    "hift_base_channels": 32,
    "hift_resblock_kernels": [3, 5],
    "hift_resblock_dilations": [[1, 3], [1, 3]],
    "hift_source_kernels": [3, 5],
    "hift_source_dilations": [[1, 3], [1, 3]],
    "f0_cond_channels": 32,
}

_RECIPE_TEMPLATE = """\
# CosyVoice-300M-25Hz decoder recipe ({label}); hyperpyyaml, loadable by Step-Audio's cosyvoice package.
# set random seed, so that you may reproduce your result.
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
__set_seed4: !apply:torch.cuda.manual_seed_all [1986]

# fixed params
sample_rate: 22050
text_encoder_input_size: {token_dim}
spk_embed_dim: 192

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {token_dim}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {vocab_size}
    input_frame_rate: {input_frame_rate}
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        output_size: {token_dim}
        attention_heads: {encoder_heads}
        linear_units: {encoder_units}
        num_blocks: {encoder_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: !ref <text_encoder_input_size>
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: {estimator_channels}
            dropout: 0.0
            attention_head_dim: {estimator_head_dim}
            n_blocks: {estimator_blocks}
            num_mid_blocks: {estimator_mid_blocks}
            num_heads: {estimator_heads}
            act_fn: 'gelu'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {hift_base_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: {hift_resblock_kernels}
    resblock_dilation_sizes: {hift_resblock_dilations}
    source_resblock_kernel_sizes: {hift_source_kernels}
    source_resblock_dilation_sizes: {hift_source_dilations}
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {f0_cond_channels}

# processor functions
feat_extractor: !name:cosyvoice.matcha.audio.mel_spectrogram
    n_fft: 1024
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 256
    win_size: 1024
    fmin: 0
    fmax: 8000
    center: False
"""


def recipe_text(hparams: dict[str, object] | None = None, label: str = "tiny test model") -> str:
    """Render a recipe-format ``cosyvoice.yaml`` for ``hparams`` (default :data:`TINY_HPARAMS`)."""
    return _RECIPE_TEMPLATE.format(label=label, **(hparams or TINY_HPARAMS))


#: channels of the tiny CAM++ stand-in's convolutions
_CAMPPLUS_WIDTH = 64


def _write_campplus_onnx(path: Path, seed: int) -> None:
    """A tiny stand-in for CAM++ whose 192-d embedding depends on the voice.

    ``[1, T, 80]`` fbank -> Conv1d(80, 64, k3) + ReLU -> Conv1d(64, 64, k1) + ReLU -> statistics pooling
    (mean and standard deviation over time, ``[1, 128]``) -> Linear(128, 192).  The projection's
    columns sum to zero over its inputs, so the part of the statistics that every voice shares cancels
    and the embeddings of different voices point in clearly different directions.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    width = _CAMPPLUS_WIDTH

    def normal(*shape: int, fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    projection = normal(2 * width, 192, fan_in=2 * width)
    initializers = {
        "conv1.weight": normal(width, 80, 3, fan_in=80 * 3),
        "conv1.bias": (0.1 * rng.standard_normal(width)).astype(np.float32),
        "conv2.weight": normal(width, width, 1, fan_in=width),
        "conv2.bias": (0.1 * rng.standard_normal(width)).astype(np.float32),
        "proj.weight": (projection - projection.mean(axis=0, keepdims=True)).astype(np.float32),
        "proj.bias": (0.01 * rng.standard_normal(192)).astype(np.float32),
        "std_eps": np.array(1e-5, dtype=np.float32),
        "time_axis": np.array([2], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Transpose", ["input"], ["frames"], perm=[0, 2, 1]),  # [1, 80, T]
        helper.make_node("Conv", ["frames", "conv1.weight", "conv1.bias"], ["conv1"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["hidden1"]),
        helper.make_node("Conv", ["hidden1", "conv2.weight", "conv2.bias"], ["conv2"], kernel_shape=[1]),
        helper.make_node("Relu", ["conv2"], ["hidden2"]),  # [1, 64, T]
        helper.make_node("ReduceMean", ["hidden2"], ["mean_t"], axes=[2], keepdims=1),
        helper.make_node("Sub", ["hidden2", "mean_t"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[2], keepdims=0),
        helper.make_node("Add", ["variance", "std_eps"], ["variance_eps"]),
        helper.make_node("Sqrt", ["variance_eps"], ["std"]),  # [1, 64]
        helper.make_node("Squeeze", ["mean_t", "time_axis"], ["mean"]),  # [1, 64]
        helper.make_node("Concat", ["mean", "std"], ["statistics"], axis=1),  # [1, 128]
        helper.make_node("MatMul", ["statistics", "proj.weight"], ["projected"]),
        helper.make_node("Add", ["projected", "proj.bias"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stepaudio-fixture")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _write_speech_tokenizer_onnx(path: Path, seed: int) -> None:
    """``speech_tokenizer_v1.onnx``: the Step-Audio-Tokenizer fixture's tiny export (same I/O as the real file)."""
    from .tokenizer_fixture import _write_semantic_onnx

    _write_semantic_onnx(path, seed)


def random_flow_hift_states(
    build: Callable[[], Any], seed: int, gain_key: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """float32 state dicts of the ``flow`` and ``hift`` that ``build()`` makes after ``torch.manual_seed(seed)``.

    The random vocoder is kept in a sensible range: voiced F0 around 150 Hz and quiet log-magnitudes (the
    ``conv_post`` weight-norm magnitude ``gain_key`` scaled by 0.3).  Shared with the 24 kHz fixture.
    """
    torch.manual_seed(seed)
    built = build()
    flow_state = {key: value.detach().clone().float() for key, value in built.flow.state_dict().items()}
    hift_state = {key: value.detach().clone().float() for key, value in built.hift.state_dict().items()}
    hift_state["f0_predictor.classifier.bias"] = torch.full_like(hift_state["f0_predictor.classifier.bias"], 150.0)
    hift_state[gain_key] = hift_state[gain_key] * 0.3
    return flow_state, hift_state


def _random_decoder_weights(text: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from stepaudio.cosyvoice.builder import build_from_recipe
    from stepaudio.cosyvoice.config import parse_recipe

    flow_state, hift_state = random_flow_hift_states(
        lambda: build_from_recipe(parse_recipe(text)), seed, "conv_post.weight_g"
    )
    hift_state["conv_post.bias"] = hift_state["conv_post.bias"] + 1.0
    return flow_state, hift_state


def build_tiny_cosyvoice_folder(folder: Path, seed: int = 0, music: bool = False) -> Path:
    """Write a tiny ``CosyVoice-300M-25Hz`` (``music=True``: ``-Music``-style weights) folder and return it.

    The folder holds the five files the original loader opens (``cosyvoice.yaml``, ``flow.pt``,
    ``hift.pt``, ``campplus.onnx``, ``speech_tokenizer_v1.onnx``) and the version marker.
    Deterministic for a given ``seed`` and ``music`` flag (``speech_tokenizer_v1.onnx`` depends on
    ``seed`` only); takes about a second.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label = "tiny test model, music vocoder" if music else "tiny test model"
    text = recipe_text(TINY_HPARAMS, label=label)
    (folder / "cosyvoice.yaml").write_text(text, encoding="utf-8")
    weight_seed = seed * 2 + (1 if music else 0)
    flow_state, hift_state = _random_decoder_weights(text, weight_seed)
    torch.save(flow_state, folder / "flow.pt")
    torch.save(hift_state, folder / "hift.pt")
    _write_campplus_onnx(folder / "campplus.onnx", weight_seed)
    # the same file in the speech and the -Music folder, as in the official checkpoint
    _write_speech_tokenizer_onnx(folder / "speech_tokenizer_v1.onnx", seed)
    (folder / "VERSION_Vq0206Vocoder_1202").write_bytes(b"")
    return folder
