"""What `/done` and a file sent with no command mean: it depends on the open session.

A user has at most one upload session (training samples or a model's files). `/done`
finishes it; a file goes to it, or, with none open, is a model, a song to reply to, or not
something Encore can use.
"""

from __future__ import annotations

from bots import importing, training
from bots.checks import personal
from bots.inputs import MODEL_SUFFIXES
from bots.messages import Download, Incoming, Outcome, Reply, Who
from flows import api
from flows.chat import text as said


@personal
def done(s, who: Who) -> Outcome:
    """`/done`: finish the open session (training asks for consent, an import starts)."""
    say = said.replies(who.platform)
    upload = api.current_upload(who.owner, s=s)
    if upload is None:
        return Reply(say.nothing_to_finish())
    if upload.kind == "import":
        if not upload.has(".pth"):
            return Reply(say.model_needs_pth())
        return importing.import_plan(s, who, upload)
    return training.ready(s, who, upload)


def loose_file(s, who: Who, incoming: Incoming) -> Reply | Download | None:
    """A file sent outside any command: a sample, a model, or a song to reply to."""
    if who.placeholder:  # a channel's posts forwarded into its group: files for people
        return Reply(said.PLACEHOLDER_SENDER) if who.private else None
    upload = api.current_upload(who.owner, s=s)
    if upload is not None and upload.kind == "train":
        return training.sample_incoming(s, who, incoming)
    if incoming.suffix in MODEL_SUFFIXES:
        return importing.model_incoming(s, who, incoming)
    if upload is not None and upload.kind == "import":
        return Reply(said.NOT_A_MODEL)
    if not who.private:
        return None  # in a group, files are for people
    if incoming.audio:
        return Reply(said.replies(who.platform).song_file_sent())
    return Reply(said.NOT_AUDIO)
