"""Voices: the list of a user's voices, the default one, and which voice sings a cover.

`/voices` lists them with a button per voice to make it the default; `/voice <name>` (or the
button) sets the default; `usable_voice` is the voice a cover uses when none is named (the
default, else the only one), or the list to choose from.
"""

from __future__ import annotations

from bots.checks import personal
from bots.inputs import HEX_ID, MAX_ARG, clean_arg, visible
from bots.messages import Reply, Who
from bots.payload import button, pack
from flows import api
from flows.api import UserError

NO_VOICE = (
    "You have no voice yet: clone yours with /train <name> (voice notes work), "
    "or /import an RVC model."
)


def usable_voice(s, who: Who) -> api.VoiceInfo | list[api.VoiceInfo] | None:
    """The voice a cover of `who` uses when they name none; the voices to pick from when
    that is not clear; None when they have none."""
    chosen = api.default_voice(who.owner, s=s)
    if chosen is not None:
        return chosen
    available = api.list_voices(who.owner, s=s)
    if len(available) == 1:
        return available[0]
    return available or None


def voice_ref(s, who: Who, ref: str) -> api.VoiceInfo | None:
    """The voice `ref` names for `who`: a voice id (from the autocomplete) or a name."""
    ref = ref.strip()
    if HEX_ID.match(ref):
        voice = api.voice_by_id(who.owner, ref, s=s)
        if voice is not None:
            return voice
    return api.get_voice(who.owner, ref, s=s)


def voice_choices(s, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """(name, voice id) pairs of the voices the user may use, filtered by `query`."""
    wanted = api.voice_name_key(visible(query)[:MAX_ARG])
    found = [v for v in api.list_voices(who.owner, s=s) if wanted in api.voice_name_key(v.name)]
    return [(v.name[:100], v.id) for v in found[:limit]]


@personal
def voices(s, who: Who) -> Reply:
    """`/voices`: the user's voices, the public ones, and buttons to pick the default."""
    api.ensure_user(who.owner, who.name, s=s)
    available = api.list_voices(who.owner, s=s)
    if not available:
        return Reply(NO_VOICE)
    current = api.default_voice(who.owner, s=s)
    mine = [v for v in available if v.owner == who.owner]
    public = [v for v in available if v.owner != who.owner]
    lines = []
    if mine:
        lines.append("Your voices:")
        for v in mine:
            how = "trained" if v.source == "trained" else "imported"
            star = " ⭐ default" if current and current.id == v.id else ""
            lines.append(f"• {v.name} ({how}){star}")
    else:
        lines.append("You have no voice of your own yet: /train <name> clones yours.")
    if public:
        lines.append("Public voices:")
        for v in public:
            star = " ⭐ default" if current and current.id == v.id else ""
            lines.append(f"• {v.name}{star}")
    if current is None:
        lines.append("No default voice yet: /voice <name> picks one.")
    buttons = tuple(
        (button(who, f"Make {v.name[:40]} the default", "dv", pack(v.id)),)
        for v in available[:8]
        if current is None or v.id != current.id
    )
    return Reply("\n".join(lines), buttons)


@personal
def set_voice(s, who: Who, args: str) -> Reply:
    """`/voice <name>`: make it the default; without a name, the list."""
    try:
        name = clean_arg(args)
    except UserError as exc:
        return Reply(exc.message)
    if not name:
        return voices(s, who)
    try:
        voice = api.set_default_voice(who.owner, name, s=s)
    except UserError as exc:
        return Reply(exc.message)
    return Reply(f"⭐ {voice.name} is your default voice now; /cover <song> to use it.")


@personal
def default_picked(s, who: Who, voice_id: str) -> Reply:
    """The "Make … the default" button."""
    voice = api.set_default_voice_id(who.owner, voice_id, s=s)
    return Reply(f"⭐ {voice.name} is your default voice now; /cover <song> to use it.")
