"""Exceptions raised by stepaudio.

Every exception names the layer that failed (by its type) and, in its message, the input that was
wrong, what was expected and what to do about it.  All of them derive from :class:`StepAudioError`
so callers can catch the whole family at once; each also derives from the closest built-in
exception (``FileNotFoundError``, ``KeyError``, ``ValueError``) so existing ``except`` clauses
keep working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "StepAudioError",
    "UsageError",
    "InvalidArgumentError",
    "InputFileError",
    "CheckpointError",
    "CheckpointFileNotFoundError",
    "CheckpointKeyError",
    "CheckpointShapeError",
    "CheckpointConfigError",
    "AudioInputError",
    "PromptError",
    "AudioTokenError",
    "RemoteBackendError",
    "StreamClosedError",
    "RealtimeConfigError",
    "RealtimeProtocolError",
    "RealtimeSessionClosedError",
]

OFFICIAL_DOWNLOAD_HINT = (
    "Download the official folders (Step-Audio-Chat, Step-Audio-TTS-3B, Step-Audio-Tokenizer) from "
    "https://huggingface.co/stepfun-ai or ModelScope and pass the folder path unchanged; "
    "`python -m stepaudio.testing OUT_DIR` writes tiny folders in the same layout for trying things out."
)


class StepAudioError(Exception):
    """Base class of every error raised by stepaudio."""


class UsageError(StepAudioError):
    """The call itself is wrong: a value out of range, a missing or wrong-kind input path, conflicting options.

    These are found before any model is loaded or any work is done (the public constructors and
    methods check their arguments first; the command line checks its options while parsing).  The
    ``stepaudio`` command exits with status 2 for them and 1 for every other error.
    """


class InvalidArgumentError(UsageError, ValueError):
    """An argument (or command-line option) has a value that is not accepted.

    Attributes:
        name: the parameter or option (``"speed_ratio"``, ``"--speed"``).
        value: the value that was refused.
        requirement: the message without the leading name (``"must be ..., got ...; ..."``), for
            callers such as argparse that print the option name themselves.
    """

    def __init__(self, message: str, *, name: str | None = None, value: object = None, requirement: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.value = value
        self.requirement = requirement or message

    @classmethod
    def about(cls, name: str, requirement: str, value: object = None) -> InvalidArgumentError:
        """The error ``"{name} {requirement}"`` (e.g. ``"top_k must be ..., got -1"``), keeping both parts."""
        return cls(f"{name} {requirement}", name=name, value=value, requirement=requirement)


class InputFileError(UsageError, FileNotFoundError):
    """A file or folder named by the caller is missing, of the wrong kind (a folder for a file) or unreadable."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:  # OSError would otherwise format its own (errno, strerror) pair
        return str(self.args[0]) if self.args else ""


class CheckpointError(StepAudioError):
    """A checkpoint folder is incomplete or does not match the model it is loaded into.

    Attributes:
        folder: the checkpoint folder that was being loaded.
        file: the file inside it that is missing or wrong (if known).
        key: the state-dict key that is missing, unexpected or mis-shaped (if any).
    """

    def __init__(
        self,
        message: str,
        *,
        folder: str | Path | None = None,
        file: str | Path | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.folder = None if folder is None else Path(folder)
        self.file = None if file is None else Path(file)
        self.key = key


class CheckpointFileNotFoundError(CheckpointError, FileNotFoundError):
    """A file the checkpoint layout requires is not there."""


class CheckpointKeyError(CheckpointError, KeyError):
    """A tensor is missing from, or unexpected in, a checkpoint."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class CheckpointShapeError(CheckpointError, ValueError):
    """A tensor in a checkpoint has a different shape than the model expects."""


class CheckpointConfigError(CheckpointError, ValueError):
    """A configuration file in a checkpoint folder is unreadable or inconsistent."""


class AudioInputError(StepAudioError, ValueError):
    """Audio given to stepaudio cannot be used (empty, non-finite, unreadable, wrong shape, ...)."""


class PromptError(StepAudioError, ValueError):
    """Messages or text cannot be turned into a model prompt."""


class AudioTokenError(PromptError):
    """An ``<audio_N>`` string or audio id list is malformed or out of range."""


class RemoteBackendError(StepAudioError, RuntimeError):
    """A remote generation server could not be reached, refused a request or failed (one line, naming the URL).

    Attributes:
        url: the URL that was requested.
        status: the HTTP status of the answer (``None`` when there was no answer).
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class StreamClosedError(StepAudioError, RuntimeError):
    """``feed`` or ``close`` was called on a stream that was already closed."""


class RealtimeConfigError(InvalidArgumentError):
    """A :class:`stepaudio.realtime.RealtimeConfig` value is out of range or inconsistent with another."""


class RealtimeProtocolError(StepAudioError, ValueError):
    """A message from a realtime WebSocket client breaks the protocol (see ``stepaudio/realtime/protocol.md``).

    Attributes:
        code: short machine-readable reason sent back in the ``error`` event (e.g. ``"bad_json"``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RealtimeSessionClosedError(StepAudioError, RuntimeError):
    """Audio was pushed into a :class:`stepaudio.realtime.RealtimeSession` after ``close()``."""
