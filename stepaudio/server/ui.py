"""A Gradio demo of a :class:`~stepaudio.StepAudio` pipeline: voice chat, text to speech and voice cloning,
and with Step-Audio-EditX (``editx=``) audio editing.

``build_ui(pipeline)`` returns the ``gr.Blocks`` page; ``mount_ui(app, pipeline)`` mounts it on a FastAPI
app (``stepaudio serve --ui`` serves it at ``/ui`` beside the other endpoints).  Gradio is an optional
dependency (``pip install 'stepaudio[ui]'``) and is imported only when one of these is called.

Every model call goes through Gradio's queue with one shared slot (the models are shared and not
thread-safe), optionally also under a lock shared with the rest of the app.  The library's own input
checks run first and their one-line messages reach the user as ``gr.Error`` pop-ups (and API errors),
never as tracebacks.  Every event has an ``api_name``, so ``gradio_client`` can drive the page::

    client = gradio_client.Client("http://127.0.0.1:8000/ui/")
    chat, reply_text, reply_wav = client.predict(handle_file("ask.wav"), "", "Tingting", api_name="/voice_chat")
    wav = client.predict("你好", "Tingting", "高兴1", 1.0, 1.0, api_name="/tts")
    wav = client.predict(handle_file("voice.wav"), "its words", "text to say", 1.0, 1.0, api_name="/clone_voice")
    wav = client.predict(handle_file("voice.wav"), "its words", "emotion", "happy", 1, "", api_name="/edit_audio")
"""

from __future__ import annotations

import contextlib
import html
import inspect
import logging
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AudioInputError, InvalidArgumentError, PromptError, UsageError
from ..validation import check_text, describe_value

if TYPE_CHECKING:
    import fastapi
    import gradio as gr

logger = logging.getLogger(__name__)

__all__ = ["API_NAMES", "EDITX_API_NAMES", "UI_INSTALL_HINT", "build_ui", "mount_ui"]

#: What to run when Gradio is missing.
UI_INSTALL_HINT = "pip install 'stepaudio[ui]'"

#: The ``api_name`` of every event of the page (``gradio_client`` calls them as ``"/" + name``).
API_NAMES = ("voice_chat", "clear_chat", "tts", "clone_voice")
#: The events the Edit tab adds when the page has Step-Audio-EditX.
EDITX_API_NAMES = ("edit_audio", "edit_info_choices")

#: Library errors that are the user's input, shown as a ``gr.Error`` with the library's message.
USER_ERRORS = (UsageError, AudioInputError, PromptError)

#: The one queue slot all model work shares (chat, TTS and cloning use the same models).
MODEL_CONCURRENCY_ID = "stepaudio-models"

_NO_TAG = ""


def _import_gradio():
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            f"the web demo needs Gradio, which is not installed ({error}); install it with {UI_INSTALL_HINT}"
        ) from error
    return gradio


@contextlib.contextmanager
def _user_errors(gr) -> Iterator[None]:
    """Turn the library's input errors into ``gr.Error`` pop-ups with the library's one-line message."""
    try:
        yield
    except USER_ERRORS as error:
        message = " ".join(str(error).split())
        logger.info("refused a UI request: %s", message)
        raise _error(gr, message) from None


def _error(gr, message: str) -> Exception:
    """A ``gr.Error`` showing ``message`` as text (Gradio renders it as HTML), without a traceback in the log."""
    quiet = {"print_exception": False} if "print_exception" in inspect.signature(gr.Error).parameters else {}
    return gr.Error(html.escape(message, quote=False), **quiet)  # (not every Gradio release has print_exception)


def _int16(wav: Any) -> np.ndarray:
    """A ``[1, N]`` (or ``[N]``) float waveform as mono int16 samples for Gradio."""
    samples = np.asarray(wav.detach().cpu() if hasattr(wav, "detach") else wav, dtype=np.float32).reshape(-1)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


class _Demo:
    """The handlers of the page, bound to one pipeline (kept apart from Gradio so they read as plain code)."""

    def __init__(
        self,
        gr,
        pipeline: Any,
        generation: dict[str, Any],
        system_prompt: str | None,
        model_lock: contextlib.AbstractContextManager | None,
        editx: Any | None = None,
    ) -> None:
        self.gr = gr
        self.editx = editx
        self.chat_model = pipeline.llm
        self.tts_model = _tts_of(pipeline)
        self.audio_tokenizer = getattr(pipeline, "tokenizer", None) or pipeline.encoder  # upstream's name: encoder
        self.generation = generation
        self.system_prompt = system_prompt
        self.model_lock = model_lock if model_lock is not None else contextlib.nullcontext()
        # Reply audio shown in the chat history is written here (Gradio copies it into its cache).
        self._replies = tempfile.TemporaryDirectory(prefix="stepaudio-ui-")

    # ---------------------------------------------------------------------------------------- voice chat
    def voice_chat(
        self, audio: str | None, text: str | None, speaker: str | None, turns: list[dict[str, Any]] | None
    ) -> tuple[list[dict[str, Any]], str, str | None, list[dict[str, Any]]]:
        """One turn: the user's clip and/or text in, the reply's text and speech (a wav file) out; the turn is kept."""
        from ..llm.prompts import audio_codes_to_ids, parse_audio_tokens
        from ..pipeline import speak_reply

        gr = self.gr
        turns = list(turns or [])
        text = (text or "").strip()
        if not audio and not text:
            raise _error(gr, "record or upload a question, or type one, first")
        parts: list[dict[str, Any]] = []
        if audio:
            parts.append({"type": "audio", "audio": audio})
        if text:
            parts.append({"type": "text", "text": text})
        llm, tts = self.chat_model, self.tts_model
        with _user_errors(gr), self.model_lock:
            # Everything is checked before any model runs: the voice, the messages and whether they fit.
            tts.check_request(None, speaker)
            llm.check_prompt(self._messages(turns, {"role": "user", "content": parts}))
            if audio:  # tokenized once: later turns send the ids, not the clip again
                ids = audio_codes_to_ids(parse_audio_tokens(self.audio_tokenizer(audio)))
                parts[0] = {"type": "audio", "audio_ids": ids}
            user_message = {"role": "user", "content": parts}
            reply = llm(self._messages(turns, user_message), **self.generation)
            wav, sample_rate = speak_reply(tts, reply, speaker)
        reply_audio = None
        if wav.numel():
            reply_audio = str(Path(self._replies.name) / f"reply-{uuid.uuid4().hex}.wav")
            import soundfile

            soundfile.write(reply_audio, _int16(wav), sample_rate, subtype="PCM_16")
        turns.append(
            {"message": user_message, "audio": audio, "text": text, "reply": reply, "reply_audio": reply_audio}
        )
        return self.chat_display(turns), reply, reply_audio, turns

    def _messages(self, turns: Sequence[Mapping[str, Any]], new: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        history = []
        for turn in turns:
            history += [turn["message"], {"role": "assistant", "content": turn["reply"]}]
        return [*system, *history, new]

    @staticmethod
    def chat_display(turns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The Chatbot's messages: the user's clip and text, the reply's text and speech."""
        shown: list[dict[str, Any]] = []
        for turn in turns:
            user = ([{"path": turn["audio"]}] if turn["audio"] else []) + ([turn["text"]] if turn["text"] else [])
            reply = [turn["reply"] or "(no text)"] + ([{"path": turn["reply_audio"]}] if turn["reply_audio"] else [])
            shown += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return shown

    @staticmethod
    def clear_chat() -> tuple[list, str, None, list]:
        return [], "", None, []

    # ------------------------------------------------------------------------------------ text to speech
    def tts(
        self, text: str | None, speaker: str | None, tag: str | None, speed: float, volume: float
    ) -> tuple[int, np.ndarray] | None:
        """Speak ``text`` in a registered voice, with an optional leading tag, at ``speed`` and ``volume``."""
        from ..tts.prompts import leading_instruction

        text = text or ""
        if tag:
            existing = leading_instruction(text.lstrip())
            if existing is not None:
                raise _error(
                    self.gr,
                    f"the text already starts with the tag ({existing}); pick 'none' in the tag menu or remove the "
                    "tag from the text",
                )
            text = f"（{tag}）{text}"
        return self._speak(text, speaker=speaker, speed_ratio=speed, volume_ratio=volume)

    # ------------------------------------------------------------------------------------- voice cloning
    def clone_voice(
        self, prompt_audio: str | None, transcript: str | None, text: str | None, speed: float, volume: float
    ) -> tuple[int, np.ndarray] | None:
        """Speak ``text`` in the voice of ``prompt_audio``, whose words are ``transcript``."""
        gr = self.gr
        if not prompt_audio:
            raise _error(gr, "upload or record a clip of the voice to clone (3-10 s of speech)")
        if not (transcript or "").strip():
            raise _error(gr, "type the transcript of the clip to clone: the words spoken in it")
        clone = {"wav_path": prompt_audio, "prompt_text": transcript.strip()}
        return self._speak(text or "", clone_dict=clone, speed_ratio=speed, volume_ratio=volume)

    # ---------------------------------------------------------------------------------------- editing
    def edit_info_choices(self, edit_type: str | None) -> Any:
        """The ``edit_info`` menu's new choices when the edit type changes."""
        choices, value = _edit_info_menu(edit_type)
        return self.gr.Dropdown(choices=choices, value=value)

    def edit_audio(
        self,
        audio: str | None,
        audio_text: str | None,
        edit_type: str | None,
        edit_info: str | None,
        iterations: float,
        text: str | None,
    ) -> tuple[int, np.ndarray] | None:
        """Edit ``audio`` (whose words are ``audio_text``) with Step-Audio-EditX ``iterations`` times."""
        gr = self.gr
        if not audio:
            raise _error(gr, "upload or record the clip to edit")
        with _user_errors(gr), self.model_lock:
            wav, sample_rate = self.editx.edit(
                audio,
                audio_text or "",
                edit_type,
                edit_info or None,
                iterations=int(iterations),
                text=text if text and text.strip() else None,
            )
        if not wav.numel():
            gr.Warning("The model produced no speech for this clip.")
            return None
        return sample_rate, _int16(wav)

    def _speak(self, text: str, **kwargs: Any) -> tuple[int, np.ndarray] | None:
        tts = self.tts_model
        with _user_errors(self.gr), self.model_lock:
            tts.check_request(text, **kwargs)
            wav, sample_rate = tts(text, **kwargs)
        if not wav.numel():
            self.gr.Warning("The model produced no speech for this text.")
            return None
        return sample_rate, _int16(wav)


def _edit_info_menu(edit_type: str | None) -> tuple[list[tuple[str, str]], str]:
    """``(choices, value)`` of the ``edit_info`` menu: the type's accepted values, or only "none" (``""``)."""
    from ..editx.edit_config import EDIT_INFO_CHOICES

    accepted = EDIT_INFO_CHOICES.get(edit_type or "", ())
    if not accepted:
        return [("none", _NO_TAG)], _NO_TAG
    return [(value, value) for value in accepted], accepted[0]


def _tts_of(pipeline: Any) -> Any:
    """The pipeline's TTS (``pipeline.tts``; upstream's name ``decoder`` for older pipelines)."""
    return getattr(pipeline, "tts", None) or pipeline.decoder


def _registered_speakers(pipeline: Any, speakers: object) -> list[str]:
    """The speakers to offer: the given ones (each checked to be registered) or all of the speakers folder."""
    tts = _tts_of(pipeline)
    if speakers is None:
        registry = getattr(tts, "speakers", None)
        return list(registry.speaker_ids) if registry is not None else []
    if isinstance(speakers, str) or not isinstance(speakers, Sequence):
        detail = f"must be a list of registered speaker ids (or None for all of them), got {describe_value(speakers)}"
        raise InvalidArgumentError.about("speakers", detail, speakers)
    chosen = []
    for index, speaker in enumerate(speakers):
        check_text(speaker, f"speakers[{index}]")
        tts.check_speaker(speaker)
        chosen.append(speaker)
    return chosen


def build_ui(
    pipeline: Any,
    *,
    speakers: list[str] | None = None,
    default_speaker: str | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    model_lock: contextlib.AbstractContextManager | None = None,
    title: str = "Step-Audio",
    editx: Any | None = None,
) -> gr.Blocks:
    """The demo page of ``pipeline`` (a :class:`~stepaudio.StepAudio`), as a ``gr.Blocks`` with three tabs
    (four with ``editx``).

    * **Voice chat**: a question recorded with the microphone or uploaded, and/or typed; the reply's
      text and speech in the chosen voice; the conversation is kept per browser session
      (api ``/voice_chat``: ``(audio, text, speaker) -> (chat history, reply text, reply audio)``;
      ``/clear_chat`` starts over).
    * **Text to speech**: text, a registered speaker, an optional tag (``KNOWN_INSTRUCTIONS``), speed
      0.25-4 and volume 0-10 (api ``/tts``: ``(text, speaker, tag, speed, volume) -> audio``;
      tag ``""`` is none).
    * **Voice cloning**: a prompt clip and its transcript, the text to speak, speed and volume
      (api ``/clone_voice``: ``(clip, transcript, text, speed, volume) -> audio``).
    * **Edit** (with ``editx``): a clip and its transcript, the edit type and its emotion / style / speed,
      the number of iterations (each edits the previous output) and, for paralinguistic edits, the
      transcript with ``[Tag]`` sounds (api ``/edit_audio``: ``(clip, transcript, edit_type, edit_info,
      iterations, text) -> audio``; ``edit_info`` / ``text`` ``""`` is none).

    Audio comes back as 16-bit wav: 22050 Hz from the TTS, 24000 Hz from EditX.

    Args:
        pipeline: the loaded pipeline (uses its ``llm``, ``tts`` and ``tokenizer``; ``decoder``, ``encoder`` too).
        speakers: the voices to offer (default: every speaker of the TTS speakers folder); each must be
            registered.
        default_speaker: the voice selected at first (default: the first of ``speakers``).
        system_prompt: the chat's system prompt (default: the upstream voice-chat prompt, "answer
            briefly and colloquially, in the user's language"); ``""`` for none.
        max_new_tokens, temperature, top_p: chat generation settings (default: the pipeline's).
        model_lock: a lock (any context manager) held around model work, to share the models with
            other endpoints of the same app; the page itself already runs one model call at a time.
        title: heading of the page.
        editx: a loaded :class:`~stepaudio.editx.StepAudioEditX` (best sharing the pipeline's tokenizer):
            adds the Edit tab.

    Raises:
        ImportError: Gradio is not installed (``pip install 'stepaudio[ui]'``).
        InvalidArgumentError: a setting out of range; PromptError: a speaker that is not registered.
    """
    from ..llm.chat import check_generation_args
    from ..llm.prompts import DEFAULT_VOICE_SYSTEM_PROMPT
    from ..tts.postprocess import MAX_SPEED_RATIO, MAX_VOLUME_RATIO, MIN_SPEED_RATIO
    from ..tts.prompts import KNOWN_INSTRUCTIONS

    # The settings first: a wrong one fails here, not on the first request.
    generation = dict(getattr(pipeline, "generation", {}))
    for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature), ("top_p", top_p)):
        if value is not None:
            generation[name] = value
    generation.setdefault("max_new_tokens", 2048)
    generation.setdefault("temperature", 0.7)
    generation.setdefault("top_p", 0.9)
    check_generation_args(generation["max_new_tokens"], generation["temperature"], generation["top_p"], 50, True)
    if system_prompt is None:
        system_prompt = DEFAULT_VOICE_SYSTEM_PROMPT
    check_text(system_prompt, "system_prompt", allow_empty=True)
    check_text(title, "title", allow_empty=True)
    if editx is not None and not callable(getattr(editx, "edit", None)):
        detail = f"must be None or a StepAudioEditX (stepaudio.assembly.load_editx), got {describe_value(editx)}"
        raise InvalidArgumentError.about("editx", detail, editx)
    if model_lock is not None and not (hasattr(model_lock, "__enter__") and hasattr(model_lock, "__exit__")):
        detail = f"must be None or a lock (a context manager, e.g. threading.Lock()), got {describe_value(model_lock)}"
        raise InvalidArgumentError.about("model_lock", detail, model_lock)
    voices = _registered_speakers(pipeline, speakers)
    if default_speaker is not None:
        check_text(default_speaker, "default_speaker")
        if default_speaker not in voices:
            detail = f"must be one of the offered speakers ({', '.join(voices) or 'none'}), got {default_speaker!r}"
            raise InvalidArgumentError.about("default_speaker", detail, default_speaker)
    default_voice = default_speaker or (voices[0] if voices else None)

    gr = _import_gradio()
    demo = _Demo(gr, pipeline, generation, system_prompt or None, model_lock, editx)
    # Gradio 5 needs type="messages" (its default is the old tuples); Gradio 6 only has messages.
    chat_format = {"type": "messages"} if "type" in inspect.signature(gr.Chatbot).parameters else {}
    model_event = {"concurrency_limit": 1, "concurrency_id": MODEL_CONCURRENCY_ID}

    def speaker_menu() -> gr.Dropdown:
        # Custom values reach the library, whose message lists the registered speakers.
        return gr.Dropdown(voices, value=default_voice, label="Voice", allow_custom_value=True)

    def speed_slider() -> gr.Slider:
        return gr.Slider(MIN_SPEED_RATIO, MAX_SPEED_RATIO, value=1.0, step=0.05, label="Speed (1 = normal)")

    def volume_slider() -> gr.Slider:
        return gr.Slider(0.0, MAX_VOLUME_RATIO, value=1.0, step=0.1, label="Volume (1 = unchanged)")

    with gr.Blocks(title=title or "Step-Audio", analytics_enabled=False) as blocks:
        if title:
            gr.Markdown(f"# {html.escape(title)}")
        with gr.Tabs():
            with gr.Tab("Voice chat"):
                turns = gr.State([])
                with gr.Row():
                    with gr.Column(scale=1):
                        question_audio = gr.Audio(
                            sources=["microphone", "upload"], type="filepath", label="Your question (speak or upload)"
                        )
                        question_text = gr.Textbox(label="Or type it (optional)", lines=2)
                        chat_voice = speaker_menu()
                        with gr.Row():
                            send = gr.Button("Send", variant="primary")
                            clear = gr.Button("New conversation")
                    with gr.Column(scale=2):
                        chatbot = gr.Chatbot(label="Conversation", height=360, **chat_format)
                        reply_text = gr.Textbox(label="Reply", interactive=False)
                        reply_audio = gr.Audio(label="Spoken reply", type="filepath", format="wav", autoplay=True)
                chat_outputs = [chatbot, reply_text, reply_audio, turns]
                gr.on(
                    [send.click, question_text.submit],
                    demo.voice_chat,
                    inputs=[question_audio, question_text, chat_voice, turns],
                    outputs=chat_outputs,
                    api_name="voice_chat",
                    **model_event,
                )
                clear.click(demo.clear_chat, outputs=chat_outputs, api_name="clear_chat", queue=False)
            with gr.Tab("Text to speech"):
                tts_text = gr.Textbox(label="Text", lines=3, placeholder="今天天气真不错。")
                with gr.Row():
                    tts_voice = speaker_menu()
                    tts_tag = gr.Dropdown(
                        [("none", _NO_TAG), *[(tag, tag) for tag in KNOWN_INSTRUCTIONS]],
                        value=_NO_TAG,
                        label="Tag (emotion, dialect, speed, RAP or humming)",
                    )
                with gr.Row():
                    tts_speed = speed_slider()
                    tts_volume = volume_slider()
                tts_button = gr.Button("Speak", variant="primary")
                tts_audio = gr.Audio(label="Speech", format="wav", interactive=False)
                tts_button.click(
                    demo.tts,
                    inputs=[tts_text, tts_voice, tts_tag, tts_speed, tts_volume],
                    outputs=tts_audio,
                    api_name="tts",
                    **model_event,
                )
            with gr.Tab("Voice cloning"):
                with gr.Row():
                    clone_prompt = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="Voice to clone (3-10 s of speech)"
                    )
                    clone_transcript = gr.Textbox(label="Transcript of that clip", lines=3)
                clone_text = gr.Textbox(label="Text to speak in that voice", lines=3)
                with gr.Row():
                    clone_speed = speed_slider()
                    clone_volume = volume_slider()
                clone_button = gr.Button("Speak in this voice", variant="primary")
                clone_audio = gr.Audio(label="Speech", format="wav", interactive=False)
                clone_button.click(
                    demo.clone_voice,
                    inputs=[clone_prompt, clone_transcript, clone_text, clone_speed, clone_volume],
                    outputs=clone_audio,
                    api_name="clone_voice",
                    **model_event,
                )
            if editx is not None:
                _edit_tab(gr, demo, model_event)
    blocks.queue(default_concurrency_limit=1)
    return blocks


def _edit_tab(gr, demo: _Demo, model_event: dict[str, Any]) -> None:
    """The Edit tab (Step-Audio-EditX): a clip, its transcript, what to change, how many times."""
    from ..editx.edit_config import EDIT_TYPES, PARALINGUISTIC_TAGS
    from .editx import MAX_EDIT_ITERATIONS

    with gr.Tab("Edit"):
        with gr.Row():
            edit_clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip to edit")
            edit_transcript = gr.Textbox(
                label="Transcript of that clip (may stay empty for denoise and vad)", lines=3
            )
        with gr.Row():
            # Custom values reach the library, whose message lists what is accepted.
            edit_type = gr.Dropdown(list(EDIT_TYPES), value=EDIT_TYPES[0], label="Edit type", allow_custom_value=True)
            choices, value = _edit_info_menu(EDIT_TYPES[0])
            edit_info = gr.Dropdown(choices, value=value, label="Emotion, style or speed", allow_custom_value=True)
            edit_iterations = gr.Slider(
                1, MAX_EDIT_ITERATIONS, value=1, step=1, label="Iterations (each edits the previous output)"
            )
        edit_text = gr.Textbox(
            label="Paralinguistic only: the transcript with [Tag] sounds, e.g. 'I think [Uhm] it works' "
            f"(tags: {', '.join(PARALINGUISTIC_TAGS)})",
            lines=2,
        )
        edit_button = gr.Button("Edit", variant="primary")
        edit_output = gr.Audio(label="Edited audio", format="wav", interactive=False)
        edit_type.change(
            demo.edit_info_choices, inputs=edit_type, outputs=edit_info, api_name="edit_info_choices", queue=False
        )
        edit_button.click(
            demo.edit_audio,
            inputs=[edit_clip, edit_transcript, edit_type, edit_info, edit_iterations, edit_text],
            outputs=edit_output,
            api_name="edit_audio",
            **model_event,
        )


def mount_ui(
    app: fastapi.FastAPI,
    pipeline: Any,
    path: str = "/ui",
    *,
    mount_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> gr.Blocks:
    """Build the demo page (:func:`build_ui` with ``kwargs``) and mount it on ``app`` at ``path``.

    ``mount_options`` go to ``gr.mount_gradio_app`` (e.g. ``auth``, ``root_path`` behind a proxy,
    ``max_file_size``).  The page's startup runs in the app's lifespan, so serve ``app`` with lifespan
    events on (uvicorn's default).  Returns the page.
    """
    if not isinstance(path, str) or not path.startswith("/") or (path != "/" and path.endswith("/")):
        detail = f"must be a URL path such as '/ui' (a leading '/', no trailing '/'), got {describe_value(path)}"
        raise InvalidArgumentError.about("path", detail, path)
    if mount_options is not None and not isinstance(mount_options, Mapping):
        detail = f"must be None or a dict of gr.mount_gradio_app options, got {describe_value(mount_options)}"
        raise InvalidArgumentError.about("mount_options", detail, mount_options)
    blocks = build_ui(pipeline, **kwargs)
    gr = _import_gradio()
    gr.mount_gradio_app(app, blocks, path=path, **dict(mount_options or {}))
    return blocks
