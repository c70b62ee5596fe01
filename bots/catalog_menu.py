"""Finding songs and the first cover, for someone who has read nothing: `/songs` (the catalog,
paged, a cover button per song), song suggestions before anything is typed (Discord's
autocomplete), usage examples that name a song the catalog has, and the demo voice offered
to a user who has no voice yet (its press is `bots.songs.demo_picked_for_cover`).

Handlers `(s, who, ...)` like the others; every button is bound to the user it is shown to.
"""

from __future__ import annotations

import math
import re

from bots.inputs import visible
from bots.messages import Reply, Who
from bots.payload import button, pack, rows
from flows import api
from flows.chat import charts_text as text
from flows.chat.text import quoted

PAGE = 8  # songs per /songs page (Discord: 4 rows of 2, then the page buttons)
PER_ROW = 2
MAX_LABEL = 80  # characters of a song in the list (Discord shows 2000 in a message)
_ENDS_IN_NUMBER = re.compile(r"[+-]?\d+$")  # "/cover Song 2" would read "2" as a key change
_PAGE = re.compile(r"\d{1,4}")


def songs(s, who: Who, args: str = "") -> Reply:
    """`/songs [page]`: the catalog, paged, a cover button per song."""
    if not who.placeholder:
        api.ensure_user(who.owner, who.name, s=s)
    try:
        page = page_arg(visible(args)[:10] or "1")
    except ValueError:
        page = 1
    return songs_page(s, who, page)


def songs_page(s, who: Who, page: int = 1) -> Reply:
    """One page of the catalog (and the user's own songs), a cover button per song; also the
    `sp` button's handler."""
    listed = api.list_songs(who.owner, s=s)
    if not listed:
        return Reply(text.SONGS_EMPTY)
    pages = math.ceil(len(listed) / PAGE)
    page = min(max(1, page), pages)
    shown = listed[(page - 1) * PAGE : page * PAGE]
    lines = [text.SONGS_HEAD.format(count=len(listed), page=page, pages=pages)]
    first = (page - 1) * PAGE + 1
    lines += [f"{n}. {song.label[:MAX_LABEL]}" for n, song in enumerate(shown, start=first)]
    picks = [
        button(who, f"{n}. {song.title}"[:40], "cs", pack(song.id), "+0")
        for n, song in enumerate(shown, start=first)
    ]
    nav = []
    if page > 1:
        nav.append(button(who, text.SONGS_PREV, "sp", str(page - 1)))
    if page < pages:
        nav.append(button(who, text.SONGS_NEXT, "sp", str(page + 1)))
    return Reply("\n".join(lines), rows(picks, PER_ROW) + ((tuple(nav),) if nav else ()))


def page_arg(raw: str) -> int:
    """A page from a button or an argument; ValueError for anything but a small number."""
    if not _PAGE.fullmatch(raw or ""):
        raise ValueError(raw)
    return int(raw)


def song_choices(s, who: Who, query: str, limit: int = 25) -> list[tuple[str, str]]:
    """(label, song id) pairs for an autocomplete: the catalog itself before anything is
    typed, the best matches after (accents and case do not matter)."""
    typed = visible(query or "")[:200]
    if not typed.strip():
        return [(song.label[:100], song.id) for song in api.list_songs(who.owner, s=s)[:limit]]
    matches = api.find_songs(typed, who.owner, limit=limit, s=s)
    return [(song.label[:100], song.id) for song, _score in matches]


def example(s, who: Who) -> str | None:
    """A song of the catalog to name in a usage example: the shortest title that reads well
    as typed (lowercase, not ending in a number); None when the catalog is empty."""
    titled = [
        song
        for song in api.list_songs(who.owner, s=s)
        if song.title.strip() and not _ENDS_IN_NUMBER.search(song.title.strip())
    ]
    if not titled:
        return None
    best = min(titled, key=lambda song: (len(song.title), song.title.lower()))
    return visible(best.title).lower()[:60]


def has_no_voice(s, who: Who) -> bool:
    """No voice to sing with: none of their own, no public one, and no demo voice."""
    return not api.list_voices(who.owner, s=s) and api.demo_voice(s=s) is None


def offer_demo(s, who: Who, song: api.SongInfo, pitch: int) -> Reply | None:
    """For a user with no voice of their own and no default: the demo voice, offered with a
    button (pressing it makes it their default and covers the song). None otherwise."""
    if api.default_voice(who.owner, s=s) is not None:
        return None
    available = api.list_voices(who.owner, s=s)
    if not all(api.is_demo_voice(v) for v in available):
        return None  # voices to pick from: the usual voice buttons
    if api.demo_voice(s=s) is None:  # registered now if it was not yet
        return None
    offer = button(who, text.USE_DEMO, "dc", pack(song.id), f"{pitch:+d}")
    return Reply(text.NO_VOICE_DEMO.format(song=quoted(song.label)), ((offer,),))
