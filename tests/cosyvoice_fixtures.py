"""Session fixtures shared by the tests/test_cosyvoice_*.py files (imported by them, not a conftest)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from stepaudio.testing.cosyvoice_fixture import build_tiny_cosyvoice_folder

# ------------------------------------------------------------------------------------- recipe spellings
# Sections of a full CosyVoice training recipe that inference never needs: a text LM whose encoder uses
# chunk masks (an error if it were ever built), data-pipeline functions, an optimiser and training settings.
_LM_SECTION = """
llm_input_size: 48
llm_output_size: 48

llm: !new:cosyvoice.llm.llm.TransformerLM
    text_encoder_input_size: !ref <text_encoder_input_size>
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    text_token_size: 51866
    speech_token_size: 4096
    length_normalized_loss: True
    lsm_weight: 0
    spk_embed_dim: !ref <spk_embed_dim>
    text_encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        input_size: !ref <text_encoder_input_size>
        output_size: !ref <llm_input_size>
        attention_heads: 4
        linear_units: 96
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        use_cnn_module: False
        macaron_style: False
        use_dynamic_chunk: False
        use_dynamic_left_chunk: False
        static_chunk_size: 1
    llm: !new:cosyvoice.transformer.encoder.TransformerEncoder
        input_size: !ref <llm_input_size>
        output_size: !ref <llm_output_size>
        attention_heads: 4
        linear_units: 96
        num_blocks: 3
        input_layer: 'linear_legacy'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        static_chunk_size: 1
"""

_TRAINING_SECTIONS = """
# data pipeline
parquet_opener: !name:cosyvoice.dataset.processor.parquet_opener
get_tokenizer: !name:whisper.tokenizer.get_tokenizer
    multilingual: True
    num_languages: 100
    language: 'en'
    task: 'transcribe'
allowed_special: 'all'
tokenize: !name:cosyvoice.dataset.processor.tokenize
    get_tokenizer: !ref <get_tokenizer>
    allowed_special: !ref <allowed_special>
filter: !name:cosyvoice.dataset.processor.filter
    max_length: 40960
    min_length: 0
    token_max_length: 200
    token_min_length: 1
resample: !name:cosyvoice.dataset.processor.resample
    resample_rate: !ref <sample_rate>
compute_fbank: !name:cosyvoice.dataset.processor.compute_fbank
    feat_extractor: !ref <feat_extractor>
parse_embedding: !name:cosyvoice.dataset.processor.parse_embedding
    normalize: True
shuffle: !name:cosyvoice.dataset.processor.shuffle
    shuffle_size: 1000
sort: !name:cosyvoice.dataset.processor.sort
    sort_size: 500
batch: !name:cosyvoice.dataset.processor.batch
    batch_type: 'dynamic'
    max_frames_in_batch: 2000
padding: !name:cosyvoice.dataset.processor.padding
data_pipeline: [
    !ref <parquet_opener>,
    !ref <tokenize>,
    !ref <filter>,
    !ref <resample>,
    !ref <compute_fbank>,
    !ref <parse_embedding>,
    !ref <shuffle>,
    !ref <sort>,
    !ref <batch>,
    !ref <padding>,
]

# training
optim: !name:torch.optim.Adam
    lr: 0.001
scheduler: !name:cosyvoice.utils.scheduler.WarmupLR
    warmup_steps: 2500
criterion: !new:torch.nn.L1Loss
activation_module: !module:torch.nn.functional
kernel_pair: !tuple (3, 5)
train_conf:
    optim: adam
    optim_conf:
        lr: 0.001
    scheduler: warmuplr
    scheduler_conf:
        warmup_steps: 2500
    max_epoch: 200
    grad_clip: 5
    accum_grad: 2
    log_interval: 100
    save_per_step: -1
"""


def cosyvoice_recipe_spelling(text: str) -> str:
    """The CosyVoice repository's spelling of the mel function (``matcha`` is a top-level package there)."""
    assert "!name:cosyvoice.matcha.audio.mel_spectrogram" in text
    return text.replace("!name:cosyvoice.matcha.audio.mel_spectrogram", "!name:matcha.utils.audio.mel_spectrogram")


def full_training_recipe(text: str) -> str:
    """``text`` plus a text LM, the data-pipeline functions and training sections, as in a training recipe."""
    head, tail = text.split("\nflow: ", 1)
    return cosyvoice_recipe_spelling(head + _LM_SECTION + "\nflow: " + tail + _TRAINING_SECTIONS)


def foreign_prefix_spelling(text: str) -> str:
    """Every class/function under another package prefix (e.g. a vendored copy of the original tree)."""
    text = re.sub(r"!(new|name):cosyvoice\.[\w.]*\.(\w+)", r"!\1:vendor.step_audio.models.\2", text)
    return text.replace("!new:omegaconf.DictConfig", "!new:omegaconf.dictconfig.DictConfig")


#: the recipe spellings a loader must accept: ``{id: text -> text}`` applied to the fixture's recipe text
RECIPE_SPELLINGS = {
    "step-audio-original": lambda text: text,
    "cosyvoice-recipe-matcha-utils": cosyvoice_recipe_spelling,
    "training-recipe-with-llm-data-pipeline-and-seeds": full_training_recipe,
    "foreign-module-prefix": foreign_prefix_spelling,
}


def copy_decoder_folder(source: Path, tmp_path: Path) -> Path:
    """A copy of the decoder folder ``source`` at ``tmp_path / "CosyVoice-300M-25Hz"`` (for tests that damage it)."""
    target = tmp_path / "CosyVoice-300M-25Hz"
    shutil.copytree(source, target)
    return target


def assert_weights_equal_files(folder: Path, decoder) -> None:
    """The loaded ``decoder.flow`` / ``decoder.hift`` state dicts hold exactly ``folder``'s flow.pt / hift.pt."""
    for name, module in (("flow.pt", decoder.flow), ("hift.pt", decoder.hift)):
        stored = torch.load(folder / name, weights_only=True)
        state = module.state_dict()
        assert set(state) == set(stored)
        for key, value in stored.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0)


@pytest.fixture(scope="session")
def tiny_cosyvoice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CosyVoice-300M-25Hz folder in the official layout."""
    return build_tiny_cosyvoice_folder(tmp_path_factory.mktemp("cosyvoice") / "CosyVoice-300M-25Hz", seed=0)


@pytest.fixture(scope="session")
def tiny_decoder(tiny_cosyvoice_dir: Path):
    """The tiny decoder loaded on the CPU (fp32)."""
    from stepaudio.cosyvoice import CosyVoiceDecoder

    return CosyVoiceDecoder.from_pretrained(tiny_cosyvoice_dir, device="cpu")


@pytest.fixture(scope="session")
def tingting_prompt(shared_audio_dir: Path, tiny_decoder):
    """Prompt features (mel, length, x-vector) of the real Tingting prompt clip, plus random prompt tokens."""
    waveform, sample_rate = sf.read(shared_audio_dir / "speakers" / "Tingting_prompt.wav", dtype="float32")
    features = tiny_decoder.prompt_features(waveform, sample_rate)
    generator = torch.Generator().manual_seed(7)
    prompt_tokens = torch.randint(0, 5120, (1, 180), generator=generator)  # 4.3 s of tokens at 41.67/s
    return features, prompt_tokens


@pytest.fixture()
def one_torch_thread():
    """Run a test with one intra-op thread (restored afterwards).

    The test machine is shared; with two OpenMP threads and a busy core, small convolutions can stall
    for seconds, so the decoding tests pin torch to one thread while they run.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
