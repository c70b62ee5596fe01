"""Lost jobs: finding jobs whose process died, and running them again or ending them.

A running job touches its row every few seconds, so a row left untouched for
`reap_after_seconds` has no live flow behind it.

- Embedded, the flow ran in a process that is gone: the job fails with a sentence saying so.
- In a cluster, a worker (or its machine) died under it. The job runs again, up to
  `job_attempts` runs in all: its dead run is marked crashed in Prefect, and a new run of its
  deployment starts. The rerun picks up what the dead one finished (cached stems, a training
  checkpoint), and the chat still gets one status message and one result, since delivery is
  claimed once per job. A run the operator cancelled in Prefect's UI cancels the job.

The `recover-jobs` flow does this, retries deletions that failed (`flows.erase.sweep`),
delivers ended jobs that nobody delivered and sweeps stale uploads and scratch files; a
cluster runs it on an interval schedule (`ENCORE_JANITOR_INTERVAL_S`).
"""

from __future__ import annotations

import logging
from uuid import UUID

from prefect import flow

from flows.db import Job, now, session
from flows.jobs import INTERRUPTED, OPEN, quiet_job_ids, reap_interrupted, untouched_s
from flows.settings import Settings, get_settings

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


def recover_lost_jobs(s: Settings) -> dict[str, int]:
    """Rerun (cluster) or end (embedded) the jobs nothing is running; counts by outcome."""
    if s.run_mode != "cluster":
        return {"failed": reap_interrupted(s)}
    from prefect.client.orchestration import get_client

    from flows.deployments import start_run

    counts = {"rerun": 0, "failed": 0, "cancelled": 0}
    with get_client(sync_client=True) as client:
        for job_id in quiet_job_ids(s):
            with session(s.database) as db:
                job = db.get(Job, job_id, with_for_update=True)  # one janitor per job
                if job is None or job.state not in OPEN or untouched_s(job) <= s.reap_after_seconds:
                    continue  # ended or touched meanwhile
                state = _run_state(client, job.flow_run_id)
                if state in WAITING:
                    continue  # no worker has taken it yet; it is queued, not lost
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
    from flows import erase
    from flows.delivery import deliver_pending
    from flows.users import sweep

    s = get_settings()
    found = recover_lost_jobs(s)
    found["erased"] = erase.sweep(s)  # deletions that failed before, what forgotten jobs left
    found["delivered"] = deliver_pending(s)
    found.update(sweep(s))
    return found
