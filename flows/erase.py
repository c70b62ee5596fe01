"""Deleting stored files for good: never skipped, never silent.

Each deletion (a file by URI, or everything under a storage prefix) is tried a few times
(tenacity, on top of boto3's own retries for S3). One that still fails is recorded in
`pending_deletions`; `sweep` retries the recorded ones until they are gone. Callers learn how
many are pending, so `/forget` can tell the user, in one sentence, that some files are not
deleted yet. Once the last file of a `/forget` is gone, the sweeper tells its listeners
(`when_all_gone`; the chat package says so in the chat it was asked in): the only thing kept
about the user meanwhile is where to say so.

The bots' periodic sweep (`flows.api.recover`) and the cluster janitor (`flows.recovery`)
both run `sweep`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from tenacity import Retrying, stop_after_attempt, wait_exponential

from flows.db import Job, PendingDeletion, now, session, untouched_s
from flows.settings import Settings
from flows.storage import open_storage

log = logging.getLogger("encore.erase")

# ("uri", "s3://…" or "file://…"), ("prefix", "covers/<job id>"), or ("job", "<job id>"): a
# forgotten job that may still be running. A "job" is done once its flow has ended (and
# removed its row) or its row has been quiet for `reap_after_seconds`; until then the rows
# recorded after it in the same batch wait, since the job may still store files there.
Target = tuple[str, str]

ATTEMPTS = 3  # tries of one deletion, each with the storage client's own retries


def uri(value: str) -> Target:
    return ("uri", value)


def prefix(key: str) -> Target:
    return ("prefix", key)


def job(job_id: str) -> Target:
    return ("job", job_id)


class StillRunning(Exception):
    """A forgotten job has not stopped yet."""


def _delete(storage, target: Target) -> None:
    kind, value = target
    if kind == "uri":
        storage.delete(value)
    elif kind == "prefix":
        storage.delete_prefix(value)
    else:
        raise ValueError(f"unknown deletion kind {kind!r}")


def _job_stopped(s: Settings, job_id: str) -> bool:
    """True (and its row deleted) once a forgotten job's flow is surely over."""
    with session(s.database) as db:
        row = db.get(Job, job_id, with_for_update=True)
        if row is None:
            return True
        if untouched_s(row) <= s.reap_after_seconds:
            return False
        db.delete(row)
        return True


def _try(s: Settings, storage, target: Target) -> str | None:
    """Delete `target`, retrying; None when gone, else what went wrong."""
    if target[0] == "job":
        if not _job_stopped(s, target[1]):
            raise StillRunning(target[1])
        return None
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            reraise=True,
        ):
            with attempt:
                _delete(storage, target)
    except ValueError as exc:  # not a place in our storage: no retry can delete it
        log.error("cannot delete %s %s: %s", *target, exc)
        return None
    except Exception as exc:
        log.warning("could not delete %s %s: %s", *target, exc)
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def schedule(
    db: Session, targets: Iterable[Target], batch: str | None = None, notify: dict | None = None
) -> list[int]:
    """Record `targets` as to be deleted, in the caller's transaction (so that rows and files
    go together: should the process die before `attempt`, the sweeper finishes). They are
    tried in this order; a target may come twice (again after a job, to sweep what it left)."""
    rows = [
        PendingDeletion(kind=kind, target=value, batch=batch, notify=notify)
        for kind, value in targets
    ]
    db.add_all(rows)
    db.flush()
    return [row.id for row in rows]


def attempt(s: Settings, ids: list[int]) -> int:
    """Try the recorded deletions `ids` now; returns how many are still pending.

    When one fails, the storage is taken to be down and the rest wait for the sweeper, so a
    user is not kept waiting through every file's retries.
    """
    return _attempt(s, ids)[0]


def _attempt(s: Settings, ids: list[int]) -> tuple[int, set[str]]:
    """(how many of `ids` are still pending, the batches this call deleted rows of)."""
    storage = open_storage(s.storage)
    with session(s.database) as db:
        query = select(PendingDeletion).where(PendingDeletion.id.in_(ids))
        rows = list(db.scalars(query.order_by(PendingDeletion.id)))
    failed: str | None = None
    waiting: set[str | None] = set()  # batches behind a job that is still running
    touched: set[str] = set()
    for row in rows:
        if row.batch in waiting:
            continue
        if failed is None:
            try:
                failed = _try(s, storage, (row.kind, row.target))
            except StillRunning:
                waiting.add(row.batch)
                continue
            if failed is None:
                with session(s.database) as db:
                    gone = db.execute(delete(PendingDeletion).where(PendingDeletion.id == row.id))
                if gone.rowcount and row.batch:
                    touched.add(row.batch)
                continue
        with session(s.database) as db:
            found = db.get(PendingDeletion, row.id)
            if found is not None:
                found.attempts += 1
                found.error, found.updated_at = failed, now()
    return len(rows) - _gone(s, ids), touched


def _gone(s: Settings, ids: list[int]) -> int:
    with session(s.database) as db:
        left = db.scalars(select(PendingDeletion.id).where(PendingDeletion.id.in_(ids))).all()
    return len(ids) - len(left)


def erase(s: Settings, targets: Iterable[Target]) -> int:
    """Delete `targets` now; what still fails is recorded for the sweeper. Returns how many
    are pending (0: all gone). For a job's own cleanup, where most deletions succeed."""
    storage = open_storage(s.storage)
    targets = list(dict.fromkeys(targets))
    for i, target in enumerate(targets):
        if _try(s, storage, target) is not None:
            with session(s.database) as db:
                schedule(db, targets[i:])
            return len(targets) - i
    return 0


def batch_state(s: Settings, batch: str) -> tuple[int, int]:
    """(files of the batch whose deletion failed, jobs of the batch still stopping)."""
    with session(s.database) as db:
        rows = list(db.scalars(select(PendingDeletion).where(PendingDeletion.batch == batch)))
    failed = sum(1 for row in rows if row.kind != "job" and row.attempts > 0)
    return failed, sum(1 for row in rows if row.kind == "job")


def pending(s: Settings) -> list[PendingDeletion]:
    with session(s.database) as db:
        return list(db.scalars(select(PendingDeletion).order_by(PendingDeletion.id)))


def sweep(s: Settings, min_age: timedelta = timedelta(0)) -> int:
    """Retry every recorded deletion not tried for `min_age`; returns how many are done.

    A `/forget` whose last file is gone is told so in its chat."""
    with session(s.database) as db:
        rows = list(
            db.scalars(
                select(PendingDeletion)
                .where(PendingDeletion.updated_at <= now() - min_age)
                .order_by(PendingDeletion.id)
            )
        )
    if not rows:
        return 0
    left, touched = _attempt(s, [row.id for row in rows])
    done = len(rows) - left
    batches = {row.batch: row.notify for row in rows if row.batch in touched}
    for batch, notify in batches.items():  # the sweeper that deleted a batch's last file tells
        with session(s.database) as db:
            open_rows = db.scalar(
                select(PendingDeletion.id).where(PendingDeletion.batch == batch).limit(1)
            )
        if open_rows is None and notify:
            _all_gone(s, notify)
    return done


# Told when the last file of a `/forget` is gone, with the `notify` its batch was recorded
# with (the chat it was asked in): the chat package registers one (`flows.chat`).
AllGone = Callable[[Settings, dict], None]
_all_gone_listeners: list[AllGone] = []


def when_all_gone(listener: AllGone) -> AllGone:
    """Call `listener(s, notify)` once a `/forget`'s last file is deleted (once per listener)."""
    if listener not in _all_gone_listeners:
        _all_gone_listeners.append(listener)
    return listener


def _all_gone(s: Settings, notify: dict) -> None:
    for listener in list(_all_gone_listeners):
        try:
            listener(s, notify)
        except Exception:  # best effort: the deletion is what matters
            log.warning("could not say that a /forget finished", exc_info=True)
