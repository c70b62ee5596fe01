"""Lost jobs: finding jobs whose process died, and running them again or ending them.

A running job touches its row every few seconds, so a row left untouched for
`reap_after_seconds` has no live flow behind it.

- Embedded, the flow ran in a process of Encore (a bot, the CLI) that is gone: it shut down
  and let go of the job (`flows.jobs.release_job`), or it died (its row names a process that
  no longer runs, `flows.jobs.runner_alive`; on another machine, the row went quiet). The next
  process that starts takes the job over and runs it again, reusing what the first run
  finished (cached stems, a training checkpoint); the chat's status message says that Encore
  restarted and the job continues. A process that died counts as an attempt, up to
  `job_attempts`; a shutdown does not. A job nobody can be told about any more (no chat to
  deliver to here: a CLI command's, whose command is gone) ends with a sentence instead.
- In a cluster, a worker (or its machine) died under it. The job runs again, up to
  `job_attempts` runs in all: its dead run is marked crashed in Prefect, and a new run of its
  deployment starts. The rerun picks up what the dead one finished (cached stems, a training
  checkpoint), and the chat still gets one status message and one result, since delivery is
  claimed once per job. A run the operator cancelled in Prefect's UI cancels the job. A run
  that still waits for a worker (scheduled or pending) is queued, not lost, but only for
  `job_start_timeout_s`: then it is cancelled in Prefect (it never starts later) and the job
  fails with a sentence, so a pool nobody serves cannot hold jobs forever.

The `recover-jobs` flow does this, retries deletions that failed (`flows.erase.sweep`),
delivers ended jobs that nobody delivered and sweeps stale uploads and scratch files; a
cluster runs it on an interval schedule (`ENCORE_JANITOR_INTERVAL_S`).
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect import flow
from sqlalchemy import select, update

from flows import erase
from flows.chat import deliver_pending
from flows.db import Job, now, session, untouched_s
from flows.deployments import start_run
from flows.jobs import (
    INTERRUPTED,
    OPEN,
    RELEASED,
    get_job,
    quiet_job_ids,
    reply_target,
    runner_alive,
    this_runner,
)
from flows.settings import Settings, get_settings
from flows.submit import resume
from flows.users import sweep

log = logging.getLogger("encore.recovery")

WAITING = ("SCHEDULED", "PENDING", "PAUSED")  # the run waits for a worker: not lost
CANCELLED = ("CANCELLED", "CANCELLING")


def _run_state(client, run_id: str | None) -> str | None:
    from prefect.exceptions import ObjectNotFound

    if not run_id:
        return None
    try:
        run = client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return None
    return run.state.type.value if run.state is not None else None


def _mark_crashed(client, run_id: str) -> None:
    from prefect.states import Crashed

    message = "Its worker was lost; Encore runs the job again."
    client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)


def not_started(s: Settings) -> str:
    """The sentence a job fails with when no worker started its run in time."""
    from flows.heavy import spoken

    return f"No worker took the job within {spoken(s.job_start_timeout_s)}; please try again later."


def _cancel_waiting(client, run_id: str, s: Settings) -> None:
    """Cancel a run no worker has started: a state it cannot leave, holding no slot."""
    from prefect.states import Cancelled

    message = f"No worker started it within {s.job_start_timeout_s:.0f} s."
    client.set_flow_run_state(UUID(run_id), Cancelled(message=message), force=True)


def _lost(s: Settings, job: Job, me: str) -> str | None:
    """Why nothing runs `job` any more ("released" or "died"), or None if something may."""
    if job.runner == me:
        return None
    if job.runner == RELEASED:
        return "released"
    alive = runner_alive(job.runner)
    if alive is None:  # no process recorded, or another machine's: only the row's age tells
        alive = untouched_s(job) <= s.reap_after_seconds
    return None if alive else "died"


def _deliverable(s: Settings, job: Job) -> bool:
    """Whether this process can tell the job's chat how it goes (it has the platform's token)."""
    reply_to = reply_target(s, job.id)
    if not isinstance(reply_to, dict):
        return False
    tokens = {"telegram": s.telegram_token, "discord": s.discord_token}
    return bool(tokens.get(reply_to.get("platform")))


def resume_lost_jobs(s: Settings) -> dict[str, int]:
    """Embedded: take over the open jobs whose process is gone and run them again here."""
    taken, failed = take_over_lost_jobs(s)
    for job in taken:
        resume(s, job)
    return {"resumed": len(taken), "failed": failed}


def take_over_lost_jobs(s: Settings) -> tuple[list[Job], int]:
    """Embedded: the open jobs whose process is gone become this process's, queued again
    (a job whose process died uses one more attempt; a released one does not); those that
    cannot run again (no chat to tell, or out of attempts) end with INTERRUPTED.

    Returns the jobs taken over, for the caller to run, and how many ended."""
    me = this_runner()
    taken_over: list[Job] = []
    failed = 0
    with session(s.database) as db:
        jobs = list(db.scalars(select(Job).where(Job.state.in_(OPEN))))
    for job in jobs:
        why = _lost(s, job, me)
        if why is None:
            continue
        attempts = job.attempts + (1 if why == "died" else 0)
        fields: dict = {"updated_at": now()}
        if not _deliverable(s, job) or attempts > s.job_attempts:
            fields.update(state="failed", step="done", reason=INTERRUPTED)
        else:
            fields.update(state="queued", step="restarted", runner=me, attempts=attempts)
        # Take it only if nobody else did meanwhile: one process wins, on SQLite too.
        taken = update(Job).where(
            Job.id == job.id,
            Job.state.in_(OPEN),
            Job.runner.is_(None) if job.runner is None else Job.runner == job.runner,
        )
        with session(s.database) as db:
            won = db.execute(taken.values(**fields)).rowcount == 1
        if not won:
            continue
        if fields["state"] == "failed":
            failed += 1
            continue
        log.warning("job %s: its process %s; running it again here", job.id, why)
        taken_over.append(get_job(s, job.id))
    return taken_over, failed


def recover_lost_jobs(s: Settings) -> dict[str, int]:
    """Rerun the jobs nothing is running (or end those that cannot run); counts by outcome."""
    if s.run_mode != "cluster":
        return resume_lost_jobs(s)
    from prefect.client.orchestration import get_client

    counts = {"rerun": 0, "failed": 0, "cancelled": 0}
    with get_client(sync_client=True) as client:
        for job_id in quiet_job_ids(s):
            with session(s.database) as db:
                job = db.get(Job, job_id, with_for_update=True)  # one janitor per job
                if job is None or job.state not in OPEN or untouched_s(job) <= s.reap_after_seconds:
                    continue  # ended or touched meanwhile
                state = _run_state(client, job.flow_run_id)
                if state in WAITING and untouched_s(job) <= s.job_start_timeout_s:
                    continue  # no worker has taken it yet; it is queued, not lost
                if state in WAITING:  # ... for too long: no worker will
                    _cancel_waiting(client, job.flow_run_id, s)
                    job.state, job.step, job.reason = "failed", "done", not_started(s)
                    job.result = {**(job.result or {}), "fault": "ours"}  # costs no quota
                    job.updated_at = now()
                    counts["failed"] += 1
                    log.warning("job %s: no worker started its run; failed", job.id)
                    continue
                if state in CANCELLED:
                    job.state, job.step, job.reason = "cancelled", "done", "Cancelled."
                    job.updated_at = now()
                    counts["cancelled"] += 1
                    continue
                if job.attempts >= s.job_attempts:
                    job.state, job.step, job.reason = "failed", "done", INTERRUPTED
                    job.updated_at = now()
                    counts["failed"] += 1
                    continue
                if job.flow_run_id and state == "RUNNING":
                    _mark_crashed(client, job.flow_run_id)
                job.attempts += 1
                job.updated_at = now()
                log.warning("job %s was lost; starting attempt %d", job.id, job.attempts)
                job.flow_run_id = start_run(s, job.id, job.kind, job.params, job.attempts)
                counts["rerun"] += 1
    return counts


@flow(name="recover-jobs", flow_run_name="recover-jobs", persist_result=False)
def recover_jobs() -> dict:
    """Rerun jobs whose worker died, retry pending deletions, deliver ended jobs nobody
    delivered, and sweep stale upload sessions and old scratch files (`flows.users.sweep`)."""
    s = get_settings()
    found = recover_lost_jobs(s)
    found["erased"] = erase.sweep(s)  # deletions that failed before, what forgotten jobs left
    found["delivered"] = deliver_pending(s)
    found.update(sweep(s))
    return found
