"""`/status` and `/cancel`: the user's open session and latest jobs, and stopping them.

`/cancel` stops the open upload session first (its files are deleted), else the latest job.
"""

from __future__ import annotations

from bots.checks import personal
from bots.messages import Reply, Who
from flows import api
from flows.chat import text as said


def job_line(job: api.JobInfo) -> str:
    """One job in `/status`: its headline, and under it where it stands."""
    if job.state == "succeeded" and job.undelivered:
        state = said.job_problem(job.undelivered)
    elif job.state == "failed" and job.reason:
        state = said.job_problem(job.reason)
    elif job.state in said.JOB_STATES:
        state = said.JOB_STATES[job.state]
    else:
        state = api.status_line(job.state, job.step, job.progress)
    return said.job_item(job.headline, state)


@personal
def status(s, who: Who) -> Reply:
    """`/status`."""
    found = api.list_jobs(who.owner, limit=6, s=s)
    upload = api.current_upload(who.owner, s=s)
    lines = []
    if upload is not None and upload.kind == "train":
        so_far = api.format_duration(upload.voiced_s)
        lines.append(said.replies(who.platform).collecting_samples(upload.name, so_far))
    elif upload is not None:
        lines.append(said.collecting_model_files(upload.name))
    if not found and not lines:
        return Reply(said.NO_JOBS_YET)
    if found:
        lines.append(said.LATEST_JOBS)
        lines += [job_line(job) for job in found]
    return Reply("\n".join(lines))


@personal
def cancel(s, who: Who) -> Reply:
    """`/cancel`."""
    stopped = api.cancel_upload(who.owner, s=s)
    if stopped is not None:
        return Reply(said.session_stopped(stopped.kind, stopped.name, len(stopped.files)))
    job = api.cancel_latest(who.owner, s=s)
    if job is None:
        return Reply(said.NOTHING_TO_CANCEL)
    return Reply(said.job_cancelled(job.headline))
