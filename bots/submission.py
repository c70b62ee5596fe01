"""Submitting a `JobPlan` once: the adapter has posted its status message, and this makes
the job (`flows.submit`) with the chat's reply target, exactly once per idempotency key.

The user's quotas are checked again where the job is made, atomically, so a burst of
commands cannot make more jobs than the quotas allow.
"""

from __future__ import annotations

from bots.checks import limit_text
from bots.messages import JobPlan, Reply
from flows import api, submit
from flows.api import UserError


def _submit(s, plan: JobPlan, key: str, reply_to: dict) -> str:
    common = {"idempotency_key": key, "s": s, "reply_to": reply_to, "quota": True}
    if plan.kind == "cover":
        chart = {"artist": plan.chart[0], "title": plan.chart[1]} if plan.chart else None
        return submit.submit_cover(
            plan.owner,
            plan.song_id,
            plan.voice_id,
            plan.options,
            link=plan.link,
            chart=chart,
            **common,
        )
    if plan.kind == "stems":
        return submit.submit_stems(plan.owner, plan.song_id, options=plan.options, **common)
    if plan.kind == "karaoke":
        return submit.submit_karaoke(plan.owner, plan.song_id, plan.options, **common)
    if plan.kind == "train":
        files = list(plan.files)
        return submit.submit_training(plan.owner, plan.name, files, consent=True, **common)
    if plan.kind == "import":
        files, links = list(plan.files), list(plan.links)
        return submit.submit_import(plan.owner, plan.name, files, links=links, **common)
    raise ValueError(plan.kind)


def submit_plan(s, plan: JobPlan, key: str, reply_to: dict) -> tuple[str, bool] | Reply:
    """Submit the plan once per `key`; (job id, whether this call made it) or a refusal."""
    try:
        job_id = _submit(s, plan, key, reply_to)
    except UserError as exc:
        if plan.upload_id:
            api.release_upload(plan.upload_id, s=s)
        if isinstance(exc, api.QuotaExceeded):  # a quota filled up since the plan
            return Reply(limit_text(exc.limit, s))
        return Reply(exc.message)
    if plan.upload_id:
        api.mark_submitted(plan.upload_id, job_id, s=s)
    made = api.job_by_key(key, s=s)
    fresh = made is None or (made.reply_to or {}).get("status_message_id") == reply_to.get(
        "status_message_id"
    )
    return job_id, fresh
