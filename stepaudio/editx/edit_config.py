"""What Step-Audio-EditX can be asked to do: edit types, their accepted ``edit_info`` values, languages.

The lists are the ones of the original ``config/edit_config.py`` and ``tts_infer.py`` (see
``shared/reference/editx.md``), in their order; :func:`check_edit_request` refuses anything else
with a one-line message that lists what is accepted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..errors import InvalidArgumentError
from ..validation import check_int, check_text, describe_value

logger = logging.getLogger(__name__)

__all__ = [
    "EDIT_TYPES",
    "EDIT_INFO_CHOICES",
    "EMOTIONS",
    "LANGUAGES",
    "PARALINGUISTIC_TAGS",
    "SPEAKING_STYLES",
    "SPEEDS",
    "TEXTLESS_EDIT_TYPES",
    "EditRequest",
    "check_edit_request",
    "check_language",
    "check_n_edit_iter",
    "paralinguistic_tags",
]

#: Emotions (``edit_info`` of ``emotion``); ``remove`` takes any emotion out.
EMOTIONS: tuple[str, ...] = (
    "happy",
    "angry",
    "sad",
    "humour",
    "confusion",
    "disgusted",
    "empathy",
    "embarrass",
    "fear",
    "surprised",
    "excited",
    "depressed",
    "coldness",
    "admiration",
    "remove",
)
#: Speaking styles (``edit_info`` of ``style``); ``remove`` takes any style out.
SPEAKING_STYLES: tuple[str, ...] = (
    "serious",
    "arrogant",
    "child",
    "older",
    "girl",
    "pure",
    "sister",
    "sweet",
    "ethereal",
    "whisper",
    "gentle",
    "recite",
    "generous",
    "act_coy",
    "warm",
    "shy",
    "comfort",
    "authority",
    "chat",
    "radio",
    "soulful",
    "story",
    "vivid",
    "program",
    "news",
    "advertising",
    "roar",
    "murmur",
    "shout",
    "deeply",
    "loudly",
    "remove",
    "exaggerated",
)
#: Speed changes (``edit_info`` of ``speed``).
SPEEDS: tuple[str, ...] = ("faster", "slower", "more faster", "more slower")

#: Edit types in the original's order (``clone`` is :meth:`StepAudioEditX.clone`, not an edit).
EDIT_TYPES: tuple[str, ...] = ("emotion", "style", "vad", "denoise", "paralinguistic", "speed")
#: ``edit_info`` accepted by each edit type; an empty tuple means the type takes none.
EDIT_INFO_CHOICES: dict[str, tuple[str, ...]] = {
    "emotion": EMOTIONS,
    "style": SPEAKING_STYLES,
    "vad": (),
    "denoise": (),
    "paralinguistic": (),
    "speed": SPEEDS,
}
#: Edit types whose instruction does not quote the audio's transcript (the original lets it be empty).
TEXTLESS_EDIT_TYPES = frozenset({"denoise", "vad"})

#: The paralinguistic tags the original README lists, written ``[Tag]`` inside the new text.
PARALINGUISTIC_TAGS: tuple[str, ...] = (
    "Breathing",
    "Laughter",
    "Surprise-oh",
    "Confirmation-en",
    "Uhm",
    "Surprise-ah",
    "Surprise-wa",
    "Sigh",
    "Question-ei",
    "Dissatisfaction-hnn",
)
#: Language / dialect prefixes of zero-shot cloning (the original README: add ``[Sichuanese]`` etc. before the text).
LANGUAGES: tuple[str, ...] = ("Sichuanese", "Cantonese", "Japanese", "Korean")

_TAG = re.compile(r"\[([^\[\]]+)\]")


def paralinguistic_tags(text: str) -> list[str]:
    """The ``[Tag]`` names written in ``text``, in order (``"a[Uhm]b[Sigh]"`` -> ``["Uhm", "Sigh"]``)."""
    return _TAG.findall(text)


def _one_of(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(repr(choice) for choice in choices)


@dataclass(frozen=True)
class EditRequest:
    """A checked edit request.

    Attributes:
        edit_type: one of :data:`EDIT_TYPES`.
        edit_info: the emotion, style or speed (``None`` for the types that take none).
        audio_text: transcript of the audio being edited (``""`` allowed for denoise and vad).
        text: the new text with ``[Tag]`` insertions (paralinguistic only, else ``None``).
    """

    edit_type: str
    edit_info: str | None
    audio_text: str
    text: str | None


def check_edit_request(
    edit_type: object, edit_info: object = None, audio_text: object = None, text: object = None
) -> EditRequest:
    """Check an edit request before any work; returns it normalised (``""`` edit_info becomes ``None``).

    Raises:
        InvalidArgumentError: an unknown edit type; an ``edit_info`` missing, not accepted by the type,
            or given to a type that takes none; a transcript missing where the instruction quotes it;
            a paralinguistic edit without its new text (or ``text`` given to another type).
    """
    if not isinstance(edit_type, str) or edit_type not in EDIT_TYPES:
        hint = " (clone is StepAudioEditX.clone, not an edit)" if edit_type == "clone" else ""
        raise InvalidArgumentError.about(
            "edit_type", f"must be {_one_of(EDIT_TYPES)}, got {describe_value(edit_type)}{hint}", edit_type
        )
    choices = EDIT_INFO_CHOICES[edit_type]
    if edit_info == "":
        edit_info = None
    if choices:
        if edit_info is None:
            raise InvalidArgumentError.about(
                "edit_info", f"is required for edit_type {edit_type!r}: pass {_one_of(choices)}", edit_info
            )
        if not isinstance(edit_info, str) or edit_info not in choices:
            raise InvalidArgumentError.about(
                "edit_info",
                f"must be {_one_of(choices)} for edit_type {edit_type!r}, got {describe_value(edit_info)}",
                edit_info,
            )
    elif edit_info is not None:
        raise InvalidArgumentError.about(
            "edit_info", f"must be empty for edit_type {edit_type!r} (it takes none), got {describe_value(edit_info)}"
        )
    if audio_text is None:
        audio_text = ""
    audio_text = check_text(audio_text, "audio_text", allow_empty=True)
    if edit_type not in TEXTLESS_EDIT_TYPES and not audio_text.strip():
        raise InvalidArgumentError.about(
            "audio_text",
            f"is required for edit_type {edit_type!r}: pass the transcript of the audio (the instruction quotes it)",
            audio_text,
        )
    if edit_type == "paralinguistic":
        if text is None or (isinstance(text, str) and not text.strip()):
            raise InvalidArgumentError.about(
                "text",
                "is required for edit_type 'paralinguistic': pass the transcript with [Tag]s inserted where the "
                f"sounds go, e.g. 'I think [Uhm] it works' (tags: {', '.join(PARALINGUISTIC_TAGS)})",
                text,
            )
        text = check_text(text, "text")
        unknown = [tag for tag in paralinguistic_tags(text) if tag not in PARALINGUISTIC_TAGS]
        if unknown:
            logger.warning(
                "paralinguistic text has tags the model was not shown to know: %s (known: %s)",
                ", ".join(f"[{tag}]" for tag in unknown),
                ", ".join(PARALINGUISTIC_TAGS),
            )
    elif text is not None:
        raise InvalidArgumentError.about(
            "text", f"only applies to edit_type 'paralinguistic' (the new text), not {edit_type!r}; drop it", text
        )
    return EditRequest(edit_type, edit_info, audio_text, text)


def check_language(language: object) -> str | None:
    """``None`` or one of :data:`LANGUAGES` (exact spelling, as the model was trained with it)."""
    if language is None:
        return None
    if not isinstance(language, str) or language not in LANGUAGES:
        raise InvalidArgumentError.about(
            "language", f"must be None or {_one_of(LANGUAGES)}, got {describe_value(language)}", language
        )
    return language


def check_n_edit_iter(value: object, name: str = "iterations") -> int:
    """Number of edit iterations: each one edits the previous iteration's output (1 to 10)."""
    return check_int(value, name, minimum=1, maximum=10, hint="each iteration edits the previous output; 1-3 is usual")
