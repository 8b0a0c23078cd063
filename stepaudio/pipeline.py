"""``StepAudio``: the full voice chat — audio or text turns in, reply text and speech out."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .assembly import ModelSettings, load_models, load_pipeline
from .llm.chat import StepAudioChat
from .tokenizer import StepAudioTokenizer
from .tts.text import has_speakable_text
from .tts.tts import SAMPLE_RATE, StepAudioTTS
from .validation import check_float, check_int

logger = logging.getLogger(__name__)

__all__ = ["StepAudio", "check_generation_settings", "speak_reply"]

#: Upstream's reply generation settings.
DEFAULT_MAX_NEW_TOKENS = 2048
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
#: What StepAudio's arguments are called where ModelSettings calls them otherwise (for its error messages).
_ARGUMENT_NAMES = {"chat_path": "llm_path"}


def check_generation_settings(
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P
) -> dict[str, Any]:
    """The reply generation settings of a :class:`StepAudio`, checked (one-line errors naming the argument)."""
    return {
        "max_new_tokens": check_int(max_new_tokens, "max_new_tokens", minimum=1),
        "temperature": check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True),
        "top_p": check_float(top_p, "top_p", minimum=0.0, exclusive_minimum=True, maximum=1.0),
    }


def speak_reply(
    tts: StepAudioTTS, text: str, speaker_id: str, speed_ratio: float = 1.0, volume_ratio: float = 1.0
) -> tuple[torch.Tensor, int]:
    """Speak a chat model's reply in ``speaker_id``'s voice.

    A reply with nothing to speak (only punctuation, emoji or a tag: see
    :func:`~stepaudio.tts.text.has_speakable_text`) gives empty audio ``[1, 0]`` and a logged warning
    instead of an error: the model wrote it, not the caller.

    Returns:
        ``(waveform [1, N] float32, 22050)``.
    """
    if not has_speakable_text(text):
        logger.warning("the reply %r has nothing to speak (no letters or digits); returning no audio", text[:80])
        return torch.zeros(1, 0), SAMPLE_RATE
    return tts(text, speaker_id, speed_ratio=speed_ratio, volume_ratio=volume_ratio)


class StepAudio:
    """Step-Audio-Tokenizer + Step-Audio-Chat + Step-Audio-TTS-3B, with the upstream call shape.

    ``text, wav, sample_rate = StepAudio(tokenizer_path, tts_path, llm_path)(messages, "Tingting")``

    Args:
        tokenizer_path, tts_path, llm_path: the three official folders (each may also be a folder that
            contains the official one under its published name).
        speakers_dir: speakers folder (``speakers_info.json`` + ``{id}_prompt.wav``) for ``speaker_id``.
        device: default CUDA if available.
        llm_device_map: e.g. ``"auto"`` to spread the 130B chat model over several GPUs.
        max_new_tokens, temperature, top_p: chat generation settings (upstream defaults).

    The models are built by :func:`stepaudio.assembly.load_models`, like everywhere else; for the other
    settings (dtype, ``max_speech_seconds``, ...) or one root folder, use :meth:`from_folder` with a
    :class:`~stepaudio.assembly.ModelSettings`.  The arguments and folders are checked before any model is
    loaded; each call checks the speaker and the speed and volume before the chat model runs.  The TTS
    passes tags it does not know (the chat model may invent some) to the model as upstream does, and a
    reply with nothing to speak gives empty audio.

    Attributes:
        tokenizer: the :class:`~stepaudio.tokenizer.StepAudioTokenizer` (shared by the chat and the TTS).
        llm: the :class:`~stepaudio.llm.chat.StepAudioChat`.
        tts: the :class:`~stepaudio.tts.StepAudioTTS`.
        encoder, decoder: upstream's names of :attr:`tokenizer` and :attr:`tts` (read-only aliases, kept
            for upstream notebooks).
        generation: the reply generation settings.
    """

    tokenizer: StepAudioTokenizer
    llm: StepAudioChat
    tts: StepAudioTTS

    def __init__(
        self,
        tokenizer_path: str | Path,
        tts_path: str | Path,
        llm_path: str | Path,
        speakers_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        llm_device_map: str | dict | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
    ) -> None:
        self.generation = check_generation_settings(max_new_tokens, temperature, top_p)
        settings = ModelSettings(
            device=device,
            llm_device_map=llm_device_map,
            speakers_dir=speakers_dir,
            tokenizer_path=tokenizer_path,
            chat_path=llm_path,
            tts_path=tts_path,
        )
        self.tokenizer, self.llm, self.tts = load_models(None, settings, names=_ARGUMENT_NAMES)

    @classmethod
    def from_folder(
        cls, root: str | Path | None, settings: ModelSettings | None = None, **generation: Any
    ) -> StepAudio:
        """The pipeline of a root folder holding the official folders (and ``speakers/``).

        The same as :func:`stepaudio.assembly.load_pipeline`; ``generation``: ``max_new_tokens``,
        ``temperature``, ``top_p``.
        """
        return load_pipeline(root, settings, **generation)

    @classmethod
    def from_models(
        cls, tokenizer: StepAudioTokenizer, llm: StepAudioChat, tts: StepAudioTTS, **generation: Any
    ) -> StepAudio:
        """A pipeline over models already loaded (e.g. by :func:`~stepaudio.assembly.load_models`); loads nothing.

        ``generation``: ``max_new_tokens``, ``temperature``, ``top_p`` (upstream defaults otherwise).
        """
        pipeline = cls.__new__(cls)
        pipeline.generation = check_generation_settings(**generation)
        pipeline.tokenizer, pipeline.llm, pipeline.tts = tokenizer, llm, tts
        return pipeline

    @property
    def encoder(self) -> StepAudioTokenizer:
        """Upstream's name of :attr:`tokenizer` (a read-only alias kept for upstream notebooks)."""
        return self.tokenizer

    @property
    def decoder(self) -> StepAudioTTS:
        """Upstream's name of :attr:`tts` (a read-only alias kept for upstream notebooks)."""
        return self.tts

    def __call__(
        self,
        messages: Sequence[Mapping[str, Any]],
        speaker_id: str,
        speed_ratio: float = 1.0,
        volume_ratio: float = 1.0,
    ) -> tuple[str, torch.Tensor, int]:
        """Reply to ``messages`` in text and in ``speaker_id``'s voice.

        ``speaker_id``, ``speed_ratio`` and ``volume_ratio`` are checked before the chat model runs.  A
        reply with nothing to speak (only punctuation or emoji) gives empty audio ``[1, 0]``.

        Returns:
            ``(reply text, waveform [1, N] float32, 22050)``.
        """
        self.tts.check_request(None, speaker_id, speed_ratio=speed_ratio, volume_ratio=volume_ratio)
        text = self.llm(messages, **self.generation)
        logger.info("reply text: %s", text)
        wav, sample_rate = speak_reply(self.tts, text, speaker_id, speed_ratio, volume_ratio)
        return text, wav, sample_rate
