"""`/status` and `/cancel`: the user's open session and latest jobs, and stopping them.

`/cancel` stops the open upload session first (its files are deleted), else the latest job.
"""

from __future__ import annotations

from bots.checks import personal, plural, quoted
from bots.messages import Reply, Who
from flows import api


def job_line(job: api.JobInfo) -> str:
    """One job in `/status`: its headline, and under it where it stands."""
    head = job.headline
    if job.state == "succeeded" and job.undelivered:
        state = f"❌ {job.undelivered}"
    elif job.state == "succeeded":
        state = "✅ done"
    elif job.state == "failed":
        state = f"❌ {job.reason or 'failed'}"
    elif job.state == "cancelled":
        state = "🚫 cancelled"
    elif job.state == "queued":
        state = "⏳ queued"
    else:
        state = api.status_line(job.state, job.step, job.progress)
    return f"{head}\n    {state}"


@personal
def status(s, who: Who) -> Reply:
    """`/status`."""
    found = api.list_jobs(who.owner, limit=6, s=s)
    upload = api.current_upload(who.owner, s=s)
    lines = []
    if upload is not None and upload.kind == "train":
        lines.append(
            f"🎙 Collecting samples for {quoted(upload.name)}: "
            f"{api.format_duration(upload.voiced_s)} of voice so far; /done to train."
        )
    elif upload is not None:
        lines.append(f"📦 Waiting for the model files of {quoted(upload.name or 'a voice')}.")
    if not found and not lines:
        return Reply("You have no jobs yet; try /cover <song>.")
    if found:
        lines.append("Your latest jobs:")
        lines += [job_line(job) for job in found]
    return Reply("\n".join(lines))


@personal
def cancel(s, who: Who) -> Reply:
    """`/cancel`."""
    stopped = api.cancel_upload(who.owner, s=s)
    if stopped is not None:
        what = "samples" if stopped.kind == "train" else "model files"
        voice = quoted(stopped.name) if stopped.name else "the voice"
        if not stopped.files:
            return Reply(f"Stopped: no more {what} for {voice}.")
        return Reply(
            f"Stopped: the {plural(len(stopped.files), 'file')} you sent for {voice} "
            f"{'is' if len(stopped.files) == 1 else 'are'} deleted."
        )
    job = api.cancel_latest(who.owner, s=s)
    if job is None:
        return Reply("Nothing to cancel: you have no job on the way.")
    return Reply(f"🚫 Cancelled: {job.headline}")
