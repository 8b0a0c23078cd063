"""The one streaming contract (:mod:`stepaudio.streaming`), checked for every ``Stream`` subclass in the package.

Every stream keeps its state in one dataclass, refuses ``feed``/``close`` after ``close`` (naming its
class), starts over with ``reset()`` (same output as a fresh stream), and gives the same output
whether its input comes in pieces or all at once.  ``test_every_stream_is_covered`` fails when a
new ``Stream`` subclass appears in ``stepaudio`` without a case here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from cosyvoice2_fixtures import mixed_codes, tiny_cosyvoice2_dir, tiny_decoder_24k  # noqa: F401
from cosyvoice_fixtures import tiny_cosyvoice_dir, tiny_decoder  # noqa: F401

import stepaudio
from stepaudio.cosyvoice import StreamingConfig
from stepaudio.cosyvoice.token_to_wav_stream import TokenToWavStream
from stepaudio.cosyvoice2 import CosyVoice2Stream
from stepaudio.cosyvoice2 import StreamConfig as StreamConfig24k
from stepaudio.errors import StreamClosedError
from stepaudio.realtime.sentences import SentenceStream
from stepaudio.resample import ResamplerStream
from stepaudio.streaming import Stream
from stepaudio.tokenizer import StepAudioTokenizer
from stepaudio.tokenizer.linguistic import LinguisticStream
from stepaudio.tokenizer.semantic import SemanticStream
from stepaudio.tokenizer.stream import TokenizerStream

TEXT = (
    "Hello there. 你好！这是一个比较长的句子，里面有逗号、顿号和分号；还有问号吗？"
    'Yes!! "Quoted." A long clause without any stop at all that must be cut somewhere, twice, 3.14 ok'
)


@dataclass
class Case:
    """One stream configuration under the contract.

    Attributes:
        cls: the Stream subclass it covers.
        make: builds a fresh stream.
        data: the whole input; pieces are slices of it (an array, a string or a list of tokens).
        chunk_sizes: piece sizes whose concatenated output must equal feeding ``data`` at once
            (exactly); empty
            when the output depends on the chunking by design (the reason is in ``why_not_chunked``).
        why_not_chunked: why ``chunk_sizes`` is empty.
    """

    cls: type[Stream]
    make: Callable[[], Stream]
    data: Sequence
    chunk_sizes: tuple[int, ...]
    why_not_chunked: str = ""


def _speech(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(str(path), dtype="float32")
    return audio[: int(seconds * rate)], rate


def _build_cases(tokenizer: StepAudioTokenizer, decoder, audio_dir: Path, decoder_24k) -> dict[str, Case]:
    speech_16k, _ = _speech(audio_dir / "BAC009S0764W0121.wav", 1.5)
    speech_22k, rate_22k = _speech(audio_dir / "piper_en_22k.wav", 0.5)
    mel = torch.randn(1, 40, 80, generator=torch.Generator().manual_seed(3)) - 5
    prompt = torch.randint(0, 5120, (1, 20), generator=torch.Generator().manual_seed(3))
    embedding = torch.randn(1, 192, generator=torch.Generator().manual_seed(4))
    tokens = torch.randint(0, 5120, (60,), generator=torch.Generator().manual_seed(1)).tolist()
    small_windows = StreamingConfig(
        first_chunk_tokens=10, chunk_tokens=20, chunk_growth=1.0, lookahead_tokens=8, left_context_tokens=40
    )
    causal = "the running peak, hence the gain of early strides, depends on how much audio came with them"
    bounded = "vq06 codes see a bounded context that depends on when they are emitted (the exact-mode case is chunked)"
    return {
        "resampler-22k-16k": Case(ResamplerStream, lambda: ResamplerStream(rate_22k, 16000), speech_22k, (1, 97, 4410)),
        "resampler-same-rate": Case(ResamplerStream, lambda: ResamplerStream(16000, 16000), speech_16k, (1000,)),
        "linguistic": Case(
            LinguisticStream, lambda: LinguisticStream(tokenizer.linguistic), speech_16k, (512, 3840, 5555)
        ),
        "linguistic-causal-gain": Case(
            LinguisticStream,
            lambda: LinguisticStream(tokenizer.linguistic, causal_gain=True),
            speech_16k,
            (),
            why_not_chunked=causal,
        ),
        "semantic-exact": Case(
            SemanticStream, lambda: SemanticStream(tokenizer.semantic, 3.0, 30.0), speech_16k, (512, 7777)
        ),
        "semantic-bounded-causal-gain": Case(
            SemanticStream,
            lambda: SemanticStream(tokenizer.semantic, 3.0, 0.3, causal_gain=True),
            speech_16k,
            (),
            why_not_chunked=f"{bounded}; {causal}",
        ),
        "tokenizer-exact": Case(
            TokenizerStream,
            lambda: tokenizer.stream(16000, semantic_right_context_s=30),
            speech_16k,
            (512, 1600, 7777),
        ),
        "tokenizer-22k-peak": Case(
            TokenizerStream,
            lambda: tokenizer.stream(rate_22k, peak=0.4, semantic_right_context_s=30),
            speech_22k,
            (441, 2000),
        ),
        "tokenizer-bounded-causal-gain": Case(
            TokenizerStream,
            lambda: tokenizer.stream(16000, causal_gain=True, semantic_right_context_s=0.3),
            speech_16k,
            (),
            why_not_chunked=f"{bounded}; {causal}",
        ),
        "token-to-wav": Case(
            TokenToWavStream,
            lambda: decoder.stream(mel, 40, prompt, 20, embedding, small_windows),
            tokens,
            (1, 7, 25),
        ),
        "token-to-wav-24k": Case(
            CosyVoice2Stream,
            lambda: decoder_24k.stream(mixed_codes(4, 8), mel[:, :24], embedding, StreamConfig24k(chunk_steps=(6, 9))),
            mixed_codes(16, 9, extra=2),
            (1, 7, 25),
        ),
        "sentences": Case(SentenceStream, lambda: SentenceStream(max_chars=24), TEXT, (1, 3, 10)),
    }


CASE_NAMES = (
    "resampler-22k-16k",
    "resampler-same-rate",
    "linguistic",
    "linguistic-causal-gain",
    "semantic-exact",
    "semantic-bounded-causal-gain",
    "tokenizer-exact",
    "tokenizer-22k-peak",
    "tokenizer-bounded-causal-gain",
    "token-to-wav",
    "token-to-wav-24k",
    "sentences",
)
CHUNK_INVARIANT = tuple(name for name in CASE_NAMES if "causal-gain" not in name)
COVERED = {
    ResamplerStream,
    LinguisticStream,
    SemanticStream,
    TokenizerStream,
    TokenToWavStream,
    CosyVoice2Stream,
    SentenceStream,
}


@pytest.fixture(scope="module")
def cases(
    tiny_tokenizer_dir: Path, tiny_decoder, shared_audio_dir: Path, tiny_decoder_24k  # noqa: F811
) -> Iterator[dict[str, Case]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    yield _build_cases(tokenizer, tiny_decoder, shared_audio_dir, tiny_decoder_24k)
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ helpers
def _pieces(data: Sequence, size: int) -> list:
    return [data[start : start + size] for start in range(0, len(data), size)]


def _run(stream: Stream, pieces: list) -> list:
    """Every output: one per piece, then the output of close()."""
    outputs = [stream.feed(piece) for piece in pieces]
    return outputs + [stream.close()]


def _join(outputs: list) -> object:
    if isinstance(outputs[0], np.ndarray):
        return np.concatenate(outputs)
    if isinstance(outputs[0], torch.Tensor):
        return torch.cat(outputs, dim=1)
    return [item for output in outputs for item in output]


def _assert_same(actual: object, expected: object) -> None:
    """Exactly equal (values, lengths and, for arrays, dtypes)."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    else:
        assert actual == expected


def _some_pieces(case: Case) -> list:
    return _pieces(case.data, case.chunk_sizes[0] if case.chunk_sizes else 1000 if len(case.data) > 1000 else 5)


# ------------------------------------------------------------------------------------------ coverage
def _stream_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= _stream_subclasses(sub)
    return found


#: Modules that subclass vLLM's classes and so import vLLM (CUDA-only; not installed in CI); they define no Stream.
NEEDS_VLLM = {"stepaudio.vllm.logits_processors"}


def test_every_stream_is_covered() -> None:
    """A new Stream subclass anywhere in stepaudio must be added to this file's cases."""
    for module in pkgutil.walk_packages(stepaudio.__path__, prefix="stepaudio."):
        if module.name.endswith("__main__") or module.name in NEEDS_VLLM:
            continue
        importlib.import_module(module.name)
    in_package = {cls for cls in _stream_subclasses(Stream) if cls.__module__.startswith("stepaudio.")}
    missing = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in in_package - COVERED)
    assert not missing, f"Stream subclasses without a case in tests/test_streaming_contract.py: {missing}"
    assert COVERED <= in_package  # the case list does not name classes that are gone


def test_cases_cover_every_listed_class(cases: dict[str, Case]) -> None:
    assert set(cases) == set(CASE_NAMES)
    assert {case.cls for case in cases.values()} == COVERED
    for name, case in cases.items():
        assert bool(case.chunk_sizes) == (name in CHUNK_INVARIANT) != bool(case.why_not_chunked), name
    # every class has at least one configuration whose output must not depend on the chunking
    assert {case.cls for case in cases.values() if case.chunk_sizes} == COVERED


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", CASE_NAMES)
def test_state_is_one_dataclass(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    stream = case.make()
    assert type(stream) is case.cls
    assert dataclasses.is_dataclass(stream.state) and not isinstance(stream.state, type)
    stream.feed(case.data[: max(1, len(case.data) // 3)])
    assert dataclasses.is_dataclass(stream.state) and not isinstance(stream.state, type)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_closed_stream_refuses_feed_and_second_close(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    stream = case.make()
    stream.feed(case.data[:10])
    assert not stream.closed
    stream.close()
    assert stream.closed
    with pytest.raises(StreamClosedError, match=rf"^{case.cls.__name__}\.feed\(\) was called after close\(\)"):
        stream.feed(case.data[:10])
    with pytest.raises(StreamClosedError, match=rf"^{case.cls.__name__}\.close\(\) was called twice"):
        stream.close()


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reset_gives_the_output_of_a_fresh_stream(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    pieces = _some_pieces(case)
    fresh = _run(case.make(), pieces)

    stream = case.make()
    _run(stream, pieces)
    stream.reset()  # after close
    assert not stream.closed
    again = _run(stream, pieces)
    assert len(again) == len(fresh)
    for got, expected in zip(again, fresh, strict=True):  # piece by piece, not only in total
        _assert_same(got, expected)

    stream.reset()
    stream.feed(case.data[: len(case.data) // 2])
    stream.reset()  # mid-stream: the half fed is forgotten, nothing is flushed
    assert not stream.closed
    _assert_same(_join(_run(stream, pieces)), _join(fresh))


@pytest.mark.parametrize("name", CHUNK_INVARIANT)
def test_chunked_equals_all_at_once(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    whole = _join(_run(case.make(), [case.data]))
    assert (whole.shape[-1] if hasattr(whole, "shape") else len(whole)) > 0
    for size in case.chunk_sizes:
        _assert_same(_join(_run(case.make(), _pieces(case.data, size))), whole)


def test_tokenizer_reset_clears_result_and_inner_streams(cases: dict[str, Case]) -> None:
    case = cases["tokenizer-bounded-causal-gain"]
    stream = case.make()
    first = _join(_run(stream, _pieces(case.data, 512)))
    assert stream.result == first and stream.state.running_peak > 0
    stream.reset()
    stream.feed(case.data[:8000])
    assert stream.result and stream.state.running_peak > 0
    stream.reset()
    assert stream.result == [] and stream.state.running_peak == 0 and stream.state.samples_in == 0
    assert not stream.linguistic.closed and not stream.semantic.closed
    assert stream.linguistic.state.peak == 0 and stream.semantic.state.peak == 0
    assert stream.semantic.state.received == 0 and len(stream.linguistic.state.pending) == 0
    assert _join(_run(stream, _pieces(case.data, 512))) == first == stream.result


class _CountingStream(Stream[int, list[int]]):
    """Holds every piece back until close(); counts how often the held-back output was computed."""

    def __init__(self) -> None:
        super().__init__()
        self.state = _CountingState()
        self.flushes = 0

    def _feed(self, piece: int) -> list[int]:
        self.state.held.append(piece)
        return []

    def _flush(self) -> list[int]:
        self.flushes += 1
        return list(self.state.held)

    def _reset(self) -> None:
        self.state = _CountingState()


@dataclasses.dataclass
class _CountingState:
    held: list[int] = dataclasses.field(default_factory=list)


def test_with_block_flushes_on_normal_exit_and_drops_held_output_on_an_exception() -> None:
    with _CountingStream() as stream:
        stream.feed(1)
    assert stream.closed and stream.flushes == 1

    def consumer():  # a generator stopped early, as a TTS stream is at a barge-in
        with _CountingStream() as inner:
            holder.append(inner)
            inner.feed(1)
            yield 1
            yield 2

    holder: list[_CountingStream] = []
    generator = consumer()
    next(generator)
    generator.close()  # GeneratorExit inside the with block
    assert holder[0].closed and holder[0].flushes == 0
    with pytest.raises(ValueError), _CountingStream() as failing:
        raise ValueError("boom")
    assert failing.closed and failing.flushes == 0
