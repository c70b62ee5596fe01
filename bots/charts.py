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
to, as all of `bots.core`'s are.
"""

from __future__ import annotations

import re

from bots.core import Button, Reply, Who, button, clean_arg, pack, quoted
from flows import api
from flows.api import UserError
from flows.chat import charts_text as text

PER_ROW = 3
MAX_SONG_BUTTONS = 12  # Discord: 4 rows of 3, then one row of charts
MAX_CHART_BUTTONS = 5
MAX_LISTED = 20  # entries shown (Discord's 2000 characters, Telegram's 4096)
MAX_LABEL = 70
_NAME = re.compile(r"^[a-z0-9_-]{1,20}$")
_RANK = re.compile(r"^\d{1,3}$")
_KEY = re.compile(r"^[0-9a-f]{8}$")


def _rows(buttons: list[Button], per_row: int) -> tuple[tuple[Button, ...], ...]:
    return tuple(tuple(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row))


def _chart_buttons(who: Who, names, shown: str | None) -> tuple[tuple[Button, ...], ...]:
    others = [n for n in names if n != shown][:MAX_CHART_BUTTONS]
    return (tuple(button(who, f"📈 {n}", "cp", n) for n in others),) if others else ()


def charts_reply(core, who: Who, args: str = "", can_set: bool = False) -> Reply:
    """`/charts [name]`: the chart `name`, else the chat's default one, else the operator's.

    `can_set`: whoever asks may set the chat's default (a private chat's user, a group's
    admins): a chart named this way becomes the one `/charts` shows first in the chat."""
    try:
        name = clean_arg(args).strip().lower()
        chosen = name or api.chat_chart(who.platform, who.chat_id, s=core.s)
        info = api.chart(chosen or None, s=core.s)
    except api.NoChart as exc:
        return Reply(exc.message, _chart_buttons(who, exc.names, None))
    except UserError as exc:
        return Reply(exc.message)
    reply = render(core, who, info)
    remember = name and can_set and len(info.names) > 1 and not who.placeholder
    if remember and api.set_chat_chart(who.platform, who.chat_id, info.name, who.owner, s=core.s):
        noted = f"{reply.text}\n{text.CHART_REMEMBERED.format(name=info.name)}"
        reply = Reply(noted, reply.buttons)
    return reply


def _footer(core, who: Who, info: api.ChartInfo, fetching: bool) -> str:
    if not info.items:
        return text.CHART_EMPTY.format(name=info.name)
    if not any(item.ready for item in info.items) and not fetching:
        return text.CHART_NONE_READY
    if fetching:
        return text.CHART_PRESS_FETCH
    voice = core._voice(who)
    if isinstance(voice, api.VoiceInfo):
        return text.CHART_PRESS.format(voice=voice.name)
    if voice is None and api.demo_voice(s=core.s) is not None:
        return text.CHART_PRESS_DEMO
    return text.CHART_PRESS_PICK


def render(core, who: Who, info: api.ChartInfo) -> Reply:
    fetching = api.chart_fetching(s=core.s)
    items = info.items[:MAX_LISTED]
    lines = [text.CHART_HEAD.format(name=info.name, count=len(items))]
    for item in items:
        mark = text.READY_MARK if item.ready else text.MISSING_MARK
        shown = item.label if len(item.label) <= MAX_LABEL else item.label[: MAX_LABEL - 1] + "…"
        lines.append(f"{item.rank}. {mark} {shown}")
    lines.append(_footer(core, who, info, fetching))
    picks: list[Button] = []
    for item in items:
        if len(picks) >= MAX_SONG_BUTTONS:
            break
        label = f"{item.rank}. {item.title}"[:32]
        if item.song is not None:
            picks.append(button(who, label, "cs", pack(item.song.id), "+0"))
        elif fetching:
            picks.append(button(who, label, "cc", info.name, str(item.rank), item.key))
    rows = _rows(picks, PER_ROW) + _chart_buttons(who, info.names, info.name)
    return Reply("\n".join(lines), rows)


def pressed(core, who: Who, verb: str, args: list[str]):
    """A chart button: `cp` shows another chart, `cc` covers a chart song by rank."""
    if verb == "cp" and len(args) == 1 and _NAME.match(args[0]):
        return charts_reply(core, who, args[0], can_set=who.private)
    if verb == "cc" and len(args) == 3:
        name, rank, key = args
        if not (_NAME.match(name) and _RANK.match(rank) and _KEY.match(key)):
            raise ValueError(args)
        item = api.chart_item(name, int(rank), key, s=core.s)
        if item is None:
            return Reply("", toast=text.CHART_MOVED)
        if item.song is None and api.chart_fetching(s=core.s):  # fetched by the job
            return core.chart_cover(who, item.artist, item.title, item.label)
        if item.song is None:
            return Reply("", toast=text.CHART_NOT_READY.format(song=quoted(item.label))[:190])
        return core._cover_with(who, item.song, 0)
    raise ValueError(verb)
