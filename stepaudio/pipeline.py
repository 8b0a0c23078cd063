"""``StepAudio``: the full voice chat — audio or text turns in, reply text and speech out."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .llm.chat import StepAudioChat, resolve_model_folder
from .tokenizer import StepAudioTokenizer
from .tts.tts import StepAudioTTS

logger = logging.getLogger(__name__)

__all__ = ["StepAudio"]


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
        self.encoder = StepAudioTokenizer(
            resolve_model_folder(tokenizer_path, "Step-Audio-Tokenizer", marker="linguistic_tokenizer.npy"),
            device=device,
        )
        self.llm = StepAudioChat(llm_path, device=device, device_map=llm_device_map, audio_tokenizer=self.encoder)
        self.decoder = StepAudioTTS(tts_path, self.encoder, speakers_dir=speakers_dir, device=device)
        self.generation = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}

    def __call__(
        self,
        messages: Sequence[Mapping[str, Any]],
        speaker_id: str,
        speed_ratio: float = 1.0,
        volume_ratio: float = 1.0,
    ) -> tuple[str, torch.Tensor, int]:
        """Reply to ``messages`` in text and in ``speaker_id``'s voice.

        Returns:
            ``(reply text, waveform [1, N] float32, 22050)``.
        """
        text = self.llm(messages, **self.generation)
        logger.info("reply text: %s", text)
        wav, sample_rate = self.decoder(text, speaker_id, speed_ratio=speed_ratio, volume_ratio=volume_ratio)
        return text, wav, sample_rate
