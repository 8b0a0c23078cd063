"""The one way the models are built: a root folder plus a :class:`ModelSettings`.

Every command (``stepaudio chat``, ``tts``, ``tokenize``, ``serve-realtime``, the root scripts), the
real-time server and :class:`~stepaudio.StepAudio` itself build their models here::

    from stepaudio.assembly import ModelSettings, load_pipeline, load_tts

    pipeline = load_pipeline("models", ModelSettings(device="cuda", max_speech_seconds=30))
    tts = load_tts("models", ModelSettings(tts_path="/fast-disk/Step-Audio-TTS-3B", allow_unknown_tags=True))

Each Step-1 language model generates with a backend (``chat_backend``, ``tts_backend``): the model in
this process (``"transformers"``, the default), an in-process vLLM engine (``"vllm"``, sized by
``tensor_parallel_size``, ``pipeline_parallel_size`` and ``gpu_memory_utilization``) or a ``vllm serve``
server given by its URL, whose weights are then not loaded here::

    pipeline = load_pipeline("models", ModelSettings(chat_backend="http://gpu-node:8000/v1"))

One path rule for every model (:func:`find_model_folder`): the folder of a model is its override in the
settings (``tokenizer_path``, ``chat_path``, ``tts_path``, ``editx_path``) if given, else the root; either may
be the official folder itself or a folder that holds it under its published name (``Step-Audio-Tokenizer``,
``Step-Audio-Chat``, ``Step-Audio-TTS-3B``, ``Step-Audio-EditX``).  The speakers folder is ``speakers_dir``
if given, else ``ROOT/speakers`` when that folder exists.  Every folder a load needs is found (only the file system is
looked at) before any model loads, so a wrong path costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CheckpointFileNotFoundError, InputFileError, InvalidArgumentError
from .validation import (
    check_bool,
    check_choice,
    check_float,
    check_input_dir,
    check_int,
    check_text,
    describe_value,
)

if TYPE_CHECKING:
    import torch

    from .editx import StepAudioEditX
    from .llm.backends import GenerationBackend
    from .llm.chat import StepAudioChat
    from .pipeline import StepAudio
    from .tokenizer import StepAudioTokenizer
    from .tts.tts import StepAudioTTS

__all__ = [
    "CHAT_FOLDER",
    "EDITX_FOLDER",
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
    "load_editx",
    "load_models",
    "load_pipeline",
    "load_tokenizer",
    "load_tts",
]

TOKENIZER_FOLDER = "Step-Audio-Tokenizer"
CHAT_FOLDER = "Step-Audio-Chat"
TTS_FOLDER = "Step-Audio-TTS-3B"
#: Step-Audio-EditX (zero-shot cloning and audio editing); loaded only when asked for (:func:`load_editx`).
EDITX_FOLDER = "Step-Audio-EditX"
#: The speakers folder's name inside the root (``speakers_info.json`` + ``{id}_prompt.wav``).
SPEAKERS_FOLDER = "speakers"

#: Official folder name -> (the :class:`ModelSettings` field that overrides it, a file that marks the folder).
OFFICIAL_FOLDERS = {
    TOKENIZER_FOLDER: ("tokenizer_path", "linguistic_tokenizer.npy"),
    CHAT_FOLDER: ("chat_path", "config.json"),
    TTS_FOLDER: ("tts_path", "config.json"),
    EDITX_FOLDER: ("editx_path", "config.json"),
}
#: The models of a voice chat (:func:`load_models`); EditX is not among them.
_ALL_MODELS = (TOKENIZER_FOLDER, CHAT_FOLDER, TTS_FOLDER)
_SPEAKERS_WHAT = "a speakers folder (speakers_info.json + one {id}_prompt.wav each)"
_DEVICE_MAP_REQUIREMENT = "None, a strategy such as 'auto' or a dict of module name -> device"
#: The vLLM engine settings of :class:`ModelSettings` (they apply to the backends that are ``"vllm"``).
VLLM_ENGINE_SETTINGS = ("tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization")
#: vLLM's own default share of each GPU an engine reserves.
_VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


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
        tokenizer_path, chat_path, tts_path, editx_path: a model's folder when it is not in the root (the
            official folder, or a folder that holds it under its published name).
        max_speech_seconds: limit on the speech the TTS (and EditX) generates per text segment (EditX: per
            piece of text or audio; default: none besides the length ceilings and the context).
        allow_unknown_tags: whether the TTS passes a leading ``(tag)`` it was not trained on to the model
            (as upstream does) instead of refusing the text.  ``None`` (default): the model's own default,
            that is passed on in a pipeline (the chat model writes the text, and may invent tags) and
            refused by a TTS loaded alone (:func:`load_tts`, where the caller writes the text).
        cache_cloned_voices: keep the voice-prompt features of cloned clips in the disk cache (default on;
            a server that clones a voice per request turns it off, or the cache grows with every clip).
        chat_backend, tts_backend: what generates with the chat / TTS language model:
            ``"transformers"`` (default; ``None`` means it), ``"vllm"`` (in-process vLLM engine, needs the
            ``vllm`` package and a GPU), the ``http(s)://`` URL of a ``vllm serve`` server (the weights are not
            loaded here; the folder still provides the tokenizer, config.json and, for the TTS, the
            decoders), or a ready :class:`~stepaudio.llm.backends.GenerationBackend`.
        tensor_parallel_size, pipeline_parallel_size: GPUs a ``"vllm"`` engine splits the model over
            (``None``: 1); only with a ``"vllm"`` backend.
        gpu_memory_utilization: share of each GPU a ``"vllm"`` engine reserves (``None``: vLLM's 0.9); when
            both language models are ``"vllm"`` each engine reserves it, so it must be at most 0.5.
        chat_quantization, tts_quantization: load that language model quantized: ``"int8"`` / ``"int4"``
            weight-only with bitsandbytes for ``"transformers"`` (read shard by shard; Step-Audio-Chat in int4
            fits one 80 GB GPU), vLLM's own method name (``"fp8"``...) for ``"vllm"``; ``None``: as published.
        editx_backend, editx_quantization: the same for Step-Audio-EditX's language model (:func:`load_editx`);
            ``editx_quantization`` also takes the original's ``"awq-4bit"`` with ``editx_backend="vllm"``.
    """

    device: str | torch.device | None = None
    dtype: str | torch.dtype | None = None
    attention: str = "sdpa"
    llm_device_map: str | dict | None = None
    speakers_dir: Path | None = None
    tokenizer_path: Path | None = None
    chat_path: Path | None = None
    tts_path: Path | None = None
    editx_path: Path | None = None
    max_speech_seconds: float | None = None
    allow_unknown_tags: bool | None = None
    cache_cloned_voices: bool = True
    chat_backend: str | GenerationBackend | None = None
    tts_backend: str | GenerationBackend | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    chat_quantization: str | None = None
    tts_quantization: str | None = None
    editx_backend: str | GenerationBackend | None = None
    editx_quantization: str | None = None

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
        for name in ("speakers_dir", "tokenizer_path", "chat_path", "tts_path", "editx_path"):
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
        self._check_backends()

    def _check_backends(self) -> None:
        """The two backends' specs, the vLLM engine settings, and that each applies to the backends chosen."""
        from .llm.backends import check_backend_spec, check_quantization_for

        for name in ("chat_backend", "tts_backend", "editx_backend"):
            object.__setattr__(self, name, check_backend_spec(getattr(self, name), name))
        for role in ("chat", "tts", "editx"):
            name = f"{role}_quantization"
            check_quantization_for(getattr(self, f"{role}_backend"), getattr(self, name), name)
        if self.llm_device_map is not None and self.chat_backend != "transformers":
            detail = (
                f"only applies to chat_backend='transformers', got {describe_value(self.llm_device_map)} with "
                f"chat_backend={_shown(self.chat_backend)}; drop llm_device_map (a vLLM engine uses "
                "tensor_parallel_size)"
            )
            raise InvalidArgumentError.about("llm_device_map", detail, self.llm_device_map)
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_int(value, name, minimum=1, hint="None means 1"))
        if self.gpu_memory_utilization is not None:
            share = check_float(
                self.gpu_memory_utilization,
                "gpu_memory_utilization",
                minimum=0,
                maximum=1,
                exclusive_minimum=True,
                hint="the share of each GPU a vLLM engine reserves, e.g. 0.9",
            )
            object.__setattr__(self, "gpu_memory_utilization", share)
        engines = [name for name in ("chat_backend", "tts_backend", "editx_backend") if getattr(self, name) == "vllm"]
        if not engines:
            for name in VLLM_ENGINE_SETTINGS:
                value = getattr(self, name)
                if value is not None:
                    detail = (
                        f"only applies to an in-process vLLM engine, got {describe_value(value)} with "
                        f"chat_backend={_shown(self.chat_backend)} and tts_backend={_shown(self.tts_backend)}; "
                        "pass chat_backend='vllm' or tts_backend='vllm', or drop it (a vllm serve server takes "
                        "it on its own command line)"
                    )
                    raise InvalidArgumentError.about(name, detail, value)
        share = self.gpu_memory_utilization
        limit = round(1 / len(engines) - 0.005, 2) if len(engines) > 1 else 1.0  # 0.5 for two engines, 0.33 for three
        if (share if share is not None else _VLLM_DEFAULT_GPU_MEMORY_UTILIZATION) > limit:
            shown = share if share is not None else f"None (vLLM's {_VLLM_DEFAULT_GPU_MEMORY_UTILIZATION})"
            which = " and ".join(engines) + (" are both" if len(engines) == 2 else " are all")
            if len(engines) == 3:
                which = f"{engines[0]}, {engines[1]} and {engines[2]} are all"
            detail = (
                f"must be at most {limit:g} when {which} 'vllm' (each engine reserves "
                f"that share of the same GPUs), got {shown}; pass e.g. {limit - 0.05:.2g}, or serve one model with "
                "vllm serve and pass its URL"
            )
            raise InvalidArgumentError.about("gpu_memory_utilization", detail, share)


def _shown(spec: object) -> str:
    """A backend spec in a message: its text, or the class of an instance."""
    return repr(spec) if isinstance(spec, str) else f"a {type(spec).__name__}"


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
    editx: Path | None = None


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
        override: the model's own folder (the settings' ``tokenizer_path`` / ``chat_path`` / ``tts_path`` /
            ``editx_path``).
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
        tokenizer=found.get(TOKENIZER_FOLDER),
        chat=found.get(CHAT_FOLDER),
        tts=found.get(TTS_FOLDER),
        speakers=speakers,
        editx=found.get(EDITX_FOLDER),
    )


# ----------------------------------------------------------------------------------------------- models
def _tokenizer(folders: ModelFolders, settings: ModelSettings) -> StepAudioTokenizer:
    from .tokenizer import StepAudioTokenizer

    return StepAudioTokenizer(folders.tokenizer, device=settings.device)


def _backend(settings: ModelSettings, folder: Path, role: str) -> Any:
    """The spec to pass to the model for ``role``; a ``"vllm"`` engine is built here with the engine settings."""
    spec = settings.chat_backend if role == "chat" else settings.tts_backend
    if spec != "vllm":
        return spec
    from .llm.backends import make_backend
    from .tts.tts import TTS_MAX_LENGTH

    return make_backend(
        spec,
        folder,
        role=role,
        name=f"{role}_backend",
        dtype=settings.dtype,
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=TTS_MAX_LENGTH if role == "tts" else None,
        quantization=settings.chat_quantization if role == "chat" else settings.tts_quantization,
    )


def _chat(folders: ModelFolders, settings: ModelSettings, tokenizer: Any | None) -> StepAudioChat:
    from .llm.backends import LOCAL_BACKENDS
    from .llm.chat import StepAudioChat

    return StepAudioChat(
        folders.chat,
        device=settings.device,
        dtype=settings.dtype,
        attn_implementation=settings.attention,
        device_map=settings.llm_device_map,
        audio_tokenizer=tokenizer,
        backend=_backend(settings, folders.chat, "chat"),
        quantization=settings.chat_quantization if settings.chat_backend in LOCAL_BACKENDS else None,
    )


def _tts(folders: ModelFolders, settings: ModelSettings, tokenizer: Any, unknown_tags: bool) -> StepAudioTTS:
    from .llm.backends import LOCAL_BACKENDS
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
        backend=_backend(settings, folders.tts, "tts"),
        quantization=settings.tts_quantization if settings.tts_backend in LOCAL_BACKENDS else None,
    )


def _editx(folders: ModelFolders, settings: ModelSettings, tokenizer: Any) -> StepAudioEditX:
    from .editx import StepAudioEditX

    engine = {name: getattr(settings, name) for name in VLLM_ENGINE_SETTINGS if getattr(settings, name) is not None}
    return StepAudioEditX(
        folders.editx,
        tokenizer,
        device=settings.device,
        dtype=settings.dtype,
        attn_implementation=settings.attention,
        max_speech_seconds=settings.max_speech_seconds,
        backend=settings.editx_backend,
        quantization=settings.editx_quantization,
        backend_options=engine if settings.editx_backend == "vllm" and engine else None,
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


def load_editx(
    root: str | Path | None,
    settings: ModelSettings | None = None,
    tokenizer: StepAudioTokenizer | None = None,
    *,
    names: Mapping[str, str] | None = None,
) -> StepAudioEditX:
    """Step-Audio-EditX of ``root`` (or ``settings.editx_path``): zero-shot cloning and audio editing.

    Pass the ``tokenizer`` the other models use (``load_models(...).tokenizer``) to share it; without one
    the Step-Audio-Tokenizer is loaded too, from the same root (both folders are found before either
    loads).  The EditX language model is a Step-1 3B like the TTS's (about 7 GB in bf16): it generates with
    ``settings.editx_backend`` (default ``"transformers"`` in this process, on ``settings.device`` in
    ``settings.dtype`` with ``settings.attention``), loaded with ``settings.editx_quantization``;
    ``settings.max_speech_seconds`` limits the audio of each piece.
    ``names`` as for :func:`find_model_folder`.
    """
    settings = _check_settings(settings)
    needs = (EDITX_FOLDER,) if tokenizer is not None else (TOKENIZER_FOLDER, EDITX_FOLDER)
    folders = find_model_folders(root, settings, needs, names=names)
    if tokenizer is None:
        tokenizer = _tokenizer(folders, settings)
    return _editx(folders, settings, tokenizer)


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
