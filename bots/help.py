"""`/help` (and `/start`), unknown commands, and plain text in a private chat."""

from __future__ import annotations

from bots import catalog_menu
from bots.inputs import visible
from bots.messages import Reply, Who
from flows import api
from flows.chat import text as said


def help_command(s, who: Who) -> Reply:
    """`/help`: what the bot does; a first contact also records the user's name."""
    if not who.placeholder:
        api.ensure_user(who.owner, who.name, s=s)
    return Reply(said.replies(who.platform).help())


def unknown_command(s, who: Who, command: str) -> Reply:
    """A command this bot does not have."""
    return Reply(said.replies(who.platform).unknown_command(visible(command)[:30]))


def chatter(s, who: Who) -> Reply | None:
    """Plain text in a private chat: how to start, naming a song the catalog has."""
    if not who.private:
        return None
    return Reply(said.replies(who.platform).chatter(catalog_menu.example(s, who)))
