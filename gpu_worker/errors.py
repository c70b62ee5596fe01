"""Errors the engine raises on purpose: typed, carrying data, never a sentence for users.

Each class is a kind of failure; `reason` names the case within it and `data` holds its facts
(file names, limits, measured values, what is missing). The engine does not word them for
people: `flows.errors` holds the one sentence per case. `str(error)` is for logs.

An error crosses a process boundary (the training child, a worker in a cluster) as a record of
plain data: `to_record()` there, `from_record()` here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """`value` as JSON can carry it (paths as text, tuples as lists, inf as a string)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class EngineError(Exception):
    """A failure the engine raises on purpose: `reason` (the case) and `data` (its facts)."""

    def __init__(self, reason: str = "failed", **data: Any):
        super().__init__(reason)
        self.reason = str(reason)
        self.data = data

    def __str__(self) -> str:
        facts = ", ".join(f"{k}={v!r}" for k, v in self.data.items())
        return f"{type(self).__name__}.{self.reason}({facts})"

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self).__name__, self.reason, self.data))

    def to_record(self) -> dict[str, Any]:
        """The error as plain data (for JSON)."""
        return {"type": type(self).__name__, "reason": self.reason, "data": _plain(self.data)}


class BadAudio(EngineError):
    """The input is not usable audio (corrupt, empty, too long, too large, not audio)."""


class TooLong(BadAudio):
    """The audio decodes to more than the length limit (whatever its headers declared)."""


class ModelMissing(EngineError):
    """Weight files a step needs are not in the models folder (`missing`, `folder`)."""


class BadVoice(EngineError):
    """A voice model file (or its index, or the zip it came in) is not a usable RVC voice."""


class BadOptions(EngineError):
    """A caller passed an option out of its range (`name`, and the range it must be in)."""


class Cancelled(EngineError):
    """The caller asked the step to stop; its finished work is kept so a rerun resumes."""


class Crashed(EngineError):
    """The work died for a reason that is not the user's (killed, out of memory, a bug).

    Whatever it had finished is kept, so running it again resumes; callers may retry it."""


KINDS: dict[str, type[EngineError]] = {
    cls.__name__: cls
    for cls in (EngineError, BadAudio, TooLong, ModelMissing, BadVoice, BadOptions)
    + (Cancelled, Crashed)
}


def _rebuild(kind: str, reason: str, data: dict[str, Any]) -> EngineError:
    return KINDS.get(kind, EngineError)(reason, **data)


def from_record(record: dict[str, Any]) -> EngineError:
    """The error a `to_record()` record describes (an unknown type reads as `EngineError`)."""
    data = record.get("data")
    return _rebuild(
        str(record.get("type")),
        str(record.get("reason") or "failed"),
        dict(data) if isinstance(data, dict) else {},
    )
