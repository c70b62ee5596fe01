"""`/forget`: delete everything Encore keeps about a user, after they confirm with a button.

What cannot be deleted at once (a file store that is down, a job still stopping) is
finished later, and the chat is told then (`where_to_tell`).
"""

from __future__ import annotations

from bots.checks import personal
from bots.messages import Reply, Who
from bots.payload import button
from flows import api
from flows.chat import text as said


def where_to_tell(who: Who) -> dict:
    """A reply target for a message to `who`'s chat later (a finished `/forget`)."""
    if who.platform == "discord":
        return {"platform": "discord", "channel_id": who.chat_id, "user_id": who.user_id}
    return {"platform": who.platform, "chat_id": who.chat_id}


@personal
def forget(s, who: Who) -> Reply:
    """`/forget`: the question, with a button to confirm and one to keep everything."""
    api.ensure_user(who.owner, who.name, s=s)  # its name answers others' presses
    return Reply(
        said.FORGET_QUESTION,
        ((button(who, said.FORGET_YES, "fy"), button(who, said.FORGET_NO, "fn")),),
    )


@personal
def forget_confirmed(s, who: Who) -> Reply:
    """The confirm button: delete, and say what went."""
    gone = api.forget_user(who.owner, s=s, notify=where_to_tell(who))
    return Reply(
        said.forgotten(
            gone.voices, gone.jobs, gone.songs, gone.samples, gone.pending, gone.stopping
        )
    )


def forget_declined(s, who: Who) -> Reply:
    """The keep button."""
    return Reply(said.FORGET_KEPT)
