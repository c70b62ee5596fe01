"""Training a voice: the `/train <name>` session, its samples, and the owner's consent.

`/train` opens an upload session; each voice note or audio file is checked and counted
(`flows.api.add_sample`) with a line saying how much voice there is; `ready` asks whether the
voice is the user's own (or they have its owner's permission) with two buttons, and only
`consent` turns the session into a training job.
"""

from __future__ import annotations

from pathlib import Path

from bots.checks import personal, quota_refusal
from bots.inputs import clean_arg, clean_filename
from bots.messages import Download, Incoming, JobPlan, Outcome, Reply, Who
from bots.payload import button, pack
from flows import api
from flows.api import UserError
from flows.chat import text as said


def new_voice_name(s, who: Who, raw: str) -> str | Reply:
    """The checked name for a new voice of `who`, or the reply refusing it."""
    try:
        name = api.valid_voice_name(raw)
    except UserError as exc:
        return Reply(exc.message)
    if api.get_voice(who.owner, name, include_public=False, s=s) is not None:
        return Reply(said.voice_name_taken(name))
    return name


@personal
def train(s, who: Who, args: str) -> Reply:
    """`/train <name>`: open a session that collects samples."""
    say = said.replies(who.platform)
    api.ensure_user(who.owner, who.name, s=s)
    try:
        raw = clean_arg(args)
    except UserError as exc:
        return Reply(exc.message)
    if not raw:
        return Reply(say.name_the_voice())
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
        say.training_started(
            name,
            api.format_duration(limits.min_total_s),
            api.format_duration(low),
            api.format_duration(high),
            s.telegram_download_limit_bytes if who.platform == "telegram" else None,
        )
    )


@personal
def sample_incoming(s, who: Who, incoming: Incoming) -> Reply | Download:
    """A file for the open session: download it, or say why not."""
    say = said.replies(who.platform)
    limit = s.telegram_download_limit_bytes
    if incoming.size and incoming.size > limit:
        return Reply(say.too_big(incoming.size, limit))
    if not incoming.audio:
        return Reply(say.not_a_recording())
    return Download("sample", incoming.filename)


@personal
def sample_downloaded(s, who: Who, source: str, local: Path, filename: str) -> Reply | None:
    """A downloaded sample: checked and counted; None for the same message again."""
    say = said.replies(who.platform)
    filename = clean_filename(filename)  # as the platform named it: made safe here too
    upload = api.current_upload(who.owner, s=s)
    if upload is None or upload.kind != "train":
        return Reply(say.no_training_session())
    try:
        got = api.add_sample(upload.id, who.owner, source, local, filename, s=s)
    except UserError as exc:
        return Reply(exc.message)
    if got.duplicate:
        return None  # the same message again: it was counted the first time
    total = api.format_duration(got.upload.voiced_s)
    if not got.accepted:
        return Reply(said.sample_refused(got.problem, total))
    limits = api.training_limits(s)
    have = got.upload.voiced_s
    more = api.format_wait(limits.min_total_s - have) if have < limits.min_total_s else None
    return Reply(
        say.sample_counted(
            api.format_duration(got.voiced_s),
            total,
            len(got.upload.files),
            more,
            enough=have >= limits.recommended_s[0],
        )
    )


def ready(s, who: Who, upload: api.UploadInfo) -> Reply:
    """The training session is finished: enough voice? Then ask for consent."""
    limits = api.training_limits(s)
    have = upload.voiced_s
    if have < limits.min_total_s:
        more = api.format_wait(limits.min_total_s - have)
        return Reply(
            said.replies(who.platform).too_little_voice(
                upload.name, api.format_duration(have), more
            )
        )
    return Reply(
        said.ready_to_train(upload.name, api.format_duration(have), len(upload.files)),
        (
            (button(who, said.CONSENT_YES, "tc", pack(upload.id)),),
            (button(who, said.CONSENT_NO, "tx", pack(upload.id)),),
        ),
    )


@personal
def consent(s, who: Who, upload_id: str) -> Outcome:
    """The consent button: the session becomes a training job."""
    claimed = api.claim_upload(upload_id, who.owner, s=s)
    if claimed is None:
        upload = api.get_upload(upload_id, s=s)
        if upload is not None and upload.owner == who.owner and upload.job_id:
            return Reply("", toast=said.ALREADY_TRAINING)
        return Reply("", toast=said.replies(who.platform).session_over())
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
        return Reply("", toast=said.SESSION_OVER_ALREADY)
    api.cancel_upload(who.owner, s=s)
    return Reply(said.replies(who.platform).training_cancelled())
