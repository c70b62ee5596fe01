"""`/help` (and `/start`), unknown commands, and plain text in a private chat."""

from __future__ import annotations

from bots.inputs import visible
from bots.messages import Reply, Who
from flows import api

COMMANDS: tuple[tuple[str, str], ...] = (
    ("cover", "Make a cover: /cover <song> [+2]"),
    ("voices", "Your voices and the default one"),
    ("voice", "Set your default voice: /voice <name>"),
    ("train", "Clone a voice from voice notes: /train <name>"),
    ("done", "Finish sending samples"),
    ("import", "Add an RVC model (.pth, .index or .zip)"),
    ("karaoke", "The song without its vocal: /karaoke <song>"),
    ("stems", "Vocals, drums, bass and other: /stems <song>"),
    ("status", "Your jobs"),
    ("cancel", "Stop the latest job or session"),
    ("forget", "Delete everything Encore keeps about you"),
    ("trending", "Group admins: /trending on|off"),
    ("help", "What this bot does"),
)

HELP = (
    "🎤 Encore makes AI covers: a song from the catalog, sung in the voice you pick — "
    "even your own.\n"
    "\n"
    "/cover <song> — make a cover; add +2 or -3 to change the key. "
    "Or reply /cover to a song file you sent.\n"
    "/voices — your voices; /voice <name> sets the default\n"
    "/train <name> — clone a voice from voice notes\n"
    "/import — add an RVC model (.pth, .index or .zip)\n"
    "/karaoke <song> — the song without its lead vocal\n"
    "/stems <song> — vocals, drums, bass and other as files\n"
    "/status — your jobs · /cancel — stop the latest\n"
    "/forget — delete everything I keep about you\n"
    "/trending on|off — group admins: post trending covers here"
)


def help_command(s, who: Who) -> Reply:
    """`/help`: what the bot does; a first contact also records the user's name."""
    if not who.placeholder:
        api.ensure_user(who.owner, who.name, s=s)
    return Reply(HELP)


def unknown_command(s, who: Who, command: str) -> Reply:
    """A command this bot does not have."""
    return Reply(f"I don't know /{visible(command)[:30]}; /help lists what I can do.")


def chatter(s, who: Who) -> Reply | None:
    """Plain text in a private chat."""
    if not who.private:
        return None
    return Reply("Send /cover <song> to make a cover, or /help to see everything I can do.")
