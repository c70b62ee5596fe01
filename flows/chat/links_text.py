"""The sentences users read about links: songs and voices fetched from a link (`flows.links`)
and chart songs fetched by the resolver (`flows.resolver`). One short sentence each, saying
what to do. (To be folded into the chat text module.)"""

from __future__ import annotations

DISABLED = (
    "Links are switched off on this server; send the song file itself, or /cover <song name>."
)
DISABLED_MODEL = "Links are switched off on this server; send the model file itself."
NOT_A_LINK = "That is not a web link; send one that starts with https://."
TOO_LONG_LINK = "That link is too long; send a shorter one."
PRIVATE = (
    "That link leads to a private or local network address, which Encore does not fetch; "
    "send a public link or the file itself."
)
PLAYLIST = "That link is a playlist; send a link to one song."
LIVE = "That link is a live stream; send a link to a recording."
NO_AUDIO = "I found no audio at that link; send a link to a page with the song, or the file."
TIMEOUT = "The site behind that link did not answer in time; try again later, or send the file."
DEADLINE = "Fetching that link took too long; try again later, or send the file."
UNREACHABLE = "I could not reach the site behind that link; check the link, or send the file."
FAILED = "I could not fetch that link; check it, or send the file itself."
BUSY = "That link is being fetched for someone else right now; try again in a minute."


def http_status(code: int) -> str:
    return f"That link does not work (the site answered {code}); check it, or send the file."


def too_long(seconds: float, limit: float) -> str:
    return (
        f"That song is {_duration(seconds)} long and covers take songs up to "
        f"{_duration(limit)}; pick a shorter one."
    )


def too_big(size: int, limit: int) -> str:
    return f"That file is {_mb(size)}, over the {_mb(limit)} limit for links; pick a smaller one."


def _mb(size: int) -> str:
    return f"{max(1, round(size / 2**20))} MB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    return f"{secs} s"


PICK_VOICE = "Pick your default voice first with /voice <name>, then send the link again."

PICK_VOICE_CHART = "Pick your default voice first with /voice <name>, then press the song again."

# Voices from a link
NOT_A_MODEL = "That link is not an RVC model; send a direct link to the .zip, .pth or .index file."
IMPORT_BY_LINK = "Bigger models: /import <link> [name], with a direct link to the .zip or .pth."
NAME_FROM_LINK = "Name the voice: /import <link> <name>."
MODEL_USAGE = "Send /import <link> with a direct link to the .zip or .pth of the model."

# The resolver (chart songs missing from the catalog)
NOT_FOUND = "No recording of that song could be found to fetch."
