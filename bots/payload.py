"""Button data: what a button carries and whose it is.

Button data is at most 64 bytes (Telegram's limit) and carries everything it needs (ids
packed in base64), so buttons keep working across bot restarts. Every button carries a tag
of the user it was shown to (`verb|tag|...`): a press by anyone else does nothing. A pressed
button's data is checked here like a typed command: a verb this bot knows, ids of exactly
16 bytes, a pitch in range. Pure functions, no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from bots.inputs import HEX_ID, MAX_PITCH
from bots.messages import Button, Who
from flows.api import UserError
from flows.chat import text as said

# cs: song picked for a cover, cv: voice picked for a cover, ss/ks: song picked for stems or
# karaoke, s6: song picked for six stems, dv: default voice, tc/tx: training consent
# given/refused, fy/fn: forget yes/no, cp: another chart, cc: a chart song by rank, sp: a
# page of /songs, dc: the demo voice offered for a cover.
VERBS = ("cs", "cv", "ss", "s6", "ks", "dv", "tc", "tx", "fy", "fn", "cp", "cc", "sp", "dc")
MAX_DATA = 100  # characters of a press's data read at all
_PITCH = re.compile(r"^[+-]\d{1,2}$")


def pack(hex_id: str) -> str:
    """A 32-hex id as 22 base64url characters (button data is at most 64 bytes)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_id)).rstrip(b"=").decode()


def unpack(text: str) -> str:
    """The hex id `pack` made; "" for text that is not base64url."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return ""
    return raw.hex()


def owner_tag(who: Who) -> str:
    """A compact mark of the user a button is shown to: their numeric id in base64url (at most
    11 characters for a 64-bit id), or "~" and a hash of any other id."""
    if who.user_id.isascii() and who.user_id.isdigit() and len(who.user_id) <= 20:
        n = int(who.user_id)
        raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    digest = hashlib.sha256(who.owner.encode()).digest()[:6]
    return "~" + base64.urlsafe_b64encode(digest).decode()


def tagged_owner(platform: str, tag: str) -> str | None:
    """The owner a numeric tag names; None for a hashed tag or one that is not a tag."""
    if tag.startswith("~"):
        return None
    try:
        raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
    except (binascii.Error, ValueError):
        return None
    return f"{platform}:{int.from_bytes(raw, 'big')}" if raw else None


def button(who: Who, label: str, verb: str, *parts: str) -> Button:
    """A button for `who` alone: `verb|tag|parts…`."""
    return Button(label, "|".join((verb, owner_tag(who), *parts)))


def rows(buttons: list[Button], per_row: int) -> tuple[tuple[Button, ...], ...]:
    """`buttons` laid out `per_row` to a row."""
    return tuple(tuple(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row))


@dataclass(frozen=True)
class Press:
    """A press's data, read: its verb, the tag of the user it was shown to, its arguments."""

    verb: str
    tag: str
    args: tuple[str, ...]


def read(data: str | None) -> Press | None:
    """The press `data` describes, or None when it is no button of this bot's."""
    parts = (data or "")[:MAX_DATA].split("|")
    if len(parts) < 2 or parts[0] not in VERBS:
        return None
    return Press(parts[0], parts[1], tuple(parts[2:]))


def pitch_arg(text: str) -> int:
    """A button's pitch, checked as a typed one is; UserError (range) or ValueError (junk)."""
    if not _PITCH.match(text):
        raise ValueError(text)
    pitch = int(text)
    if abs(pitch) > MAX_PITCH:
        raise UserError(said.key_change_range(MAX_PITCH))
    return pitch


def id_arg(text: str) -> str:
    """A button's packed id: exactly 22 base64url characters of 16 bytes, else ValueError."""
    hex_id = unpack(text) if len(text) == 22 else ""
    if not HEX_ID.match(hex_id):
        raise ValueError(text)
    return hex_id
