"""`/charts`: the current chart, numbered, what is ready to cover marked, a button per song.

A song of the chart that is in the catalog gets the usual song button (`cs|<user>|<song>|+0`):
pressing it covers the song in the user's default voice, or shows the voice buttons (or the
demo voice offer) as `/cover` does. A song that is not in the catalog gets a button only when
such songs can be fetched on demand (`flows.api.chart_fetching`); its data names the chart, the
rank and the song's key (`cc|<user>|<chart>|<rank>|<key>`), so a press on an old list is
checked against the chart of now. With several charts configured, one button per other chart
switches the list (`cp|<user>|<chart>`); `/charts <name>` picks one by name. A chart picked in
a private chat, or named by a group's admin, becomes the chat's default (`flows.api.chat_chart`);
without one, the operator's default applies. Every button is bound to the user it was shown
to (`bots.payload.button`).
"""

from __future__ import annotations

import re

from bots.inputs import clean_arg
from bots.messages import Button, Outcome, Reply, Who
from bots.payload import button, pack, rows
from bots.songs import chart_cover, cover_with
from bots.voices import usable_voice
from flows import api
from flows.api import UserError
from flows.chat import charts_text as text
from flows.chat.text import quoted

PER_ROW = 3
MAX_SONG_BUTTONS = 12  # Discord: 4 rows of 3, then one row of charts
MAX_CHART_BUTTONS = 5
MAX_LISTED = 20  # entries shown (Discord's 2000 characters, Telegram's 4096)
MAX_LABEL = 70
NAME = re.compile(r"^[a-z0-9_-]{1,20}$")
RANK = re.compile(r"^\d{1,3}$")
KEY = re.compile(r"^[0-9a-f]{8}$")


def _chart_buttons(who: Who, names, shown: str | None) -> tuple[tuple[Button, ...], ...]:
    others = [n for n in names if n != shown][:MAX_CHART_BUTTONS]
    return (tuple(button(who, f"📈 {n}", "cp", n) for n in others),) if others else ()


def charts(s, who: Who, args: str = "", is_admin: bool = False) -> Reply:
    """`/charts [name]`: the chart `name`, else the chat's default one, else the operator's.

    Whoever may set the chat's default (a private chat's user, a group's admins) makes a
    chart named this way the one `/charts` shows first in the chat."""
    if not who.placeholder:
        api.ensure_user(who.owner, who.name, s=s)
    return charts_reply(s, who, args, can_set=who.private or is_admin)


def charts_reply(s, who: Who, args: str = "", can_set: bool = False) -> Reply:
    try:
        name = clean_arg(args).strip().lower()
        chosen = name or api.chat_chart(who.platform, who.chat_id, s=s)
        info = api.chart(chosen or None, s=s)
    except api.NoChart as exc:
        return Reply(exc.message, _chart_buttons(who, exc.names, None))
    except UserError as exc:
        return Reply(exc.message)
    reply = render(s, who, info)
    remember = name and can_set and len(info.names) > 1 and not who.placeholder
    if remember and api.set_chat_chart(who.platform, who.chat_id, info.name, who.owner, s=s):
        noted = f"{reply.text}\n{text.CHART_REMEMBERED.format(name=info.name)}"
        reply = Reply(noted, reply.buttons)
    return reply


def _footer(s, who: Who, info: api.ChartInfo, fetching: bool) -> str:
    if not info.items:
        return text.CHART_EMPTY.format(name=info.name)
    if not any(item.ready for item in info.items) and not fetching:
        return text.CHART_NONE_READY
    if fetching:
        return text.CHART_PRESS_FETCH
    voice = usable_voice(s, who)
    if isinstance(voice, api.VoiceInfo):
        return text.CHART_PRESS.format(voice=voice.name)
    if voice is None and api.demo_voice(s=s) is not None:
        return text.CHART_PRESS_DEMO
    return text.CHART_PRESS_PICK


def render(s, who: Who, info: api.ChartInfo) -> Reply:
    """The chart as a numbered list, with a button per song that can be covered."""
    fetching = api.chart_fetching(s=s)
    items = info.items[:MAX_LISTED]
    lines = [text.CHART_HEAD.format(name=info.name, count=len(items))]
    for item in items:
        mark = text.READY_MARK if item.ready else text.MISSING_MARK
        shown = item.label if len(item.label) <= MAX_LABEL else item.label[: MAX_LABEL - 1] + "…"
        lines.append(f"{item.rank}. {mark} {shown}")
    lines.append(_footer(s, who, info, fetching))
    picks: list[Button] = []
    for item in items:
        if len(picks) >= MAX_SONG_BUTTONS:
            break
        label = f"{item.rank}. {item.title}"[:32]
        if item.song is not None:
            picks.append(button(who, label, "cs", pack(item.song.id), "+0"))
        elif fetching:
            picks.append(button(who, label, "cc", info.name, str(item.rank), item.key))
    return Reply(
        "\n".join(lines), rows(picks, PER_ROW) + _chart_buttons(who, info.names, info.name)
    )


# -- the buttons (bound in bots.buttons)


def chart_arg(raw: str) -> str:
    """A chart's name from a button; ValueError for anything else."""
    if not NAME.match(raw):
        raise ValueError(raw)
    return raw


def rank_arg(raw: str) -> int:
    if not RANK.match(raw):
        raise ValueError(raw)
    return int(raw)


def key_arg(raw: str) -> str:
    if not KEY.match(raw):
        raise ValueError(raw)
    return raw


def chart_picked(s, who: Who, name: str) -> Reply:
    """`cp`: another chart's list (it becomes the default of a private chat)."""
    return charts_reply(s, who, name, can_set=who.private)


def chart_song_picked(s, who: Who, name: str, rank: int, key: str) -> Outcome:
    """`cc`: a chart song by rank, checked against the chart of now; covered if it is in the
    catalog, or fetched by the job when the operator allows it."""
    item = api.chart_item(name, rank, key, s=s)
    if item is None:
        return Reply("", toast=text.CHART_MOVED)
    if item.song is None and api.chart_fetching(s=s):  # fetched by the job
        return chart_cover(s, who, item.artist, item.title, item.label)
    if item.song is None:
        return Reply("", toast=text.CHART_NOT_READY.format(song=quoted(item.label))[:190])
    return cover_with(s, who, item.song, 0)
