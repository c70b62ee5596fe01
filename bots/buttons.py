"""Buttons: which handler a press runs, with which checked arguments, and who may press.

Each verb of `bots.payload` is bound here to the handler of its concern and the checks of
its arguments (`BINDINGS`). Only the user a button was shown to may press it: anyone else
gets a short note saying whose it is, and nothing happens. Unknown, stale or forged data
gets a short note too, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bots import catalog_menu, chart_menu, privacy, songs, training, voices
from bots.inputs import visible
from bots.messages import Outcome, Reply, Who
from bots.payload import id_arg, owner_tag, pitch_arg, read, tagged_owner
from flows import api
from flows.api import UserError
from flows.chat import text as said

EXPIRED = said.BUTTON_EXPIRED


@dataclass(frozen=True)
class Binding:
    """What a verb runs: `handler(s, who, *checked)`, each argument checked by its reader."""

    handler: Callable[..., Outcome]
    readers: tuple[Callable[[str], object], ...] = ()


BINDINGS: dict[str, Binding] = {
    "cs": Binding(songs.song_picked_for_cover, (id_arg, pitch_arg)),
    "cv": Binding(songs.voice_picked_for_cover, (id_arg, id_arg, pitch_arg)),
    "ss": Binding(songs.song_picked_for_stems, (id_arg, pitch_arg)),
    "s6": Binding(songs.song_picked_for_six_stems, (id_arg, pitch_arg)),
    "ks": Binding(songs.song_picked_for_karaoke, (id_arg, pitch_arg)),
    "dv": Binding(voices.default_picked, (id_arg,)),
    "tc": Binding(training.consent, (id_arg,)),
    "tx": Binding(training.consent_refused, (id_arg,)),
    "fy": Binding(privacy.forget_confirmed),
    "fn": Binding(privacy.forget_declined),
    "cp": Binding(chart_menu.chart_picked, (chart_menu.chart_arg,)),
    "cc": Binding(
        chart_menu.chart_song_picked,
        (chart_menu.chart_arg, chart_menu.rank_arg, chart_menu.key_arg),
    ),
    "sp": Binding(catalog_menu.songs_page, (catalog_menu.page_arg,)),
    "dc": Binding(songs.demo_picked_for_cover, (id_arg, pitch_arg)),
}


def bind(data: str) -> tuple[Binding, tuple] | None:
    """The binding a press's data names and its checked arguments; None for data that is no
    button of ours or has the wrong number of arguments. UserError (a pitch out of range) or
    ValueError (junk) from the argument checks. Pure: no database."""
    press = read(data)
    if press is None:
        return None
    binding = BINDINGS.get(press.verb)
    if binding is None or len(press.args) != len(binding.readers):
        return None
    checked = zip(binding.readers, press.args, strict=True)
    return binding, tuple(check(arg) for check, arg in checked)


def press_refusal(s, who: Who, data: str) -> Reply | None:
    """Why `who` may not press a button with `data` (a short note), or None if they may.

    Checked before anything else a press does: a button is its user's alone, whatever
    state its message is in."""
    press = read(data)
    if press is None:
        return Reply("", toast=EXPIRED)
    if press.tag != owner_tag(who):
        owner = tagged_owner(who.platform, press.tag)
        name = visible(api.display_name(owner, s=s))[:60] if owner else ""
        return Reply("", toast=said.button_owner(name))
    if who.placeholder:
        return Reply("", toast=said.PLACEHOLDER_SENDER)
    return None


def pressed(s, who: Who, data: str) -> Outcome:
    """A pressed button: only its own user's press does anything, and its data is checked
    like a typed command."""
    refused = press_refusal(s, who, data)
    if refused is not None:
        return refused
    try:
        bound = bind(data)
        if bound is None:
            return Reply("", toast=EXPIRED)
        binding, args = bound
        return binding.handler(s, who, *args)
    except UserError as exc:
        return Reply("", toast=exc.message[:190])
    except ValueError:
        return Reply("", toast=EXPIRED)
