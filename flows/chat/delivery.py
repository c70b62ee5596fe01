"""Delivering, once: which courier speaks for a job, and the sweep of what is still due.

Each platform's module registers its courier class with `@platform` (the reply target's
"platform" names it). `deliver` posts an ended job's outcome through its courier unless that
was done or is being done (`flows.chat.ledger`). `deliver_pending` is the safety net: jobs
that ended without anyone delivering them (their process died between the two), retries
whose wait is over, and claims whose holder died. The bots run it at start and every few
minutes; a cluster's janitor runs it too (`flows.recovery`).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select

from flows.chat.courier import Courier
from flows.db import TERMINAL, Delivery, Job, now, session
from flows.jobs import reply_target
from flows.settings import Settings

PLATFORMS: dict[str, type[Courier]] = {}


def platform(cls: type[Courier]) -> type[Courier]:
    """Register a platform's courier (a class decorator): jobs whose reply target names
    `cls.platform` are spoken for by it."""
    PLATFORMS[cls.platform] = cls
    return cls


def courier_to(s: Settings, target: dict, job_id: str = "") -> Courier | None:
    """The courier of the platform `target` names, or None for a platform nobody posts to."""
    kind = PLATFORMS.get(str(target.get("platform")))
    return kind(s, job_id, target) if kind is not None else None


def chat_target(platform: str, chat_id: str, head: str) -> dict:
    """A reply target for a job that comes unprompted into a chat (a trending drop's cover):
    the chat itself, with no status message, its post saying `head`."""
    return PLATFORMS[platform].chat_target(chat_id, head)


def courier_for(s: Settings, job_id: str) -> Courier | None:
    """The courier for a job submitted from a chat a registered platform can post to, else
    None: the job's observer (`flows.jobs.observe_jobs`)."""
    reply_to = reply_target(s, job_id)  # kept in the database, never in run parameters
    return courier_to(s, reply_to, job_id) if reply_to is not None else None


def deliver(s: Settings, job_id: str, courier: Courier | None = None) -> bool:
    """Post an ended job's outcome to its chat, unless that was done or is being done.

    Returns True if this call took the delivery (and ended it, or left it waiting for a retry).
    """
    courier = courier or courier_for(s, job_id)
    if courier is None:
        return False
    return courier.deliver()


def deliver_pending(s: Settings, max_age: timedelta = timedelta(days=1)) -> int:
    """Deliver what is due: ended chat jobs nobody delivered (their process died), waits that
    are over, and claims whose holder died. How many this call took."""
    at = now()
    with session(s.database) as db:
        unclaimed = (
            select(Job.id)
            .outerjoin(Delivery, Delivery.job_id == Job.id)
            .where(
                Delivery.job_id.is_(None),
                Job.state.in_(TERMINAL),
                Job.updated_at >= at - max_age,
            )
        )
        due = select(Delivery.job_id).where(
            or_(
                and_(Delivery.state == "waiting", Delivery.next_at <= at),
                and_(Delivery.state == "sending", Delivery.lease_until < at),
            )
        )
        ids = list(db.scalars(unclaimed)) + list(db.scalars(due))
    delivered = 0
    for job_id in ids:
        courier = courier_for(s, job_id)
        if courier is None:
            continue
        try:
            delivered += courier.deliver()
        finally:
            courier.close_api()
    return delivered


def say_all_gone(s: Settings, target: dict) -> None:
    """Tell the chat a `/forget` was asked in that its last file is deleted
    (`flows.erase.when_all_gone`)."""
    courier = courier_to(s, target)
    if courier is None:
        return
    try:
        courier.say(courier.words.all_gone())
    finally:
        courier.close_api()
