"""The speech decoder Step-Audio-EditX needs, as a small protocol, and the one place that loads it.

EditX's ``CosyVoice-300M-25Hz`` sub-folder holds a CosyVoice2-style decoder (dual-codebook token
embedding, causal flow, HiFT) that turns interleaved audio codes into 24 kHz speech, conditioned on a
prompt clip (its mel frames and speaker embedding) and the prompt clip's own codes.  It is
implemented in :mod:`stepaudio.cosyvoice2`; :class:`StepAudioEditX` only uses it through
:class:`EditXSpeechDecoder`, built by :func:`load_editx_decoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import CheckpointError
from ..streaming import Stream

__all__ = [
    "DECODER_FOLDER",
    "SAMPLE_RATE",
    "CosyVoice2SpeechDecoder",
    "EditXSpeechDecoder",
    "StreamingEditXSpeechDecoder",
    "load_editx_decoder",
]

#: Sub-folder of Step-Audio-EditX holding the speech decoder (same name as TTS-3B's, different model).
DECODER_FOLDER = "CosyVoice-300M-25Hz"
#: Output rate of the EditX decoder.
SAMPLE_RATE = 24000


@runtime_checkable
class EditXSpeechDecoder(Protocol):
    """What :class:`~stepaudio.editx.StepAudioEditX` needs from a speech decoder.

    Attributes:
        sample_rate: rate of the waveforms :meth:`decode` returns (24000 for the official decoder).
    """

    sample_rate: int

    def prompt_features(self, waveform: np.ndarray, sample_rate: int) -> Any:
        """Whatever the decoder keeps of a prompt clip (mel frames, speaker embedding), from mono float ``[T]``
        audio at ``sample_rate`` (the clip as the model was shown it: peak-limited to 0.6, not trimmed)."""

    def decode(self, codes: Sequence[int], prompt_codes: Sequence[int], prompt: Any) -> torch.Tensor:
        """Interleaved audio codes (``0..5119``, 2 vq02 + 3 vq06 per group) -> waveform ``[1, N]`` float32,
        in the voice of the prompt clip whose codes are ``prompt_codes`` and features ``prompt``."""


@runtime_checkable
class StreamingEditXSpeechDecoder(EditXSpeechDecoder, Protocol):
    """An :class:`EditXSpeechDecoder` that also decodes as codes arrive (what ``clone_stream``/``edit_stream`` use)."""

    def stream(self, prompt_codes: Sequence[int], prompt: Any) -> Stream[Sequence[int], torch.Tensor]:
        """A :class:`~stepaudio.streaming.Stream`: ``feed`` pieces of codes, get waveform ``[1, n]`` chunks as soon
        as they are final; ``close`` returns the rest.  Together they equal :meth:`decode` (up to the stream's
        own chunked attention, see the implementation)."""


class CosyVoice2SpeechDecoder:
    """:class:`StreamingEditXSpeechDecoder` over :class:`stepaudio.cosyvoice2.CosyVoice2Decoder`.

    :meth:`decode` is the original's offline decode (full attention over the utterance); :meth:`stream` is
    :class:`~stepaudio.cosyvoice2.stream.CosyVoice2Stream` with the original's chunk plan (15, 24, 48... steps),
    which equals ``token_to_wav_offline(..., attention="chunked")`` up to float rounding.

    Args:
        decoder: a loaded :class:`~stepaudio.cosyvoice2.CosyVoice2Decoder` (kept as :attr:`inner`).
    """

    def __init__(self, decoder: Any) -> None:
        self.inner = decoder
        self.sample_rate = int(decoder.sample_rate)

    def prompt_features(self, waveform: np.ndarray, sample_rate: int) -> Any:
        return self.inner.prompt_features(waveform, sample_rate)

    def decode(self, codes: Sequence[int], prompt_codes: Sequence[int], prompt: Any) -> torch.Tensor:
        return self.inner.token_to_wav_offline(codes, prompt_codes, prompt.speech_feat, prompt.embedding)

    def stream(self, prompt_codes: Sequence[int], prompt: Any) -> Stream[Sequence[int], torch.Tensor]:
        return self.inner.stream(prompt_codes, prompt.speech_feat, prompt.embedding)


def load_editx_decoder(folder: Path, device: torch.device, seed: int | None) -> EditXSpeechDecoder:
    """Load the 24 kHz decoder of ``Step-Audio-EditX/CosyVoice-300M-25Hz`` (the one place it is chosen).

    Raises:
        CheckpointError: the folder holds a 22.05 kHz (Step-Audio-TTS-3B) decoder instead.
    """
    from ..cosyvoice2 import CosyVoice2Decoder, load_speech_decoder

    decoder = load_speech_decoder(folder, device, seed=0 if seed is None else seed)
    if not isinstance(decoder, CosyVoice2Decoder):
        raise CheckpointError(
            f"{folder} holds a {decoder.sample_rate} Hz CosyVoice decoder (Step-Audio-TTS-3B's); Step-Audio-EditX "
            "needs its own 24 kHz CosyVoice2 decoder: download stepfun-ai/Step-Audio-EditX again",
            folder=folder,
        )
    return CosyVoice2SpeechDecoder(decoder)
