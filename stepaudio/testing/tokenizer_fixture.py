"""A tiny random ``Step-Audio-Tokenizer`` folder in the official layout, built at run time.

The folder has exactly the official file names and formats (see ``stepaudio.tokenizer.layout``):

- ``linguistic_tokenizer.npy``: float32 k-means centroids ``[1024, D_enc]`` (``D_enc`` = the tiny
  encoder's output size; the real file has ``D_enc = 512``).
- ``speech_tokenizer_v1.onnx``: an ONNX graph with the official I/O (``feats`` float32 ``[1, 128, T]``,
  ``feats_length`` int32 ``[1]`` -> ``indices`` int64 ``[1, T']``), two stride-2 kernel-3 padding-1
  convolutions (so ``T' = ceil(ceil(T / 2) / 2)``, 4x reduction as in the real file) and an
  L2-normalised nearest-codebook lookup over 4096 codes.  Exported with the legacy TorchScript ONNX
  exporter (``dynamo=False``), which needs no ``onnxscript``.
- ``dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online/``:
  ``configuration.json`` (ModelScope's file map, which the original's funasr loader reads),
  ``config.yaml`` (``ParaformerStreaming`` + ``SANMEncoderChunkOpt`` + ``WavFrontendOnline`` with the
  real frontend settings including ``dither: 0.0``, tiny widths), ``model.pt`` (a ``torch.save``d state
  dict with the encoder, decoder and predictor tensors of that config), ``am.mvn`` (Kaldi nnet text
  CMVN) and ``tokens.json``.  funasr (the original's loader) can build and load this folder too.

The weights are random (deterministic for a given seed): the codes are meaningless, but every code
path that the real checkpoint exercises (the streaming encoder cache, the ONNX session, the
nearest-centroid search, frame-count rules) runs for real.  Building it needs no funasr.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from ..tokenizer.layout import PARAFORMER_SUBFOLDER

__all__ = ["build_tiny_tokenizer_checkpoint", "TINY_ENCODER_OUTPUT_SIZE"]

TINY_ENCODER_OUTPUT_SIZE = 64
_SEMANTIC_CODEBOOK_SIZE = 4096
_LINGUISTIC_CODEBOOK_SIZE = 1024
_MEL_BINS = 128
_FBANK_BINS = 80
_LFR_M = 7
_LFR_N = 6
_TOKENS = ["<blank>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "<unk>"]


def _paraformer_config() -> dict:
    """The streaming-Paraformer ``config.yaml`` content: the real structure with tiny widths."""
    d = TINY_ENCODER_OUTPUT_SIZE
    return {
        "model": "ParaformerStreaming",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {
            "output_size": d,
            "attention_heads": 4,
            "linear_units": 2 * d,
            "num_blocks": 3,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe_online",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "chunk_size": [12, 15],
            "stride": [8, 10],
            "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4],
            "decoder_att_look_back_factor": [1, 1],
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": 4,
            "linear_units": 2 * d,
            "num_blocks": 1,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "att_layer_num": 1,
            "kernel_size": 11,
            "sanm_shfit": 5,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": d, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": _FBANK_BINS,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": _LFR_M,
            "lfr_n": _LFR_N,
            "dither": 0.0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "normalize": None,
    }


def _write_am_mvn(path: Path, rng: np.random.Generator) -> None:
    """Write a Kaldi-nnet CMVN file (``<AddShift>`` then ``<Rescale>``) for the 560-dim LFR features.

    Shift and scale are in the range real log-mel fbank statistics have (mean about 10, std about 3),
    jittered per dimension, so normalised features are about zero-mean and unit-variance.
    """
    dim = _FBANK_BINS * _LFR_M
    shift = -(10.0 + rng.normal(0.0, 1.0, dim))
    rescale = 1.0 / (3.0 + rng.uniform(0.0, 1.0, dim))

    def row(values: np.ndarray) -> str:
        return "<LearnRateCoef> 0 [ " + " ".join(f"{v:.6f}" for v in values) + " ]"

    lines = [
        "<Nnet>",
        f"<Splice> {dim} {dim}",
        "[ 0 ]",
        f"<AddShift> {dim} {dim}",
        row(shift),
        f"<Rescale> {dim} {dim}",
        row(rescale),
        "</Nnet>",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _configuration_json() -> dict:
    """ModelScope's ``configuration.json`` of a funasr model folder (the original's loader reads its paths)."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.json"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }


def _decoder_and_predictor_shapes(config: dict, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the ``ParaformerSANMDecoder`` and ``CifPredictorV2`` tensors of a ParaformerStreaming.

    stepaudio never reads them, but the official ``model.pt`` holds them and the original's loader
    expects them, so the fixture carries them too (random values).
    """
    d = config["encoder_conf"]["output_size"]
    decoder = config["decoder_conf"]
    hidden, kernel = decoder["linear_units"], decoder["kernel_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.embed.0.weight": (vocab_size, d),
        "decoder.after_norm.weight": (d,),
        "decoder.after_norm.bias": (d,),
        "decoder.output_layer.weight": (vocab_size, d),
        "decoder.output_layer.bias": (vocab_size,),
    }

    def feed_forward(prefix: str) -> None:
        shapes.update(
            {
                f"{prefix}.feed_forward.w_1.weight": (hidden, d),
                f"{prefix}.feed_forward.w_1.bias": (hidden,),
                f"{prefix}.feed_forward.w_2.weight": (d, hidden),
                f"{prefix}.feed_forward.norm.weight": (hidden,),
                f"{prefix}.feed_forward.norm.bias": (hidden,),
            }
        )

    for layer in range(decoder["att_layer_num"]):
        prefix = f"decoder.decoders.{layer}"
        shapes[f"{prefix}.self_attn.fsmn_block.weight"] = (d, 1, kernel)
        for name, shape in (("linear_q", (d, d)), ("linear_k_v", (2 * d, d)), ("linear_out", (d, d))):
            shapes[f"{prefix}.src_attn.{name}.weight"] = shape
            shapes[f"{prefix}.src_attn.{name}.bias"] = (shape[0],)
        feed_forward(prefix)
        for norm in ("norm1", "norm2", "norm3"):
            shapes[f"{prefix}.{norm}.weight"] = (d,)
            shapes[f"{prefix}.{norm}.bias"] = (d,)
    feed_forward("decoder.decoders3.0")
    shapes["decoder.decoders3.0.norm1.weight"] = (d,)
    shapes["decoder.decoders3.0.norm1.bias"] = (d,)
    order = config["predictor_conf"]["l_order"] + config["predictor_conf"]["r_order"] + 1
    shapes.update(
        {
            "predictor.cif_conv1d.weight": (d, d, order),
            "predictor.cif_conv1d.bias": (d,),
            "predictor.cif_output.weight": (1, d),
            "predictor.cif_output.bias": (1,),
        }
    )
    return shapes


def _write_paraformer_folder(folder: Path, seed: int) -> None:
    """Write ``configuration.json``, ``config.yaml``, ``am.mvn``, ``tokens.json`` and a random ``model.pt``.

    ``model.pt`` holds every tensor of a ParaformerStreaming model of the tiny config (encoder from
    stepaudio's own encoder class, decoder and predictor by their published shapes), as a plain
    ``torch.save``d state dict like the official file.
    """
    from ..tokenizer.paraformer import StreamingParaformerEncoder, read_paraformer_config

    folder.mkdir(parents=True, exist_ok=True)
    config = _paraformer_config()
    (folder / "configuration.json").write_text(json.dumps(_configuration_json(), indent=2), encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (folder / "tokens.json").write_text(json.dumps(_TOKENS, ensure_ascii=False), encoding="utf-8")
    rng = np.random.default_rng(seed)
    _write_am_mvn(folder / "am.mvn", rng)

    encoder_config, _ = read_paraformer_config(folder / "config.yaml", folder)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        encoder_shapes = StreamingParaformerEncoder(encoder_config).expected_shapes()
    shapes = {**encoder_shapes, **_decoder_and_predictor_shapes(config, len(_TOKENS))}
    for key, shape in shapes.items():
        if key.endswith(".bias"):
            value = torch.randn(shape, generator=generator) * 0.02
        elif "norm" in key.rsplit(".", 2)[-2]:
            value = 1.0 + torch.randn(shape, generator=generator) * 0.05
        else:  # fan-in scaled weights keep activations of the tiny random encoder well spread
            fan_in = max(1, int(np.prod(shape[1:])))
            value = torch.randn(shape, generator=generator) / np.sqrt(fan_in)
        state[key] = value.contiguous()
    torch.save(state, folder / "model.pt")


class _TinySemanticTokenizer(torch.nn.Module):
    """Two stride-2 k3 p1 convolutions and a cosine nearest-codebook lookup (the real file's I/O)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv1d(_MEL_BINS, width, kernel_size=3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.codebook = torch.nn.Parameter(torch.randn(_SEMANTIC_CODEBOOK_SIZE, width))

    def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
        frames = torch.arange(feats.shape[2], device=feats.device).unsqueeze(0)
        valid = (frames < feats_length.to(torch.int64).unsqueeze(1)).to(feats.dtype)
        hidden = torch.nn.functional.gelu(self.conv1(feats * valid.unsqueeze(1)))
        hidden = self.conv2(hidden).transpose(1, 2)
        hidden = torch.nn.functional.normalize(hidden, dim=-1)
        codebook = torch.nn.functional.normalize(self.codebook, dim=-1)
        return torch.argmax(hidden @ codebook.t(), dim=-1)


def _write_semantic_onnx(path: Path, seed: int) -> None:
    """Export the tiny semantic tokenizer with the official input/output names and dtypes."""
    torch.manual_seed(seed + 1)
    model = _TinySemanticTokenizer().eval()
    example = (torch.zeros(1, _MEL_BINS, 100), torch.tensor([100], dtype=torch.int32))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model,
            example,
            buffer,
            input_names=["feats", "feats_length"],
            output_names=["indices"],
            dynamic_axes={"feats": {2: "frames"}, "indices": {1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    path.write_bytes(buffer.getvalue())


def build_tiny_tokenizer_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random ``Step-Audio-Tokenizer`` folder (official layout) into ``folder``.

    Args:
        folder: the folder to create (parents are created); existing files of the layout are replaced.
        seed: random seed; the same seed gives byte-identical centroids and identical weights.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`, ready for ``StepAudioTokenizer(folder)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((_LINGUISTIC_CODEBOOK_SIZE, TINY_ENCODER_OUTPUT_SIZE)).astype(np.float32)
    np.save(folder / "linguistic_tokenizer.npy", centroids)
    _write_semantic_onnx(folder / "speech_tokenizer_v1.onnx", seed)
    _write_paraformer_folder(folder / PARAFORMER_SUBFOLDER, seed)
    return folder
