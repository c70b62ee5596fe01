"""`/forget`: delete everything Encore keeps about a user, after they confirm with a button.

What cannot be deleted at once (a file store that is down, a job still stopping) is
finished later, and the chat is told then (`where_to_tell`).
"""

from __future__ import annotations

from bots.checks import personal, plural
from bots.messages import Reply, Who
from bots.payload import button
from flows import api

FORGET_PENDING = (
    "Some of your files could not be deleted yet; Encore keeps trying and will tell you here."
)
FORGET_STOPPING = "Your running job is stopping; Encore deletes what it leaves and tells you here."


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
        "This deletes your voices, covers, samples, uploaded songs and everything else I "
        "keep about you. It cannot be undone. Go ahead?",
        ((button(who, "🗑 Delete everything", "fy"), button(who, "Keep it", "fn")),),
    )


@personal
def forget_confirmed(s, who: Who) -> Reply:
    """The confirm button: delete, and say what went."""
    gone = api.forget_user(who.owner, s=s, notify=where_to_tell(who))
    done = (
        f"Done: I deleted {plural(gone.voices, 'voice')}, {plural(gone.jobs, 'job')} with "
        f"their files, {plural(gone.songs, 'uploaded song')} and "
        f"{plural(gone.samples, 'staged sample')}."
    )
    if gone.pending:
        return Reply(f"{done} {FORGET_PENDING}")
    if gone.stopping:
        return Reply(f"{done} {FORGET_STOPPING}")
    return Reply(f"{done} I keep nothing else about you.")


def forget_declined(s, who: Who) -> Reply:
    """The keep button."""
    return Reply("Kept: nothing was deleted.")
