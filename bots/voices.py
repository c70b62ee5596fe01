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
from flows.chat import text as said


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
    say = said.replies(who.platform)
    api.ensure_user(who.owner, who.name, s=s)
    available = api.list_voices(who.owner, s=s)
    if not available:
        return Reply(say.no_voice())
    current = api.default_voice(who.owner, s=s)
    mine = [v for v in available if v.owner == who.owner]
    public = [v for v in available if v.owner != who.owner]

    def is_default(v: api.VoiceInfo) -> bool:
        return current is not None and current.id == v.id

    lines = []
    if mine:
        lines.append(said.VOICES_MINE)
        for v in mine:
            how = "trained" if v.source == "trained" else "imported"
            lines.append(said.voice_item(v.name, how, is_default(v)))
    else:
        lines.append(say.no_own_voice())
    if public:
        lines.append(said.VOICES_PUBLIC)
        lines += [said.voice_item(v.name, None, is_default(v)) for v in public]
    if current is None:
        lines.append(say.no_default_voice())
    buttons = tuple(
        (button(who, said.make_default_label(v.name), "dv", pack(v.id)),)
        for v in available[:8]
        if not is_default(v)
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
    return Reply(said.default_voice_set(voice.name))


@personal
def default_picked(s, who: Who, voice_id: str) -> Reply:
    """The "Make … the default" button."""
    voice = api.set_default_voice_id(who.owner, voice_id, s=s)
    return Reply(said.default_voice_set(voice.name))
