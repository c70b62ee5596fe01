"""The delivery ledger: one `deliveries` row per job, so that an outcome is posted once,
and survives refusals and crashes:

  (no row) --claim--> sending --sent------------------> sent
                      |  ^   --refused for good------> failed
                      |  |   --still refused at give_up_at--> gave_up
                      |  +-- claim (next_at passed, or the holder's lease ran out)
                      +--transient failure, a long wait--> waiting

A claim is a lease: its holder renews `lease_until` while it works, so a claim whose holder
died runs out and `deliver_pending` (`flows.chat.delivery`: the bots' sweeper, the cluster's
janitor) takes it over. Short waits (up to `delivery_hold_s`) are waited by the holder;
longer ones release the row as `waiting` until `next_at`. `retry_after` is honoured in full.

Each message of an outcome is a "part" in `detail["parts"]`: marked in flight before it is
sent and sent after, so a retry skips what arrived. A part whose answer was lost (a read
timeout after the request went out), or whose holder died while it was in flight, may have
arrived: it is sent once more at most, and `lost` counts such sends. A third send is never
made; the part is then recorded as `unconfirmed`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, timedelta

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError

from flows.chat.client import ANSWER_LOST, retry_after
from flows.db import Delivery, now, session
from flows.settings import Settings

log = logging.getLogger("encore.delivery")

FINAL = ("sent", "failed", "gave_up")
BACKOFF_MAX_S = 600.0  # the longest wait between tries when the platform gives no retry_after


class LeaseLost(Exception):
    """Another process took this delivery over (this one stalled past its lease)."""


def _holder() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _scaled(s: Settings, seconds: float) -> timedelta:
    return timedelta(seconds=seconds * s.delivery_time_scale)


def backoff_s(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed try when the platform names no time."""
    return min(BACKOFF_MAX_S, 0.5 * 2 ** max(0, attempts - 1))


def wait_s(exc: BaseException, attempts: int) -> float:
    """How long to wait before the next try: the platform's `retry_after` in full, if it gave
    one, else exponential backoff (in the platform's seconds; `delivery_time_scale` applies)."""
    after = retry_after(exc)
    return after if after is not None else backoff_s(attempts)


class Lease:
    """This process's claim on one job's delivery (a `deliveries` row it holds)."""

    def __init__(self, s: Settings, job_id: str, holder: str, row: Delivery):
        self.s = s
        self.job_id = job_id
        self.holder = holder
        self.attempts = row.attempts
        self.give_up_at = row.give_up_at
        self.detail: dict = dict(row.detail or {})
        self._parts_seen = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- holding it

    def __enter__(self) -> Lease:
        period = max(0.05, self.s.delivery_lease_s * self.s.delivery_time_scale / 3)
        self._beat = threading.Thread(
            target=self._renew_every, args=(period,), name=f"lease-{self.job_id}", daemon=True
        )
        self._beat.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)

    def _renew_every(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                if not self._write(lease_until=now() + _scaled(self.s, self.s.delivery_lease_s)):
                    return  # taken over: the next write of this holder says so
            except Exception:
                log.warning("job %s: renewing the delivery lease failed", self.job_id)

    def _write(self, **values) -> bool:
        """Update the row if this holder still holds it; False if it does not."""
        values.setdefault("updated_at", now())
        with session(self.s.database) as db:
            done = db.execute(
                update(Delivery)
                .where(Delivery.job_id == self.job_id, Delivery.holder == self.holder)
                .values(**values)
            )
            return done.rowcount == 1

    def _save(self, **values) -> None:
        if not self._write(detail=dict(self.detail), attempts=self.attempts, **values):
            raise LeaseLost(f"the delivery of job {self.job_id} was taken over")

    # -- what happened

    def tried(self) -> None:
        """A new try of the whole outcome begins (its parts are counted again from the first)."""
        self.attempts += 1
        self._parts_seen = 0
        self._save()

    def past_give_up(self, wait: float) -> bool:
        """True if the next try, `wait` platform seconds from now, is past the give-up time."""
        deadline = self.give_up_at
        if deadline is None:
            return False
        if deadline.tzinfo is None:  # SQLite gives timestamps back naive (they are UTC)
            deadline = deadline.replace(tzinfo=UTC)
        return now() + _scaled(self.s, wait) > deadline

    def note(self, error: str, wait: float) -> None:
        """A transient failure; the holder waits `wait` platform seconds itself."""
        self.detail["error"] = error
        self._save(next_at=now() + _scaled(self.s, wait))

    def release(self, error: str, wait: float) -> None:
        """A transient failure and a long wait: whoever sweeps after `next_at` tries again."""
        self.detail["error"] = error
        self._save(state="waiting", holder=None, lease_until=None,
                   next_at=now() + _scaled(self.s, wait))  # fmt: skip

    def end(self, state: str, **detail) -> None:
        """The delivery is over: `sent`, `failed` (refused for good) or `gave_up`."""
        assert state in FINAL
        self.detail.update(detail)
        self._save(state=state, holder=None, lease_until=None, next_at=None)

    def sending(self, send):
        """Run `send()` (one message of the outcome) as the next part, at most twice."""
        self._parts_seen += 1
        key = str(self._parts_seen)
        parts = self.detail.setdefault("parts", {})
        part = dict(parts.get(key) or {})
        if part.get("sent"):
            return part.get("result")
        if part.pop("in_flight", False):  # its holder died while sending it: it may have gone
            part["lost"] = int(part.get("lost", 0)) + 1
            part["why"] = "the process sending it died before the answer came"
        if int(part.get("lost", 0)) >= 2:  # two sends may have arrived: never a third
            part.update(sent=True, unconfirmed=True)
            parts[key] = part
            self._save()
            return None
        parts[key] = {**part, "in_flight": True}
        self._save()
        try:
            result = send()
        except ANSWER_LOST as exc:
            lost = int(part.get("lost", 0)) + 1
            why = f"{type(exc).__name__}: the request was sent, its answer was lost"
            parts[key] = {**part, "lost": lost, "why": why}
            self._save()
            raise
        except Exception:
            parts[key] = part
            self._save()
            raise
        small = {}
        if isinstance(result, dict):
            small = {k: result[k] for k in ("message_id", "id") if k in result}
        parts[key] = {**part, "sent": True, "result": small}
        self._save()
        return small or result


def claim(s: Settings, job_id: str) -> Lease | None:
    """Take the job's delivery: a new row, or one whose wait is over or whose holder died.
    None if it is delivered, held by a live process, or waiting still."""
    me, at = _holder(), now()
    lease_until = at + _scaled(s, s.delivery_lease_s)
    try:
        with session(s.database) as db:
            db.add(
                Delivery(
                    job_id=job_id,
                    state="sending",
                    attempts=0,
                    detail={},
                    holder=me,
                    lease_until=lease_until,
                    give_up_at=at + _scaled(s, s.delivery_give_up_s),
                )
            )
    except IntegrityError:
        with session(s.database) as db:
            taken = db.execute(
                update(Delivery)
                .where(
                    Delivery.job_id == job_id,
                    or_(
                        and_(Delivery.state == "waiting", Delivery.next_at <= at),
                        and_(Delivery.state == "sending", Delivery.lease_until < at),
                    ),
                )
                .values(state="sending", holder=me, lease_until=lease_until, updated_at=at)
            )
            if taken.rowcount != 1:
                return None
    with session(s.database) as db:
        row = db.get(Delivery, job_id)
        return Lease(s, job_id, me, row) if row is not None and row.holder == me else None


def delivery_state(s: Settings, job_id: str) -> str | None:
    with session(s.database) as db:
        row = db.get(Delivery, job_id)
        return row.state if row is not None else None
