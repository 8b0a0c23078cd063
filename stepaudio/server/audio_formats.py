"""Audio in and out of the API: base64 and uploads decoded with limits, replies encoded whole or as a stream.

Output formats (``response_format`` of ``/v1/audio/speech``, ``audio.format`` of chat completions),
all mono at the server's ``sample_rate`` (default 24000, as OpenAI; the TTS makes 22050, resampled):

========  ==================================================
format    what is sent
========  ==================================================
``wav``   16-bit PCM WAV
``pcm``   raw 16-bit little-endian samples, no header (``pcm16`` in chat)
``flac``  FLAC 16-bit
``mp3``   MPEG Layer III (constant bitrate when streamed)
``opus``  Ogg Opus (at 24000 when ``sample_rate`` is not one of Opus's 8/12/16/24/48 kHz)
========  ==================================================

Streams (``stream_format``, streamed chat audio) are one file sent in pieces: concatenating every
piece gives a valid file.  A streamed ``wav`` has the length fields set to ``0xFFFFFFFF`` ("until the
end of the stream"); ``flac`` cannot be streamed (its header holds the length); ``opus`` pieces come
about once a second (an Ogg page at a time).

Input audio (chat ``input_audio``, transcription files, ``ref_audio``) is anything libsndfile reads:
WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, ...; ``pcm16`` is raw 16-bit little-endian mono at the
server's ``sample_rate``.  It is decoded block by block and refused once it exceeds the duration limit, so a
small compressed file cannot expand into hours of samples.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from dataclasses import dataclass

import numpy as np

from ..resample import ResamplerStream, resample
from .errors import APIError

__all__ = [
    "CHAT_AUDIO_FORMATS",
    "INPUT_AUDIO_FORMATS",
    "MEDIA_TYPES",
    "OPUS_SAMPLE_RATE",
    "OPUS_SAMPLE_RATES",
    "OUTPUT_FORMATS",
    "STREAM_FORMATS",
    "DecodedAudio",
    "StreamEncoder",
    "decode_audio",
    "decode_base64",
    "encode_audio",
    "output_sample_rate",
]

#: ``response_format`` values of ``/v1/audio/speech``.
OUTPUT_FORMATS = ("wav", "pcm", "flac", "mp3", "opus")
#: ``audio.format`` values of chat completions (``pcm16`` is ``pcm``).
CHAT_AUDIO_FORMATS = ("wav", "pcm16", "flac", "mp3", "opus")
#: Output formats that can be streamed.
STREAM_FORMATS = ("pcm", "wav", "mp3", "opus")
#: Declared formats accepted for chat ``input_audio`` (the content decides; ``pcm16`` is raw samples).
INPUT_AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "opus", "pcm16")
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
}
#: Sample rates Ogg Opus can carry, and the one used when the server's rate is none of them.
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_SAMPLE_RATE = 24000

_SOUNDFILE_FORMATS = {
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "wav": ("WAV", "PCM_16"),
}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[\w.+-]+)*);base64,", re.IGNORECASE)
_BLOCK_FRAMES = 1 << 16
_BASE64_HINT = "send the audio file itself, base64-encoded; URLs and server paths are not accepted"


def output_sample_rate(fmt: str, rate: int) -> int:
    """The sample rate ``fmt`` is sent at when the server sends audio at ``rate`` (Opus has only five)."""
    if fmt == "opus" and rate not in OPUS_SAMPLE_RATES:
        return OPUS_SAMPLE_RATE
    return rate


# ------------------------------------------------------------------------------------------- input
@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples of an uploaded clip."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def decode_base64(data: object, param: str) -> bytes:
    """The bytes of base64 text (plain or a ``data:audio/...;base64,`` URL); a URL or a path is refused."""
    if not isinstance(data, str):
        raise APIError(400, f"{param} must be base64 text, got {type(data).__name__}", param=param, code="invalid_type")
    text = data.strip()
    match = _DATA_URL.match(text)
    if match is not None:
        text = text[match.end() :]
    elif ":" in text[:100]:  # never in base64: a URL or a path
        raise APIError(
            400,
            f"{param} must be the audio itself, base64-encoded (or a data:audio/...;base64, URL); URLs and server "
            "paths are not fetched",
            param=param,
            code="invalid_base64",
        )
    text = re.sub(r"\s+", "", text)
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text) or len(text.rstrip("=")) % 4 == 1:
        raise APIError(400, f"{param} is not valid base64 ({_BASE64_HINT})", param=param, code="invalid_base64")
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(
            400, f"{param} is not valid base64 ({_BASE64_HINT})", param=param, code="invalid_base64"
        ) from None
    if not raw:
        raise APIError(
            400, f"{param} is empty: send the audio bytes, base64-encoded", param=param, code="invalid_audio"
        )
    return raw


def _too_long(param: str, seconds: float, max_seconds: float) -> APIError:
    return APIError(
        400,
        f"{param} lasts more than {max_seconds:g} s (at least {seconds:.1f} s); this server accepts at most "
        f"{max_seconds:g} s of audio per request: shorten it",
        param=param,
        code="audio_too_long",
    )


def _mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float64).astype(np.float32) if block.shape[1] > 1 else block[:, 0]


def decode_audio(
    raw: bytes, param: str, *, max_seconds: float, pcm_rate: int, declared_format: str | None = None
) -> DecodedAudio:
    """Decode uploaded audio to mono float32, refusing it (400) once it exceeds ``max_seconds``.

    ``declared_format="pcm16"`` reads raw 16-bit little-endian mono at ``pcm_rate``; anything else is
    recognised from its content by libsndfile.

    Raises:
        APIError: 400 ``invalid_audio`` (unreadable, empty, non-finite) or ``audio_too_long``.
    """
    if not raw:
        raise APIError(400, f"{param} is empty: send an audio file", param=param, code="invalid_audio")
    if declared_format == "pcm16":
        if len(raw) % 2:
            raise APIError(
                400,
                f"{param} has an odd number of bytes ({len(raw)}); pcm16 is 16-bit little-endian samples",
                param=param,
                code="invalid_audio",
            )
        if len(raw) // 2 > max_seconds * pcm_rate:
            raise _too_long(param, len(raw) / 2 / pcm_rate, max_seconds)
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return _checked(DecodedAudio(samples, pcm_rate), param)
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(raw)) as handle:
            rate = int(handle.samplerate)
            limit = int(max_seconds * rate)
            blocks, count = [], 0
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(_mono(block))
                count += block.shape[0]
                if count > limit:
                    raise _too_long(param, count / rate, max_seconds)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = getattr(error, "error_string", None) or str(error)
        raise APIError(
            400,
            f"{param} could not be decoded as audio ({reason}); send WAV, FLAC, MP3 or Ogg (Vorbis/Opus) audio",
            param=param,
            code="invalid_audio",
        ) from None
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return _checked(DecodedAudio(samples, rate), param)


def _checked(audio: DecodedAudio, param: str) -> DecodedAudio:
    if audio.samples.size == 0:
        raise APIError(400, f"{param} holds no samples: send a non-empty clip", param=param, code="invalid_audio")
    if not np.isfinite(audio.samples).all():
        raise APIError(400, f"{param} holds NaN or infinite samples", param=param, code="invalid_audio")
    return audio


# ------------------------------------------------------------------------------------------- output
def _int16(samples: np.ndarray) -> bytes:
    return np.rint(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str, out_rate: int) -> bytes:
    """A whole file (or raw ``pcm``) of mono float32 ``samples`` at ``sample_rate``, sent at ``out_rate``."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    rate = output_sample_rate(fmt, out_rate)
    if rate != sample_rate and samples.size:
        samples = resample(samples, sample_rate, rate)
    if fmt in ("pcm", "pcm16"):
        return _int16(samples)
    import soundfile

    container, subtype = _SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", samplerate=rate, channels=1, format=container, subtype=subtype) as handle:
        if samples.size:
            handle.write(samples)
    return buffer.getvalue()


def _streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose RIFF and data sizes say "to the end of the stream" (0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return struct.pack("<4sI4s", b"RIFF", unknown, b"WAVE") + fmt_chunk + struct.pack("<4sI", b"data", unknown)


class _AppendOnlySink(io.RawIOBase):
    """A seekable in-memory file whose bytes are handed out once written; rewrites of sent bytes are dropped.

    libsndfile's encoders go back at the end to fill in lengths (MP3's Xing frame, FLAC's STREAMINFO).
    Those bytes have been streamed already; the stream stays valid without them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._position = 0
        self._sent = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        data = bytes(data)
        end = self._position + len(data)
        if end > len(self._buffer):
            self._buffer.extend(b"\0" * (end - len(self._buffer)))
        self._buffer[self._position : end] = data
        self._position = end
        return len(data)

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        stop = len(self._buffer) if size is None or size < 0 else self._position + size
        data = bytes(self._buffer[self._position : stop])
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._buffer)}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        """The bytes written since the last call."""
        data = bytes(self._buffer[self._sent :])
        self._sent = len(self._buffer)
        return data


class StreamEncoder:
    """``feed(samples) -> bytes``, ``close() -> bytes``: one audio file produced piece by piece.

    Args:
        fmt: one of :data:`STREAM_FORMATS` (``pcm16`` is accepted for ``pcm``).
        sample_rate: rate of the samples fed (22050 for the TTS).
        out_rate: rate of the output (the server's ``sample_rate``).

    Resampling runs as a stream too, so chunk borders leave no trace.  The first
    non-empty piece carries the header (nothing is sent before there is audio).
    """

    def __init__(self, fmt: str, sample_rate: int, out_rate: int) -> None:
        fmt = "pcm" if fmt == "pcm16" else fmt
        if fmt not in STREAM_FORMATS:
            raise ValueError(f"cannot stream {fmt!r}; streamable formats: {', '.join(STREAM_FORMATS)}")
        self.format = fmt
        self.sample_rate = output_sample_rate(fmt, out_rate)
        self._resampler = ResamplerStream(sample_rate, self.sample_rate) if self.sample_rate != sample_rate else None
        self._header = _streaming_wav_header(self.sample_rate) if fmt == "wav" else b""
        self._sink: _AppendOnlySink | None = None
        self._file = None
        if fmt in ("mp3", "opus"):
            import soundfile

            container, subtype = _SOUNDFILE_FORMATS[fmt]
            # Constant bitrate: a reader that meets no length header (it was sent before it was known)
            # estimates the length from the size, which is exact only at a constant bitrate.
            extra = {"bitrate_mode": "CONSTANT", "compression_level": 0.5} if fmt == "mp3" else {}
            self._sink = _AppendOnlySink()
            self._file = soundfile.SoundFile(
                self._sink, "w", samplerate=self.sample_rate, channels=1, format=container, subtype=subtype, **extra
            )
        self.closed = False

    def _encode(self, samples: np.ndarray) -> bytes:
        if self._file is None:
            data = _int16(samples) if samples.size else b""
        else:
            if samples.size:
                self._file.write(samples)
                self._file.flush()
            assert self._sink is not None
            data = self._sink.take()
        if data and self._header:
            data, self._header = self._header + data, b""
        return data

    def feed(self, samples: np.ndarray) -> bytes:
        """Bytes to send for the next ``[T]`` float32 samples (may be empty while an encoder buffers)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            samples = self._resampler.feed(samples)
        return self._encode(samples)

    def close(self) -> bytes:
        """The last bytes (buffered samples, the encoder's tail; the WAV header if nothing was sent)."""
        if self.closed:
            return b""
        self.closed = True
        tail = self._resampler.close() if self._resampler is not None else np.zeros(0, np.float32)
        data = self._encode(np.asarray(tail, dtype=np.float32).reshape(-1))
        if self._file is not None:
            self._file.close()
            assert self._sink is not None
            data += self._sink.take()
        if self._header:  # no audio at all: a valid, empty stream
            data, self._header = self._header + data, b""
        return data
