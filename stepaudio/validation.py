"""Argument checks shared by the public constructors, the public methods and the command line.

Every check raises :class:`~stepaudio.errors.InvalidArgumentError` (or
:class:`~stepaudio.errors.InputFileError` for paths) with a one-line message in one style::

    speed_ratio must be a number from 0.25 to 4.0, got 0.0; 1.0 keeps the tempo

that is: the name of the parameter (``--speed`` on the command line), what was expected, what was
given, and, where it helps, how to fix it.  The checks run before any model is loaded or any work
is done, so a bad value costs nothing.  The command line wraps the same checks as argparse ``type``
functions (:mod:`stepaudio.cli_options`), so the API and the CLI refuse the same values with the same words.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import InputFileError, InvalidArgumentError

__all__ = [
    "MAX_NAME_LENGTH",
    "check_bool",
    "check_choice",
    "check_float",
    "check_input_dir",
    "check_input_file",
    "check_int",
    "check_output_dir",
    "check_safe_name",
    "check_text",
    "describe_value",
    "invalid_value",
]

#: Longest user-supplied name (speaker, voice) accepted where it becomes part of a file name.
MAX_NAME_LENGTH = 64

# Letters and digits of any script, then letters, digits, '_', '-', '.'; no separators, no leading dot.
_SAFE_NAME = re.compile(r"[^\W_][\w.\-]*")


def describe_value(value: object, limit: int = 60) -> str:
    """``repr`` of a refused value, shortened to ``limit`` characters so messages stay one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_value(name: str, requirement: str, value: object, hint: str | None = None) -> InvalidArgumentError:
    """The error ``"{name} must be {requirement}, got {value}; {hint}"`` in the one style of every check."""
    detail = f"must be {requirement}, got {describe_value(value)}" + (f"; {hint}" if hint else "")
    return InvalidArgumentError.about(name, detail, value)


def _range_words(minimum: float | None, maximum: float | None, exclusive_minimum: bool) -> str:
    if minimum is not None and maximum is not None:
        return f"above {minimum} and at most {maximum}" if exclusive_minimum else f"from {minimum} to {maximum}"
    if minimum is not None:
        if exclusive_minimum:
            return "positive" if minimum == 0 else f"above {minimum}"
        return "0 or more" if minimum == 0 else f"{minimum} or more"
    if maximum is not None:
        return f"at most {maximum}"
    return ""


def check_float(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    hint: str | None = None,
) -> float:
    """A finite real number within ``[minimum, maximum]`` (``(minimum, ...`` with ``exclusive_minimum``).

    Booleans, strings, NaN and infinities are refused.  Returns the value as ``float``.
    """
    words = _range_words(minimum, maximum, exclusive_minimum)
    requirement = "a positive number" if words == "positive" else f"a number {words}".rstrip()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
        raise invalid_value(name, requirement, value, hint)
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise invalid_value(name, requirement.replace("number", "finite number", 1), value, hint)
    too_low = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    too_high = maximum is not None and number > maximum
    if too_low or too_high:
        raise invalid_value(name, requirement, value, hint)
    return number


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    hint: str | None = None,
) -> int:
    """A whole number within ``[minimum, maximum]``; booleans, floats and strings are refused."""
    words = _range_words(minimum, maximum, False)
    requirement = f"a whole number {words}".rstrip()
    if minimum == 1 and maximum is None:
        requirement = "a positive whole number"
    if isinstance(value, bool) or not (isinstance(value, int) or _is_numpy_integer(value)):
        raise invalid_value(name, requirement, value, hint)
    number = int(value)  # type: ignore[arg-type]
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise invalid_value(name, requirement, value, hint)
    return number


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (numpy booleans included); ``0``, ``1``, ``"yes"`` and ``None`` are refused."""
    if not isinstance(value, bool) and not _is_numpy_bool(value):
        raise InvalidArgumentError.about(name, f"must be True or False, got {describe_value(value)}", value)
    return bool(value)


def check_choice(value: object, name: str, choices: Iterable[str], hint: str | None = None) -> str:
    """One of ``choices`` (exact match)."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise invalid_value(name, "one of " + ", ".join(options), value, hint)
    return value


def check_text(value: object, name: str, *, allow_empty: bool = False) -> str:
    """A ``str`` that is valid Unicode (no unpaired surrogates, no NUL) and, unless allowed, not blank.

    Unpaired surrogates are what undecodable bytes become (command-line arguments decoded with
    ``surrogateescape``, ``bytes.decode(errors="surrogateescape")``); no model can tokenize them.
    """
    if not isinstance(value, str):
        raise invalid_value(name, "a string", value)
    for position, character in enumerate(value):
        if unicodedata.category(character) == "Cs":
            detail = (
                f"is not valid Unicode: an unpaired surrogate U+{ord(character):04X} at character {position} "
                "(undecodable bytes); pass UTF-8 text"
            )
            raise InvalidArgumentError.about(name, detail, value)
        if character == "\0":
            raise invalid_value(name, "text without NUL characters", value, f"a NUL is at character {position}")
    if not allow_empty and not value.strip():
        raise invalid_value(name, "non-empty text", value)
    return value


def check_safe_name(value: object, name: str, hint: str | None = None) -> str:
    """A name that may become part of a file name: letters and digits of any script, ``_``, ``-``, ``.``.

    It must start with a letter or digit and be at most :data:`MAX_NAME_LENGTH` characters, so it can
    never hold a path separator, ``..``, a drive letter, a control character or a hidden-file dot.
    """
    requirement = (
        f"a name of at most {MAX_NAME_LENGTH} letters, digits, '_', '-' or '.' that starts with a letter or digit "
        "(it becomes part of a file name)"
    )
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH or not _SAFE_NAME.fullmatch(value):
        raise invalid_value(name, requirement, value, hint)
    return value


def _path(value: object, name: str) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str) and value.strip():
        path = Path(value)
    else:
        raise invalid_value(name, "a path", value)
    check_text(str(path), name)
    return path.expanduser()


def check_input_file(value: object, name: str, what: str = "a file", hint: str | None = None) -> Path:
    """An existing, readable regular file; a folder or a missing path is refused with what was found."""
    path = _path(value, name)
    suffix = f"; {hint}" if hint else ""
    if path.is_dir():
        raise InputFileError(f"{name} {path} is a folder, not {what}{suffix}", path=path)
    if not path.exists():
        raise InputFileError(f"{name} {path} does not exist; expected {what}{suffix}", path=path)
    if not path.is_file():
        raise InputFileError(f"{name} {path} is not a regular file; expected {what}{suffix}", path=path)
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{name} {path} is not readable (permissions); expected {what}{suffix}", path=path)
    return path


def check_input_dir(value: object, name: str, what: str = "a folder", hint: str | None = None) -> Path:
    """An existing folder; a file or a missing path is refused with what was found."""
    path = _path(value, name)
    suffix = f"; {hint}" if hint else ""
    if path.is_file():
        raise InputFileError(f"{name} {path} is a file, not {what}{suffix}", path=path)
    if not path.is_dir():
        raise InputFileError(f"{name} {path} does not exist; expected {what}{suffix}", path=path)
    return path


def check_output_dir(value: object, name: str) -> Path:
    """A folder to write into: an existing writable folder, or a path whose nearest existing parent is one.

    Nothing is created here (a failed run must leave no trace); the caller creates the folder when it
    writes its first file.
    """
    path = _path(value, name)
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{name} {path} is a file, not a folder; pass a folder to write into", path=path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputFileError(
            f"{name} {path} cannot be created: {existing} is a file, not a folder; pass another folder", path=path
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputFileError(
            f"{name} {path} cannot be written: no write permission on {existing}; pass a folder you can write to",
            path=path,
        )
    return path


def _is_numpy_number(value: object) -> bool:
    import numpy as np

    return isinstance(value, (np.integer, np.floating)) and not isinstance(value, np.bool_)


def _is_numpy_bool(value: object) -> bool:
    import numpy as np

    return isinstance(value, np.bool_)


def _is_numpy_integer(value: object) -> bool:
    import numpy as np

    return isinstance(value, np.integer)
