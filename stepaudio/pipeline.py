"""``StepAudio``: the full voice chat — audio or text turns in, reply text and speech out."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .device import resolve_device
from .llm.chat import StepAudioChat, resolve_model_folder
from .tokenizer import StepAudioTokenizer
from .tts.speakers import SPEAKERS_INFO_FILE
from .tts.text import has_speakable_text
from .tts.tts import SAMPLE_RATE, StepAudioTTS
from .validation import check_float, check_input_dir, check_int

logger = logging.getLogger(__name__)

__all__ = ["StepAudio", "speak_reply"]


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
        device: default CUDA if available, else CPU.
        llm_device_map: e.g. ``"auto"`` to spread the 130B chat model over several GPUs.
        max_new_tokens, temperature, top_p: chat generation settings (upstream defaults).

    The arguments are checked before any model is loaded; each call checks the speaker and the speed
    and volume before the chat model runs.  The TTS passes tags it does not know (the chat model may
    invent some) to the model as upstream does, and a reply with nothing to speak gives empty audio.
    """

    def __init__(
        self,
        tokenizer_path: str | Path,
        tts_path: str | Path,
        llm_path: str | Path,
        speakers_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        llm_device_map: str | dict | None = None,
        max_new_tokens: int = 2048,
        temperature: float = 0.7,
        top_p: float = 0.9,
    ) -> None:
        self.generation = {
            "max_new_tokens": check_int(max_new_tokens, "max_new_tokens", minimum=1),
            "temperature": check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True),
            "top_p": check_float(top_p, "top_p", minimum=0.0, exclusive_minimum=True, maximum=1.0),
        }
        if speakers_dir is not None:
            speakers_dir = check_input_dir(
                speakers_dir, "speakers_dir", f"a speakers folder ({SPEAKERS_INFO_FILE} + one {{id}}_prompt.wav each)"
            )
        if device is not None:
            resolve_device(device)
        self.encoder = StepAudioTokenizer(
            resolve_model_folder(tokenizer_path, "Step-Audio-Tokenizer", marker="linguistic_tokenizer.npy"),
            device=device,
        )
        self.llm = StepAudioChat(llm_path, device=device, device_map=llm_device_map, audio_tokenizer=self.encoder)
        self.decoder = StepAudioTTS(
            tts_path, self.encoder, speakers_dir=speakers_dir, device=device, allow_unknown_tags=True
        )

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
        self.decoder.check_request(None, speaker_id, speed_ratio=speed_ratio, volume_ratio=volume_ratio)
        text = self.llm(messages, **self.generation)
        logger.info("reply text: %s", text)
        wav, sample_rate = speak_reply(self.decoder, text, speaker_id, speed_ratio, volume_ratio)
        return text, wav, sample_rate
