"""Voice prompts: registered speakers (a speakers folder) and zero-shot clones, with an on-disk feature cache.

A speakers folder is user data in the upstream format::

    speakers/
      speakers_info.json        {"Tingting": "<transcript of Tingting_prompt.wav>", ...}
      Tingting_prompt.wav
      TingtingRAP_prompt.wav    (RAP voice, used for "(RAP)..." text)
      Tingting哼唱_prompt.wav    (humming voice, used for "(哼唱)..." text)

Turning a prompt clip into model inputs (audio tokens, prompt mel, speaker embedding) takes a
second or more per clip, so the results are cached on disk, keyed by a hash of the clip's bytes, its
transcript and a fingerprint of the models that computed them.  The next start-up reads them back
in milliseconds; a changed clip, transcript or model gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointConfigError, InvalidArgumentError, PromptError
from ..validation import MAX_NAME_LENGTH, check_input_file, check_safe_name, check_text, describe_value

logger = logging.getLogger(__name__)

__all__ = [
    "CLONE_HINT",
    "SPEAKERS_INFO_FILE",
    "SpeakerRegistry",
    "VoicePrompt",
    "VoicePromptCache",
    "default_cache_dir",
    "file_fingerprint",
    "read_speakers_info",
    "unknown_speaker_message",
]

SPEAKERS_INFO_FILE = "speakers_info.json"
_CACHE_FORMAT = "stepaudio-voice-prompt-v1"


@dataclass
class VoicePrompt:
    """Everything the TTS needs from one voice prompt.

    Attributes:
        prompt_text: transcript of the clip (may start with a tag such as ``（RAP）``).
        prompt_audio_ids: the clip's interleaved audio ids (``65536 + N``), from trimmed audio.
        speech_feat: prompt mel ``[1, T, 80]`` at 22.05 kHz (untrimmed audio).
        speech_feat_len: int32 ``[1]`` = T.
        embedding: CAM++ speaker embedding ``[1, 192]``.
    """

    prompt_text: str
    prompt_audio_ids: list[int]
    speech_feat: torch.Tensor
    speech_feat_len: torch.Tensor
    embedding: torch.Tensor


#: Computes a :class:`VoicePrompt` from (prompt wav path, transcript, decoder folder name).
VoicePromptExtractor = Callable[[Path, str, str], VoicePrompt]


def default_cache_dir() -> Path:
    """``$STEPAUDIO_CACHE``, else ``$XDG_CACHE_HOME/stepaudio``, else ``~/.cache/stepaudio``."""
    if os.environ.get("STEPAUDIO_CACHE"):
        return Path(os.environ["STEPAUDIO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "stepaudio"


def file_fingerprint(path: str | Path, sample_bytes: int = 1 << 20) -> str:
    """A cheap content fingerprint: size plus hashes of the first and last ``sample_bytes`` bytes.

    Used to key caches on large model files (hundreds of MB) without reading them whole.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(sample_bytes))
        if size > sample_bytes:
            handle.seek(max(sample_bytes, size - sample_bytes))
            digest.update(handle.read(sample_bytes))
    return digest.hexdigest()


def read_speakers_info(folder: str | Path) -> dict[str, str]:
    """Read ``speakers_info.json`` of a speakers folder: ``{speaker_id: prompt transcript}``.

    Raises:
        FileNotFoundError: the folder or its ``speakers_info.json`` is missing.
        CheckpointConfigError: the file is not a JSON object of strings, a speaker id cannot be part of a
            file name (``{id}_prompt.wav``: letters, digits, ``_``, ``-``, ``.``), or a transcript is empty.
    """
    folder = Path(folder)
    info_path = folder / SPEAKERS_INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no speaker registry at {info_path}: a speakers folder holds {SPEAKERS_INFO_FILE} "
            '({"speaker_id": "prompt transcript", ...}) and one {speaker_id}_prompt.wav per speaker'
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointConfigError(f"{info_path} is not valid JSON: {error}", folder=folder, file=info_path) from error
    if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in info.items()):
        raise CheckpointConfigError(
            f"{info_path} must be a JSON object mapping speaker ids to prompt transcripts",
            folder=folder,
            file=info_path,
        )
    for speaker_id, transcript in info.items():
        try:
            check_safe_name(speaker_id, "speaker id")
        except InvalidArgumentError:
            raise CheckpointConfigError(
                f"{info_path} lists the speaker id {describe_value(speaker_id)}, which cannot be part of its clip's "
                f"file name ({{id}}_prompt.wav): use at most {MAX_NAME_LENGTH} letters, digits, '_', '-' or '.', "
                "starting with a letter or digit, and rename the clip to match",
                folder=folder,
                file=info_path,
            ) from None
        try:
            check_text(transcript, "transcript")
        except InvalidArgumentError as error:
            raise CheckpointConfigError(
                f"{info_path}: the transcript of speaker {speaker_id!r} {error.requirement}; write what "
                f"{speaker_id}_prompt.wav says",
                folder=folder,
                file=info_path,
            ) from None
    return info


class VoicePromptCache:
    """Computes voice prompts with ``extractor`` and keeps them on disk, keyed by content.

    Args:
        extractor: computes a :class:`VoicePrompt` for (wav path, transcript, decoder folder name).
        model_fingerprint: identifies the models behind ``extractor``; part of every cache key.
        cache_dir: where cached prompts go (default: :func:`default_cache_dir` ``/voice_prompts``).
        use_disk_cache: read and write the disk cache (else compute every time).
    """

    def __init__(
        self,
        extractor: VoicePromptExtractor,
        model_fingerprint: str,
        cache_dir: str | Path | None = None,
        use_disk_cache: bool = True,
    ) -> None:
        self.extractor = extractor
        self.model_fingerprint = model_fingerprint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "voice_prompts"
        self.use_disk_cache = use_disk_cache

    def voice_prompt(
        self, wav_path: str | Path, prompt_text: str, decoder: str, use_disk_cache: bool | None = None
    ) -> VoicePrompt:
        """Voice prompt of a clip with its transcript, for ``decoder``: from the disk cache or computed.

        ``use_disk_cache`` overrides the cache's own setting for this clip (``False``: compute, store nothing).
        """
        wav_path = check_input_file(wav_path, "voice prompt clip", "an audio clip (wav, flac, mp3, ogg)")
        use_disk_cache = self.use_disk_cache if use_disk_cache is None else use_disk_cache
        cache_file = self.cache_dir / f"{self.cache_key(wav_path, prompt_text, decoder)}.safetensors"
        if use_disk_cache and cache_file.is_file():
            cached = _read_cached_prompt(cache_file)
            if cached is not None:
                return cached
        prompt = self.extractor(wav_path, prompt_text, decoder)
        if use_disk_cache:
            _write_cached_prompt(cache_file, prompt)
        return prompt

    def cache_key(self, wav_path: Path, prompt_text: str, decoder: str) -> str:
        """Hash of the cache format, model fingerprint, decoder, transcript and the clip's bytes."""
        digest = hashlib.sha256()
        for part in (_CACHE_FORMAT, self.model_fingerprint, decoder, prompt_text):
            digest.update(part.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(wav_path.read_bytes()).digest())
        return digest.hexdigest()[:32]


#: How to clone a voice, worded for both the Python API and the command line.
CLONE_HINT = "clone a voice from a recording of it (clone_dict in Python, --synthesis-type clone on the command line)"


def unknown_speaker_message(speaker_id: str, folder: str | Path, speaker_ids: list[str]) -> str:
    """The one-line message for a speaker id the speakers folder does not list."""
    listed = ", ".join(speaker_ids) or "no speakers"
    return (
        f"unknown speaker {speaker_id!r}: {Path(folder) / SPEAKERS_INFO_FILE} lists {listed}; register it there "
        f"with {speaker_id}_prompt.wav, or {CLONE_HINT}"
    )


class SpeakerRegistry:
    """The speakers of a speakers folder, their voice prompts computed once through a :class:`VoicePromptCache`.

    Args:
        folder: the speakers folder (``speakers_info.json`` + ``{id}_prompt.wav``).
        cache: computes and caches the voice prompts.
    """

    def __init__(self, folder: str | Path, cache: VoicePromptCache) -> None:
        self.folder = Path(folder)
        self.transcripts = read_speakers_info(self.folder)
        self.cache = cache
        self._loaded: dict[tuple[str, str], VoicePrompt] = {}

    def __contains__(self, speaker_id: object) -> bool:
        return speaker_id in self.transcripts

    @property
    def speaker_ids(self) -> list[str]:
        return sorted(self.transcripts)

    def prompt_wav(self, speaker_id: str) -> Path:
        """Path of a registered speaker's prompt clip (checked to exist)."""
        if speaker_id not in self.transcripts:
            raise PromptError(unknown_speaker_message(speaker_id, self.folder, self.speaker_ids))
        wav = self.folder / f"{speaker_id}_prompt.wav"
        if not wav.is_file():
            raise FileNotFoundError(
                f"speaker {speaker_id!r} is listed in {self.folder / SPEAKERS_INFO_FILE} but its prompt clip "
                f"{wav} is missing"
            )
        return wav

    def get(self, speaker_id: str, decoder: str) -> VoicePrompt:
        """The voice prompt of a registered speaker, as computed for ``decoder`` (memory, disk, or fresh)."""
        key = (speaker_id, decoder)
        if key not in self._loaded:
            self._loaded[key] = self.cache.voice_prompt(
                self.prompt_wav(speaker_id), self.transcripts[speaker_id], decoder
            )
        return self._loaded[key]


def _write_cached_prompt(path: Path, prompt: VoicePrompt) -> None:
    tensors = {
        "prompt_audio_ids": torch.tensor(prompt.prompt_audio_ids, dtype=torch.int64),
        "speech_feat": prompt.speech_feat.detach().to("cpu").contiguous(),
        "speech_feat_len": prompt.speech_feat_len.detach().to("cpu").contiguous(),
        "embedding": prompt.embedding.detach().to("cpu").contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(temporary), metadata={"format": _CACHE_FORMAT, "prompt_text": prompt.prompt_text})
    os.replace(temporary, path)  # atomic: concurrent readers never see a half-written file


def _read_cached_prompt(path: Path) -> VoicePrompt | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        if metadata.get("format") != _CACHE_FORMAT:
            raise ValueError(f"unknown cache format {metadata.get('format')!r}")
        return VoicePrompt(
            prompt_text=metadata["prompt_text"],
            prompt_audio_ids=tensors["prompt_audio_ids"].tolist(),
            speech_feat=tensors["speech_feat"],
            speech_feat_len=tensors["speech_feat_len"],
            embedding=tensors["embedding"],
        )
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        logger.warning("ignoring unreadable voice-prompt cache file %s (%s); recomputing it", path, error)
        return None
