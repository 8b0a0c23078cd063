"""A tiny SentencePiece model with the official Step tokenizer's id layout, trained on the fly.

The official ``tokenizer.model`` (shared by Step-Audio-Chat and Step-Audio-TTS-3B) has
``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<|EOT|>`` = 3, ``<|BOT|>`` = 4, ordinary pieces, and
``<audio_N>`` = 65536 + N for N = 0..5119, inside a vocabulary of 74752 rows.  This builder trains a
small BPE model on a built-in bilingual corpus, then fills the id space with unused placeholder
pieces so that the special and audio pieces land at exactly those ids.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

__all__ = [
    "AUDIO_TOKEN_OFFSET",
    "NUM_AUDIO_TOKENS",
    "STEP_VOCAB_SIZE",
    "build_step_sentencepiece_model",
]

AUDIO_TOKEN_OFFSET = 65536
NUM_AUDIO_TOKENS = 5120
STEP_VOCAB_SIZE = 74752
SPECIAL_PIECES = ("<|EOT|>", "<|BOT|>")

_CORPUS = """\
human
assistant
system
You are a helpful assistant.
Hello, how are you today? I am fine, thank you.
The quick brown fox jumps over the lazy dog.
Speech recognition test number two.
What is the weather like in Shanghai tomorrow?
Please read the following text aloud with a happy voice.
Tell me a short story about a cat and a small robot.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2025.
请记录下你所听到的语音内容。
你好，今天天气怎么样？
适配用户的语言，用简短口语化的文字回答
甚至出现交易几乎停滞的情况
一二线城市虽然也处于调整中
那等我们到海洋馆之后，给妈妈买个礼物，好不好呀？
叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。
作为一名卓越的声优演员，你的任务是根据文本中（）或()括号内标注的情感、语种或方言、音乐哼唱、语音调整等标签，以丰富细腻的情感和自然顺畅的语调来朗读文本。
高兴 悲伤 生气 四川话 粤语 说唱 哼唱 慢速 快速
"""


def build_step_sentencepiece_model(
    vocab_size: int = STEP_VOCAB_SIZE,
    trained_pieces: int = 600,
) -> bytes:
    """Train a small BPE SentencePiece model and lay its ids out like the official Step tokenizer.

    Args:
        vocab_size: total number of pieces (the official model embeds 74752 rows).
        trained_pieces: size of the trained part (ids ``0 .. trained_pieces - 1``).

    Returns:
        The serialised ``ModelProto`` (the bytes of a ``tokenizer.model`` file).
    """
    if vocab_size < AUDIO_TOKEN_OFFSET + NUM_AUDIO_TOKENS:
        raise ValueError(
            f"vocab_size {vocab_size} cannot hold <audio_0>..<audio_{NUM_AUDIO_TOKENS - 1}> at "
            f"{AUDIO_TOKEN_OFFSET}..{AUDIO_TOKEN_OFFSET + NUM_AUDIO_TOKENS - 1}"
        )
    sentences = [line for line in _CORPUS.splitlines() if line] * 8
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model_bytes,
        model_type="bpe",
        vocab_size=trained_pieces,
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=list(SPECIAL_PIECES),
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes.getvalue())
    piece_type = sentencepiece_model_pb2.ModelProto.SentencePiece

    def add_piece(text: str, kind: int) -> None:
        piece = proto.pieces.add()
        piece.piece = text
        piece.score = 0.0
        piece.type = kind

    while len(proto.pieces) < AUDIO_TOKEN_OFFSET:
        add_piece(f"<unused_{len(proto.pieces)}>", piece_type.UNUSED)
    for n in range(NUM_AUDIO_TOKENS):
        add_piece(f"<audio_{n}>", piece_type.USER_DEFINED)
    while len(proto.pieces) < vocab_size:
        add_piece(f"<unused_{len(proto.pieces)}>", piece_type.UNUSED)
    return proto.SerializeToString()


def write_step_sentencepiece_model(path: Path, data: bytes | None = None) -> Path:
    """Write ``data`` (default: :func:`build_step_sentencepiece_model`) to ``path``, checking the official ids."""
    data = build_step_sentencepiece_model() if data is None else data
    processor = spm.SentencePieceProcessor(model_proto=data)
    for piece, expected in (("<s>", 1), ("<|EOT|>", 3), ("<|BOT|>", 4), ("<audio_0>", AUDIO_TOKEN_OFFSET)):
        actual = processor.piece_to_id(piece)
        if actual != expected:
            raise RuntimeError(f"fixture tokenizer: {piece} got id {actual}, expected {expected}")
    path.write_bytes(data)
    return path
