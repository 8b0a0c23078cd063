"""The one way the models are built: a root folder plus a :class:`ModelSettings`.

Every command (``stepaudio chat``, ``tts``, ``tokenize``, ``serve-realtime``, the root scripts), the
real-time server and :class:`~stepaudio.StepAudio` itself build their models here::

    from stepaudio.assembly import ModelSettings, load_pipeline, load_tts

    pipeline = load_pipeline("models", ModelSettings(device="cuda", max_speech_seconds=30))
    tts = load_tts("models", ModelSettings(tts_path="/fast-disk/Step-Audio-TTS-3B", allow_unknown_tags=True))

One path rule for every model (:func:`find_model_folder`): the folder of a model is its override in the
settings (``tokenizer_path``, ``chat_path``, ``tts_path``) if given, else the root; either may be the
official folder itself or a folder that holds it under its published name (``Step-Audio-Tokenizer``,
``Step-Audio-Chat``, ``Step-Audio-TTS-3B``).  The speakers folder is ``speakers_dir`` if given, else
``ROOT/speakers`` when that folder exists.  Every folder a load needs is found (only the file system is
looked at) before any model loads, so a wrong path costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CheckpointFileNotFoundError, InputFileError, InvalidArgumentError
from .validation import check_bool, check_choice, check_float, check_input_dir, check_text, describe_value

if TYPE_CHECKING:
    import torch

    from .llm.chat import StepAudioChat
    from .pipeline import StepAudio
    from .tokenizer import StepAudioTokenizer
    from .tts.tts import StepAudioTTS

__all__ = [
    "CHAT_FOLDER",
    "OFFICIAL_FOLDERS",
    "SPEAKERS_FOLDER",
    "TOKENIZER_FOLDER",
    "TTS_FOLDER",
    "ModelFolders",
    "ModelSettings",
    "PipelineModels",
    "find_model_folder",
    "find_model_folders",
    "find_speakers_dir",
    "load_chat",
    "load_models",
    "load_pipeline",
    "load_tokenizer",
    "load_tts",
]

TOKENIZER_FOLDER = "Step-Audio-Tokenizer"
CHAT_FOLDER = "Step-Audio-Chat"
TTS_FOLDER = "Step-Audio-TTS-3B"
#: The speakers folder's name inside the root (``speakers_info.json`` + ``{id}_prompt.wav``).
SPEAKERS_FOLDER = "speakers"

#: Official folder name -> (the :class:`ModelSettings` field that overrides it, a file that marks the folder).
OFFICIAL_FOLDERS = {
    TOKENIZER_FOLDER: ("tokenizer_path", "linguistic_tokenizer.npy"),
    CHAT_FOLDER: ("chat_path", "config.json"),
    TTS_FOLDER: ("tts_path", "config.json"),
}
_ALL_MODELS = (TOKENIZER_FOLDER, CHAT_FOLDER, TTS_FOLDER)
_SPEAKERS_WHAT = "a speakers folder (speakers_info.json + one {id}_prompt.wav each)"
_DEVICE_MAP_REQUIREMENT = "None, a strategy such as 'auto' or a dict of module name -> device"


def _optional_path(value: object, name: str) -> Path | None:
    """``None``, or a non-blank path (``str`` or path-like) of valid text, as a :class:`~pathlib.Path`."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        detail = f"must be None or the path of a folder, got {describe_value(value)}"
        raise InvalidArgumentError.about(name, detail, value)
    check_text(str(value), name)
    return Path(value).expanduser()


@dataclass(frozen=True)
class ModelSettings:
    """How to build the models, besides the root folder they come from.

    Every value is checked here, when the settings are made (one-line
    :class:`~stepaudio.errors.InvalidArgumentError` naming the field); the folders themselves are
    checked by the loaders, before any model loads.

    Attributes:
        device: where every model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``); default CUDA if available.
        dtype: dtype of the chat and TTS language models (``"bf16"``, ``"fp16"``, ``"fp32"`` or a
            ``torch.dtype``); default bfloat16 on GPU, float32 on CPU.
        attention: attention backend of the chat and TTS language models: ``sdpa`` (default),
            ``flex`` (``flex_attention``) or ``eager``.
        llm_device_map: e.g. ``"auto"`` to spread the 130B chat model over several GPUs (needs accelerate).
        speakers_dir: speakers folder (``speakers_info.json`` + ``{id}_prompt.wav``); default
            ``ROOT/speakers`` when it exists.
        tokenizer_path, chat_path, tts_path: a model's folder when it is not in the root (the official
            folder, or a folder that holds it under its published name).
        max_speech_seconds: limit on the speech the TTS generates per text segment (default: none
            besides the text-length ceiling and the context).
        allow_unknown_tags: whether the TTS passes a leading ``(tag)`` it was not trained on to the model
            (as upstream does) instead of refusing the text.  ``None`` (default): the model's own default,
            that is passed on in a pipeline (the chat model writes the text, and may invent tags) and
            refused by a TTS loaded alone (:func:`load_tts`, where the caller writes the text).
        cache_cloned_voices: keep the voice-prompt features of cloned clips in the disk cache (default on;
            a server that clones a voice per request turns it off, or the cache grows with every clip).
    """

    device: str | torch.device | None = None
    dtype: str | torch.dtype | None = None
    attention: str = "sdpa"
    llm_device_map: str | dict | None = None
    speakers_dir: Path | None = None
    tokenizer_path: Path | None = None
    chat_path: Path | None = None
    tts_path: Path | None = None
    max_speech_seconds: float | None = None
    allow_unknown_tags: bool | None = None
    cache_cloned_voices: bool = True

    def __post_init__(self) -> None:
        from .device import resolve_device, resolve_dtype
        from .llm.chat import ATTENTION_IMPLEMENTATIONS

        device = resolve_device(self.device, name="device")
        if self.dtype is not None:
            resolve_dtype(self.dtype, device, name="dtype")
        check_choice(self.attention, "attention", ATTENTION_IMPLEMENTATIONS)
        device_map = self.llm_device_map
        if device_map is not None and not (
            isinstance(device_map, dict) or isinstance(device_map, str) and device_map.strip()
        ):
            detail = f"must be {_DEVICE_MAP_REQUIREMENT}, got {describe_value(device_map)}"
            raise InvalidArgumentError.about("llm_device_map", detail, device_map)
        for name in ("speakers_dir", "tokenizer_path", "chat_path", "tts_path"):
            object.__setattr__(self, name, _optional_path(getattr(self, name), name))
        if self.max_speech_seconds is not None:
            seconds = check_float(
                self.max_speech_seconds,
                "max_speech_seconds",
                minimum=0.0,
                exclusive_minimum=True,
                hint="None means no limit",
            )
            object.__setattr__(self, "max_speech_seconds", seconds)
        object.__setattr__(self, "cache_cloned_voices", check_bool(self.cache_cloned_voices, "cache_cloned_voices"))
        if self.allow_unknown_tags is not None:
            object.__setattr__(self, "allow_unknown_tags", check_bool(self.allow_unknown_tags, "allow_unknown_tags"))


def _check_settings(settings: object) -> ModelSettings:
    if settings is None:
        return ModelSettings()
    if not isinstance(settings, ModelSettings):
        detail = f"must be None or a ModelSettings, got {describe_value(settings)}"
        raise InvalidArgumentError.about("settings", detail, settings)
    return settings


# ----------------------------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class ModelFolders:
    """The folders found by :func:`find_model_folders` (``None`` for what was not asked for / not there)."""

    tokenizer: Path | None = None
    chat: Path | None = None
    tts: Path | None = None
    speakers: Path | None = None


def _name(names: Mapping[str, str] | None, key: str) -> str:
    return (names or {}).get(key, key)


def find_model_folder(
    model: str,
    root: str | Path | None,
    override: str | Path | None = None,
    *,
    names: Mapping[str, str] | None = None,
) -> Path:
    """The one path rule: ``model``'s official folder, found in ``override`` if given, else in ``root``.

    Either may be the official folder itself or a folder holding it under its published name.  Only
    the file system is looked at (the folder's marker file), nothing is read.

    Args:
        model: an official folder name, a key of :data:`OFFICIAL_FOLDERS`.
        root: the folder holding the official folders (or ``None``: then ``override`` is needed).
        override: the model's own folder (the settings' ``tokenizer_path`` / ``chat_path`` / ``tts_path``).
        names: what the caller calls ``"root"`` and the override field in its messages, e.g.
            ``{"root": "--model-path", "tts_path": "--tts-path"}`` on the command line.

    Raises:
        InputFileError: the folder given does not exist, or holds no ``model`` folder (one line, naming
            the setting or option, the paths looked at and the fix).
        InvalidArgumentError: neither ``root`` nor ``override`` was given.
    """
    field, marker = OFFICIAL_FOLDERS[model]
    root_name, override_name = _name(names, "root"), _name(names, field)
    what = f"the {model} folder or a folder holding it"
    if override is not None:
        given, folder = override_name, check_input_dir(override, override_name, what)
    elif root is not None:
        given, folder = root_name, check_input_dir(root, root_name, "the folder holding the official folders")
    else:
        raise InvalidArgumentError(
            f"{model} has no folder: pass {root_name} (the folder holding {model}/) or {override_name}",
            name=override_name,
        )
    from .llm.chat import resolve_model_folder

    try:
        return resolve_model_folder(folder, model, marker=marker)
    except CheckpointFileNotFoundError:
        placeholder = model.upper().replace("-", "_") + "_DIR"
        suggestion = (
            f"{override_name} {placeholder}" if override_name.startswith("-") else f"{override_name}={placeholder}"
        )
        raise InputFileError(
            f"{given} {folder} holds no {model} folder: neither {folder / marker} nor {folder / model / marker} "
            f"exists; pass the folder that contains {model}/ (or {suggestion})",
            path=folder,
        ) from None


def find_speakers_dir(
    root: str | Path | None, speakers_dir: str | Path | None, *, names: Mapping[str, str] | None = None
) -> Path | None:
    """``speakers_dir`` (checked to be a folder) if given, else ``ROOT/speakers`` when it exists, else ``None``."""
    if speakers_dir is not None:
        return check_input_dir(speakers_dir, _name(names, "speakers_dir"), _SPEAKERS_WHAT)
    if root is None:
        return None
    candidate = Path(root).expanduser() / SPEAKERS_FOLDER
    return candidate if candidate.is_dir() else None


def find_model_folders(
    root: str | Path | None,
    settings: ModelSettings | None = None,
    models: tuple[str, ...] = _ALL_MODELS,
    *,
    names: Mapping[str, str] | None = None,
) -> ModelFolders:
    """The folders of ``models`` (official names) and, when the TTS is among them, the speakers folder.

    Checks the root, then the speakers folder, then each model's folder (:func:`find_model_folder`);
    nothing is loaded.  ``names`` as for :func:`find_model_folder` (also ``"speakers_dir"``).
    """
    settings = _check_settings(settings)
    unknown = [model for model in models if model not in OFFICIAL_FOLDERS]
    if unknown:
        detail = f"must name official folders ({', '.join(OFFICIAL_FOLDERS)}), got {describe_value(unknown)}"
        raise InvalidArgumentError.about("models", detail, models)
    if root is not None:
        check_input_dir(root, _name(names, "root"), "the folder holding the official folders")
    speakers = find_speakers_dir(root, settings.speakers_dir, names=names) if TTS_FOLDER in models else None
    found = {
        model: find_model_folder(model, root, getattr(settings, OFFICIAL_FOLDERS[model][0]), names=names)
        for model in models
    }
    return ModelFolders(
        tokenizer=found.get(TOKENIZER_FOLDER), chat=found.get(CHAT_FOLDER), tts=found.get(TTS_FOLDER), speakers=speakers
    )


# ----------------------------------------------------------------------------------------------- models
def _tokenizer(folders: ModelFolders, settings: ModelSettings) -> StepAudioTokenizer:
    from .tokenizer import StepAudioTokenizer

    return StepAudioTokenizer(folders.tokenizer, device=settings.device)


def _chat(folders: ModelFolders, settings: ModelSettings, tokenizer: Any | None) -> StepAudioChat:
    from .llm.chat import StepAudioChat

    return StepAudioChat(
        folders.chat,
        device=settings.device,
        dtype=settings.dtype,
        attn_implementation=settings.attention,
        device_map=settings.llm_device_map,
        audio_tokenizer=tokenizer,
    )


def _tts(folders: ModelFolders, settings: ModelSettings, tokenizer: Any, unknown_tags: bool) -> StepAudioTTS:
    from .tts.tts import StepAudioTTS

    return StepAudioTTS(
        folders.tts,
        tokenizer,
        speakers_dir=folders.speakers,
        device=settings.device,
        dtype=settings.dtype,
        attn_implementation=settings.attention,
        max_speech_seconds=settings.max_speech_seconds,
        allow_unknown_tags=unknown_tags if settings.allow_unknown_tags is None else settings.allow_unknown_tags,
        cache_cloned_voices=settings.cache_cloned_voices,
    )


def load_tokenizer(root: str | Path | None, settings: ModelSettings | None = None) -> StepAudioTokenizer:
    """The Step-Audio-Tokenizer of ``root`` (or ``settings.tokenizer_path``), on ``settings.device``."""
    settings = _check_settings(settings)
    return _tokenizer(find_model_folders(root, settings, (TOKENIZER_FOLDER,)), settings)


def load_chat(
    root: str | Path | None, settings: ModelSettings | None = None, tokenizer: StepAudioTokenizer | None = None
) -> StepAudioChat:
    """Step-Audio-Chat of ``root`` (or ``settings.chat_path``).

    ``tokenizer`` (a loaded :class:`~stepaudio.tokenizer.StepAudioTokenizer`) lets it hear audio turns;
    without one the chat takes text turns only (and nothing else is loaded).
    """
    settings = _check_settings(settings)
    return _chat(find_model_folders(root, settings, (CHAT_FOLDER,)), settings, tokenizer)


def load_tts(
    root: str | Path | None, settings: ModelSettings | None = None, tokenizer: StepAudioTokenizer | None = None
) -> StepAudioTTS:
    """Step-Audio-TTS-3B of ``root`` (or ``settings.tts_path``) with the speakers folder of the settings.

    Without ``tokenizer`` the Step-Audio-Tokenizer (which turns voice prompts into tokens) is loaded too,
    from the same root; both folders are found before either loads.  Unknown tags are refused unless
    ``settings.allow_unknown_tags`` is true.
    """
    settings = _check_settings(settings)
    needs = (TTS_FOLDER,) if tokenizer is not None else (TOKENIZER_FOLDER, TTS_FOLDER)
    folders = find_model_folders(root, settings, needs)
    if tokenizer is None:
        tokenizer = _tokenizer(folders, settings)
    return _tts(folders, settings, tokenizer, unknown_tags=False)


class PipelineModels(NamedTuple):
    """The three models of a voice chat, the chat and the TTS sharing the tokenizer."""

    tokenizer: StepAudioTokenizer
    chat: StepAudioChat
    tts: StepAudioTTS


def load_models(
    root: str | Path | None, settings: ModelSettings | None = None, *, names: Mapping[str, str] | None = None
) -> PipelineModels:
    """The one place the three models are assembled: tokenizer, then chat and TTS sharing it.

    Every folder (and the speakers folder) is found before any model loads.  The TTS passes unknown
    tags on unless ``settings.allow_unknown_tags`` is ``False`` (the chat model writes its text).
    ``names`` as for :func:`find_model_folder`, for callers whose arguments are named otherwise.
    """
    settings = _check_settings(settings)
    folders = find_model_folders(root, settings, _ALL_MODELS, names=names)
    tokenizer = _tokenizer(folders, settings)
    chat = _chat(folders, settings, tokenizer)
    tts = _tts(folders, settings, tokenizer, unknown_tags=True)
    return PipelineModels(tokenizer, chat, tts)


def load_pipeline(root: str | Path | None, settings: ModelSettings | None = None, **generation: Any) -> StepAudio:
    """A :class:`~stepaudio.StepAudio` over :func:`load_models` (``root``, ``settings``).

    ``generation``: ``max_new_tokens``, ``temperature``, ``top_p`` of its replies (``StepAudio``'s
    defaults otherwise), checked before anything loads.
    """
    from .pipeline import StepAudio, check_generation_settings

    generation = check_generation_settings(**generation)
    return StepAudio.from_models(*load_models(root, settings), **generation)
