"""Finding songs and the first cover, for someone who has read nothing: `/songs` (the catalog,
paged, a cover button per song), song suggestions before anything is typed (Discord's
autocomplete), usage examples that name a song the catalog has, and the demo voice offered
to a user who has no voice yet.

Platform-neutral like `bots.core`: it returns `Reply` values and button data bound to the user
they are shown to (`bots.core.button`).
"""

from __future__ import annotations

import math
import re

from bots.core import MAX_PITCH, Button, Reply, Who, button, pack, quoted, visible
from flows import api
from flows.chat import charts_text as text

PAGE = 8  # songs per /songs page (Discord: 4 rows of 2, then the page buttons)
PER_ROW = 2
MAX_LABEL = 80  # characters of a song in the list (Discord shows 2000 in a message)
_ENDS_IN_NUMBER = re.compile(r"[+-]?\d+$")  # "/cover Song 2" would read "2" as a key change


def _rows(buttons: list[Button], per_row: int) -> tuple[tuple[Button, ...], ...]:
    return tuple(tuple(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row))


def songs_reply(core, who: Who, page: int = 1) -> Reply:
    """One page of the catalog (and the user's own songs), a cover button per song."""
    songs = api.list_songs(who.owner, s=core.s)
    if not songs:
        return Reply(text.SONGS_EMPTY)
    pages = math.ceil(len(songs) / PAGE)
    page = min(max(1, page), pages)
    shown = songs[(page - 1) * PAGE : page * PAGE]
    lines = [text.SONGS_HEAD.format(count=len(songs), page=page, pages=pages)]
    first = (page - 1) * PAGE + 1
    lines += [f"{n}. {song.label[:MAX_LABEL]}" for n, song in enumerate(shown, start=first)]
    picks = [
        button(who, f"{n}. {song.title}"[:40], "cs", pack(song.id), "+0")
        for n, song in enumerate(shown, start=first)
    ]
    rows = _rows(picks, PER_ROW)
    nav = []
    if page > 1:
        nav.append(button(who, text.SONGS_PREV, "sp", str(page - 1)))
    if page < pages:
        nav.append(button(who, text.SONGS_NEXT, "sp", str(page + 1)))
    return Reply("\n".join(lines), rows + ((tuple(nav),) if nav else ()))


def page_number(raw: str) -> int:
    """A page from a button or an argument; ValueError for anything but a small number."""
    if not re.fullmatch(r"\d{1,4}", raw or ""):
        raise ValueError(raw)
    return int(raw)


def song_choices(core, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, song id) pairs for an autocomplete: the catalog itself before anything is
    typed, the best matches after (accents and case do not matter)."""
    typed = visible(query or "")[:200]
    if not typed.strip():
        songs = api.list_songs(who.owner, s=core.s)[:limit]
        return [(song.label[:100], song.id) for song in songs]
    matches = api.find_songs(typed, who.owner, limit=limit, s=core.s)
    return [(song.label[:100], song.id) for song, _score in matches]


def example(core, who: Who) -> str | None:
    """A song of the catalog to name in a usage example: the shortest title that reads well
    as typed (lowercase, not ending in a number); None when the catalog is empty."""
    songs = [
        song
        for song in api.list_songs(who.owner, s=core.s)
        if song.title.strip() and not _ENDS_IN_NUMBER.search(song.title.strip())
    ]
    if not songs:
        return None
    best = min(songs, key=lambda song: (len(song.title), song.title.lower()))
    return visible(best.title).lower()[:60]


def usage(core, who: Who, verb: str, fallback: str) -> str:
    """How to use `/<verb>`, with a song the catalog has as the example."""
    song = example(core, who)
    if song is None:
        return fallback
    if verb == "cover":
        return text.COVER_USAGE.format(example=song)
    return text.SONG_USAGE.format(verb=verb, example=song)


def chatter(core, who: Who, fallback: str) -> str:
    song = example(core, who)
    return text.CHATTER.format(example=song) if song else fallback


def has_no_voice(core, who: Who) -> bool:
    """No voice to sing with: none of their own, no public one, and no demo voice."""
    return not api.list_voices(who.owner, s=core.s) and api.demo_voice(s=core.s) is None


def offer_demo(core, who: Who, song: api.SongInfo, pitch: int) -> Reply | None:
    """For a user with no voice of their own and no default: the demo voice, offered with a
    button (pressing it makes it their default and covers the song). None otherwise."""
    if api.default_voice(who.owner, s=core.s) is not None:
        return None
    available = api.list_voices(who.owner, s=core.s)
    if not all(api.is_demo_voice(v) for v in available):
        return None  # voices to pick from: the usual voice buttons
    demo = api.demo_voice(s=core.s)  # registered now if it was not yet
    if demo is None:
        return None
    offer = button(who, text.USE_DEMO, "dc", pack(song.id), f"{pitch:+d}")
    return Reply(text.NO_VOICE_DEMO.format(song=quoted(song.label)), ((offer,),))


def demo_pressed(core, who: Who, song: api.SongInfo, pitch: int):
    """The demo voice offer, pressed: the demo voice becomes the default, and sings."""
    if abs(pitch) > MAX_PITCH:
        raise ValueError(pitch)
    demo = api.demo_voice(s=core.s)
    if demo is None:
        return Reply("", toast="The demo voice is not available; /train <name> clones yours.")
    api.set_default_voice_id(who.owner, demo.id, s=core.s)
    return core._cover_plan(who, song, demo, pitch)
