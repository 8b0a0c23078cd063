"""The client's control messages on the realtime WebSocket: parsing, checking, per-session settings, error payloads.

Everything a client sends as text is checked here before the server acts on it: the JSON nesting depth
(before parsing, so a deeply nested message cannot exhaust the parser), the syntax, the message type,
its fields and their types; ``start``'s ``"config"`` is turned into the session's
:class:`~stepaudio.realtime.RealtimeConfig` by :func:`session_config`.  Each refusal is a
:class:`~stepaudio.errors.RealtimeProtocolError` with a machine-readable code and a one-line message
saying what was wrong, with what value, and how to fix it (see ``protocol.md``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from ..errors import RealtimeConfigError, RealtimeProtocolError
from ..validation import describe_value
from .config import SAMPLE_RATE, RealtimeConfig
from .events import ErrorEvent

__all__ = [
    "CAPPED_CONFIG_KEYS",
    "MAX_JSON_DEPTH",
    "MESSAGE_FIELDS",
    "SESSION_CONFIG_KEYS",
    "error_json",
    "error_payload",
    "json_nesting_depth",
    "parse_control_message",
    "session_config",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_payload(code: str, message: str, **fields: Any) -> dict[str, Any]:
    """An ``error`` event's JSON object: ``code``, the message on one line, and any extra fields."""
    return {**ErrorEvent(code=code, message=_one_line(message)).to_json(), **fields}


def error_json(code: str, message: str, **fields: Any) -> str:
    """:func:`error_payload` as JSON text."""
    return json.dumps(error_payload(code, message, **fields), ensure_ascii=False)


#: Deepest nesting of objects/arrays accepted in a control message (the protocol needs 2: start's config).
MAX_JSON_DEPTH = 8

#: The fields each control message type may carry (anything else is refused, so typos are not ignored).
MESSAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("type", "sample_rate", "format", "config"),
    "playback": ("type", "turn", "played_s"),
    "ping": ("type",),
    "stop": ("type",),
}

#: RealtimeConfig settings a client may choose for its own session (``start``'s ``"config"``).
SESSION_CONFIG_KEYS: tuple[str, ...] = (
    "speaker",
    "system_prompt",
    "max_new_tokens",
    "temperature",
    "top_p",
    "context_token_budget",
    "pause_ms",
    "end_of_turn_ms",
)

#: Budgets a client may lower but not raise above the server's setting (they bound one session's compute).
CAPPED_CONFIG_KEYS: tuple[str, ...] = ("max_new_tokens", "context_token_budget")

_EXAMPLE = '{"type": "ping"}'


def json_nesting_depth(text: str) -> int:
    """Deepest ``{``/``[`` nesting of a JSON text, counted without parsing it (brackets in strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for character in text:
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif character in "]}":
            depth -= 1
    return deepest


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_control_message(text: str) -> dict[str, Any]:
    """A client's JSON control message, checked; raises :class:`RealtimeProtocolError` naming the problem.

    Checks the nesting depth (before parsing), the JSON syntax, that it is an object with a known string
    ``type``, that it carries only that type's fields (:data:`MESSAGE_FIELDS`) and their types.  The
    values of ``start``'s ``"config"`` are checked by :func:`session_config`.
    """
    depth = json_nesting_depth(text)
    if depth > MAX_JSON_DEPTH:  # json.loads would recurse once per level: refuse before parsing
        raise RealtimeProtocolError(
            "bad_json",
            f"a control message may nest objects and arrays at most {MAX_JSON_DEPTH} deep; this one nests {depth}: "
            "send a flat JSON object such as " + _EXAMPLE,
        )
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise RealtimeProtocolError(
            "bad_json",
            f"a text message must be a JSON object such as {_EXAMPLE}; {describe_value(text, 40)} does not parse "
            f"as JSON: {error}",
        ) from None
    except ValueError:  # Python reads integers of at most 4300 digits (sys.get_int_max_str_digits)
        raise RealtimeProtocolError(
            "bad_json",
            f"a text message must be a JSON object such as {_EXAMPLE}; a number in it has too many digits to read "
            "(over 4300): send numbers of ordinary size",
        ) from None
    if not isinstance(message, dict):
        raise RealtimeProtocolError(
            "bad_message",
            f'a control message must be a JSON object with a string "type" such as {_EXAMPLE}; got '
            f"{_json_kind(message)} {describe_value(message, 40)}",
        )
    kind = message.get("type")
    if not isinstance(kind, str):
        got = "no type" if "type" not in message else f"type {describe_value(kind, 40)} ({_json_kind(kind)})"
        raise RealtimeProtocolError(
            "bad_message",
            f'a control message needs a string "type" (start, playback, ping or stop), got {got}; send e.g. {_EXAMPLE}',
        )
    if kind not in MESSAGE_FIELDS:
        raise RealtimeProtocolError(
            "unknown_type",
            f"unknown message type {describe_value(kind, 40)}; use 'start', 'playback', 'stop' or 'ping'",
        )
    allowed = MESSAGE_FIELDS[kind]
    unknown = [key for key in message if key not in allowed]
    if unknown:
        raise RealtimeProtocolError(
            "bad_message",
            f"unknown field {describe_value(unknown[0], 40)} in a {kind!r} message; it takes only "
            f"{', '.join(allowed)} (drop the field or check its spelling)",
        )
    if kind == "start":
        rate = message.get("sample_rate", SAMPLE_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate != SAMPLE_RATE:
            raise RealtimeProtocolError(
                "bad_sample_rate",
                f"the server takes PCM16 mono at {SAMPLE_RATE} Hz; the start message declared "
                f"sample_rate={describe_value(rate, 40)}. Resample on the client (an AudioContext at {SAMPLE_RATE} "
                f"Hz does it) and declare {SAMPLE_RATE}",
            )
        if message.get("format", "pcm16") != "pcm16":
            raise RealtimeProtocolError(
                "bad_format",
                f"only format 'pcm16' (16-bit little-endian samples) is supported; the start message declared "
                f"format={describe_value(message.get('format'), 40)}: send PCM16 and declare 'pcm16'",
            )
        config = message.get("config")
        if config is not None and not isinstance(config, dict):
            raise RealtimeProtocolError(
                "bad_config",
                f'the start message\'s "config" must be a JSON object of session settings such as '
                f'{{"speaker": "Tingting"}}; got {_json_kind(config)} {describe_value(config, 40)}',
            )
    elif kind == "playback":
        turn, played = message.get("turn"), message.get("played_s")
        valid_turn = isinstance(turn, int) and not isinstance(turn, bool) and 0 <= turn < 2**31
        if not valid_turn or not _is_number(played) or not 0 <= played < 1e6:
            raise RealtimeProtocolError(
                "bad_message",
                'a playback message needs an integer "turn" (the reply\'s turn from its events) and a number '
                f'"played_s" from 0 (seconds of that reply played); got turn={describe_value(turn, 30)}, '
                f"played_s={describe_value(played, 30)}",
            )
    return message


def session_config(default: RealtimeConfig, overrides: dict[str, Any] | None) -> RealtimeConfig:
    """``default`` with a client's per-session settings (``start``'s ``"config"``), checked.

    Only :data:`SESSION_CONFIG_KEYS` may be set; :data:`CAPPED_CONFIG_KEYS` only up to ``default``'s value.

    Raises:
        RealtimeProtocolError: code ``bad_config``, naming the setting, the value and what is accepted.
    """
    if not overrides:
        return default
    for key in overrides:
        if key not in SESSION_CONFIG_KEYS:
            fields = {field.name for field in dataclasses.fields(RealtimeConfig)}
            what = "is set by the server only" if key in fields else "is not a session setting"
            raise RealtimeProtocolError(
                "bad_config",
                f"start config: {describe_value(key, 40)} {what}; a session may set "
                f'{", ".join(SESSION_CONFIG_KEYS)} (drop it from "config")',
            )
    try:
        config = dataclasses.replace(default, **overrides)
    except RealtimeConfigError as error:
        raise RealtimeProtocolError("bad_config", f"start config: {error}") from None
    for key in CAPPED_CONFIG_KEYS:
        limit = getattr(default, key)
        if key in overrides and overrides[key] > limit:
            raise RealtimeProtocolError(
                "bad_config",
                f"start config: {key} {overrides[key]} is above this server's limit of {limit}; "
                f"ask for {limit} or less",
            )
    return config
