"""Training a voice: the `/train <name>` session, its samples, and the owner's consent.

`/train` opens an upload session; each voice note or audio file is checked and counted
(`flows.api.add_sample`) with a line saying how much voice there is; `ready` asks whether the
voice is the user's own (or they have its owner's permission) with two buttons, and only
`consent` turns the session into a training job.
"""

from __future__ import annotations

from pathlib import Path

from bots.checks import personal, plural, quota_refusal, quoted, too_big
from bots.inputs import clean_arg, clean_filename
from bots.messages import Download, Incoming, JobPlan, Outcome, Reply, Who
from bots.payload import button, pack
from flows import api
from flows.api import UserError


def new_voice_name(s, who: Who, raw: str) -> str | Reply:
    """The checked name for a new voice of `who`, or the reply refusing it."""
    try:
        name = api.valid_voice_name(raw)
    except UserError as exc:
        return Reply(exc.message)
    if api.get_voice(who.owner, name, include_public=False, s=s) is not None:
        return Reply(f"You already have a voice called {quoted(name)}; pick another name.")
    return name


@personal
def train(s, who: Who, args: str) -> Reply:
    """`/train <name>`: open a session that collects samples."""
    api.ensure_user(who.owner, who.name, s=s)
    try:
        raw = clean_arg(args)
    except UserError as exc:
        return Reply(exc.message)
    if not raw:
        return Reply("Give the voice a name: /train <name>, like /train my voice.")
    name = new_voice_name(s, who, raw)
    if isinstance(name, Reply):
        return name
    refused = quota_refusal(s, who, "train")
    if refused:
        return refused
    api.open_upload(who.owner, "train", name, s=s)
    limits = api.training_limits(s)
    low, high = limits.recommended_s
    return Reply(
        f"🎙 Let's clone {quoted(name)}. Send me voice notes or audio files of that voice "
        "alone, speaking or singing, with no music behind it. I need at least "
        f"{api.format_duration(limits.min_total_s)} in all; "
        f"{api.format_duration(low)} to {api.format_duration(high)} gives the best clone. "
        f"Files up to {s.telegram_download_limit_bytes // 2**20} MB each. "
        "Send /done when you have finished, or /cancel."
    )


@personal
def sample_incoming(s, who: Who, incoming: Incoming) -> Reply | Download:
    """A file for the open session: download it, or say why not."""
    limit = s.telegram_download_limit_bytes
    if incoming.size and incoming.size > limit:
        return Reply(too_big(incoming.size, limit))
    if not incoming.audio:
        return Reply("That is not a recording; send voice notes or audio files.")
    return Download("sample", incoming.filename)


@personal
def sample_downloaded(s, who: Who, source: str, local: Path, filename: str) -> Reply | None:
    """A downloaded sample: checked and counted; None for the same message again."""
    filename = clean_filename(filename)  # as the platform named it: made safe here too
    upload = api.current_upload(who.owner, s=s)
    if upload is None or upload.kind != "train":
        return Reply("Start a voice first: /train <name>.")
    try:
        got = api.add_sample(upload.id, who.owner, source, local, filename, s=s)
    except UserError as exc:
        return Reply(exc.message)
    if got.duplicate:
        return None  # the same message again: it was counted the first time
    total = api.format_duration(got.upload.voiced_s)
    if not got.accepted:
        return Reply(f"⚠️ I can't use that one: {got.problem} So far: {total} of voice.")
    limits = api.training_limits(s)
    have = got.upload.voiced_s
    if have < limits.min_total_s:
        more = api.format_wait(limits.min_total_s - have)
        tail = f"send at least {more} more."
    elif have < limits.recommended_s[0]:
        tail = "/done to train now, or send more for a better clone."
    else:
        tail = "that is plenty: /done to start training."
    return Reply(
        f"🎙 Got {api.format_duration(got.voiced_s)} of clean voice. "
        f"Total: {total} in {plural(len(got.upload.files), 'clip')}; {tail}"
    )


def ready(s, who: Who, upload: api.UploadInfo) -> Reply:
    """The training session is finished: enough voice? Then ask for consent."""
    limits = api.training_limits(s)
    have = upload.voiced_s
    if have < limits.min_total_s:
        more = api.format_wait(limits.min_total_s - have)
        return Reply(
            f"I have {api.format_duration(have)} of clean voice for {quoted(upload.name)}; "
            f"send at least {more} more, then /done."
        )
    return Reply(
        f"Ready to train {quoted(upload.name)} on {api.format_duration(have)} of voice "
        f"from {plural(len(upload.files), 'clip')}. I will post progress here.\n\n"
        "First: is this your own voice, or do you have its owner's permission to clone it?",
        (
            (button(who, "✅ It's mine, or I have permission", "tc", pack(upload.id)),),
            (button(who, "✖ Cancel", "tx", pack(upload.id)),),
        ),
    )


@personal
def consent(s, who: Who, upload_id: str) -> Outcome:
    """The consent button: the session becomes a training job."""
    claimed = api.claim_upload(upload_id, who.owner, s=s)
    if claimed is None:
        upload = api.get_upload(upload_id, s=s)
        if upload is not None and upload.owner == who.owner and upload.job_id:
            return Reply("", toast="Already training; the status is above.")
        return Reply("", toast="This session is over; start again with /train <name>.")
    refused = quota_refusal(s, who, "train")
    if refused:
        api.release_upload(upload_id, s=s)
        return refused
    return JobPlan(
        kind="train",
        owner=who.owner,
        headline=api.headline("train", name=claimed.name),
        name=claimed.name,
        files=tuple(f.uri for f in claimed.files),
        upload_id=claimed.id,
    )


@personal
def consent_refused(s, who: Who, upload_id: str) -> Reply:
    """The cancel button under the consent question: the samples are deleted."""
    current = api.current_upload(who.owner, s=s)
    if current is None or current.id != upload_id:
        return Reply("", toast="This session is over already.")
    api.cancel_upload(who.owner, s=s)
    return Reply("Cancelled; the samples you sent are deleted. /train <name> starts again.")
