"""What a client sends, checked where it enters: text arguments, file names, the pitch.

Text is read as a person sees it (`visible`), arguments have a length limit, file names are
made safe to show and to use as the last part of a path, and `/cover <song> +2` is split into
the song and the key change. Button data is checked in `bots.payload`.
"""

from __future__ import annotations

import re
import unicodedata

from flows.api import UserError
from flows.chat import text as said

MAX_ARG = 200  # characters of a command's text arguments
MAX_FILENAME = 80
MAX_PITCH = 12
MODEL_SUFFIXES = (".pth", ".index", ".zip")
AUDIO_SUFFIXES = (".mp3", ".m4a", ".ogg", ".oga", ".opus", ".wav", ".flac", ".aac")
TOO_LONG = said.too_long(MAX_ARG)

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_PITCH = re.compile(r"^(?:([+-]\d{1,3})|(?:pitch|key)[=:]?([+-]?\d{1,3}))$", re.IGNORECASE)


def visible(text: str) -> str:
    """Text as a person can read it: NFKC, without control, format (zero-width, direction
    overrides), private-use or unassigned characters, its whitespace runs made one space."""
    text = unicodedata.normalize("NFKC", text or "")
    kept = (" " if ch.isspace() else ch for ch in text)
    text = "".join(ch for ch in kept if ch == " " or unicodedata.category(ch)[0] != "C")
    return " ".join(text.split())


def clean_arg(text: str) -> str:
    """A command's text argument as the handlers read it; UserError when it is too long."""
    text = visible(text)
    if len(text) > MAX_ARG:
        raise UserError(TOO_LONG)
    return text


def clean_filename(name: str, default: str = "file") -> str:
    """A platform's file name made safe to show and to use as the last part of a path: no
    folders, no `.`/`..`, no hidden files, no control characters, at most 80 characters."""
    text = visible(name)
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r'[<>:"|?*]', "_", text).strip(" .")
    if not text.strip("_ ."):
        return default
    stem, dot, suffix = text.rpartition(".")
    if not dot or len(suffix) > 10 or not stem:
        stem, suffix = text, ""
    suffix = f".{suffix}" if suffix else ""
    return stem[: MAX_FILENAME - len(suffix)].rstrip(" .") + suffix


def parse_song_args(text: str) -> tuple[str, int]:
    """`"<song> +2"` → ("<song>", 2). A signed number at the end is the pitch, in semitones.

    Raises UserError for a pitch out of range; the song may be empty (the caller decides).
    """
    words = (text or "").split()
    pitch = 0
    if words:
        match = _PITCH.match(words[-1])
        if match:
            pitch = int(match.group(1) or match.group(2))
            words = words[:-1]
            if abs(pitch) > MAX_PITCH:
                raise UserError(said.key_change_range(MAX_PITCH, example=True))
    return " ".join(words), pitch
