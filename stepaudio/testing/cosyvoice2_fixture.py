"""Tiny, deterministic Step-Audio-EditX ``CosyVoice-300M-25Hz`` folders (24 kHz decoder, random weights).

:func:`build_tiny_cosyvoice2_folder` writes

* ``cosyvoice.yaml`` -- a hyperpyyaml recipe in the EditX spelling (``!new:stepvocoder.cosyvoice2...``
  classes with their original parameter names, ``!ref``, a seed line and the plain ``mel_conf`` mapping)
  with tiny widths but the official structure (upsampling encoder with look-ahead 3, DiT, 24 kHz HiFT
  with upsample rates 8, 5, 3);
* ``flow.pt`` / ``hift.pt`` -- ``torch.save``d plain fp32 state dicts in the official key naming (the
  vocoder's weight-normed convolutions as ``parametrizations.weight.original0/1``);
* ``campplus.onnx`` -- the tiny CAM++ stand-in of :mod:`stepaudio.testing.cosyvoice_fixture`.

:func:`recipe_text_24k` also renders the recipe with :data:`OFFICIAL_HPARAMS_24K` (sizes of the published
files as far as they are known, see ``shared/reference/editx_decoder.md``) for meta-device checks.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["OFFICIAL_HPARAMS_24K", "TINY_HPARAMS_24K", "build_tiny_cosyvoice2_folder", "recipe_text_24k"]

#: the published decoder's sizes (read from the EditX code where stated there, else CosyVoice2 defaults)
OFFICIAL_HPARAMS_24K: dict[str, object] = {
    "width": 512,
    "vocab_size": 5121,
    "encoder_heads": 8,
    "encoder_units": 2048,
    "encoder_blocks": 6,
    "up_blocks": 4,
    "dit_hidden": 512,
    "dit_depth": 16,
    "dit_heads": 8,
    "dit_head_dim": 64,
    "dit_mlp_ratio": 4.0,
    "hift_base_channels": 512,
    "f0_cond_channels": 512,
}

#: tiny sizes with the same structure (kernels, strides and rates as the original)
TINY_HPARAMS_24K: dict[str, object] = {
    "width": 32,
    "vocab_size": 5121,
    "encoder_heads": 2,
    "encoder_units": 64,
    "encoder_blocks": 2,
    "up_blocks": 1,
    "dit_hidden": 32,
    "dit_depth": 2,
    "dit_heads": 2,
    "dit_head_dim": 16,
    "dit_mlp_ratio": 2.0,
    "hift_base_channels": 32,
    "f0_cond_channels": 32,
}

_RECIPE_TEMPLATE = """\
# Step-Audio-EditX CosyVoice-300M-25Hz (CosyVoice2-style, 24 kHz) decoder recipe ({label}); hyperpyyaml.
__set_seed1: !apply:torch.manual_seed [1986]

sample_rate: 24000
spk_embed_dim: 192
width: {width}

flow: !new:stepvocoder.cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: !ref <width>
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {vocab_size}
    input_embedding: !new:stepvocoder.cosyvoice2.embedding.dual_codebook.DualCodebookEmbedding
        vocab_size: {vocab_size}
        input_size: !ref <width>
    encoder: !new:stepvocoder.cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: !ref <width>
        output_size: !ref <width>
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: {encoder_blocks}
        num_up_blocks: {up_blocks}
        up_stride: 2
        up_scale_factor: 2
        attention_heads: {encoder_heads}
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: True
        linear_units: {encoder_units}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        activation_type: 'swish'
    decoder: !new:stepvocoder.cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:stepvocoder.cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: {dit_mlp_ratio}
            depth: {dit_depth}
            num_heads: {dit_heads}
            head_dim: {dit_head_dim}
            hidden_size: {dit_hidden}

hift: !new:stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {hift_base_channels}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:stepvocoder.cosyvoice2.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {f0_cond_channels}

mel_conf:
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
"""


def recipe_text_24k(hparams: dict[str, object] | None = None, label: str = "tiny test model") -> str:
    """Render an EditX-format ``cosyvoice.yaml`` for ``hparams`` (default :data:`TINY_HPARAMS_24K`)."""
    return _RECIPE_TEMPLATE.format(label=label, **(hparams or TINY_HPARAMS_24K))


def _random_weights(text: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from stepaudio.cosyvoice.config import parse_recipe
    from stepaudio.cosyvoice2.builder import build_24k_recipe

    from .cosyvoice_fixture import random_flow_hift_states

    return random_flow_hift_states(
        lambda: build_24k_recipe(parse_recipe(text)), seed, "conv_post.parametrizations.weight.original0"
    )


def build_tiny_cosyvoice2_folder(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny EditX ``CosyVoice-300M-25Hz`` folder (recipe, ``flow.pt``, ``hift.pt``, ``campplus.onnx``).

    Deterministic for a given ``seed``; takes about a second.
    """
    from .cosyvoice_fixture import _write_campplus_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = recipe_text_24k()
    (folder / "cosyvoice.yaml").write_text(text, encoding="utf-8")
    flow_state, hift_state = _random_weights(text, seed)
    torch.save(flow_state, folder / "flow.pt")
    torch.save(hift_state, folder / "hift.pt")
    _write_campplus_onnx(folder / "campplus.onnx", seed)
    return folder
