"""Submitting jobs and following them: the API the CLI and the bots call.

`submit_*` creates the job row (one per idempotency key) and starts its flow, returning the
job id at once. Embedded, the flow runs in this process on a worker thread; in a cluster
(`ENCORE_RUN_MODE=cluster`) it is submitted to the job's deployment with
`run_deployment(timeout=0)` and a worker runs it (`flows.deployments`). `follow` polls the
job row until it ends, reporting each change, which works the same wherever the flow runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flows import backend
from flows.cover import make_cover
from flows.db import TERMINAL, Job
from flows.deployments import start_run
from flows.errors import ConsentNeeded, UserError, worded
from flows.jobs import (
    GENERIC_FAILURE,
    SERVER_DOWN,
    create_job,
    get_job,
    run_parameters,
    stopping,
    this_runner,
    update_job,
)
from flows.separation import karaoke, stems
from flows.settings import Settings, get_settings
from flows.storage import open_storage, upload_key
from flows.training import import_voice_flow, train_voice
from flows.users import create_counted_job
from flows.voices import valid_name

log = logging.getLogger("encore.submit")


@dataclass(frozen=True)
class JobInfo:
    """What a user sees of a job (the CLI, the bots through `flows.api`): a copy of its row.

    `headline` (what the chat calls the job) and `reply_to` (the chat it reports to) are
    filled in by `flows.api` for the bots; `view` and `follow` leave them empty."""

    id: str
    kind: str
    state: str
    step: str
    progress: float
    reason: str | None
    result: dict
    created_at: datetime | None = None
    headline: str = ""
    reply_to: dict | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def open(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def undelivered(self) -> str | None:
        """Why a finished result never reached the chat (the delivery's give-up sentence)."""
        return (self.result or {}).get("undelivered")

    @classmethod
    def of(cls, job: Job, headline: str = "", reply_to: dict | None = None) -> JobInfo:
        return cls(
            job.id,
            job.kind,
            job.state,
            job.step,
            job.progress,
            job.reason,
            dict(job.result or {}),
            job.created_at,
            headline,
            reply_to,
        )


_threads: dict[str, threading.Thread] = {}

# The flow each kind of job runs in-process (module path, imported when first needed).
JOB_FLOW_FNS = {
    "cover": "flows.cover.make_cover",
    "stems": "flows.separation.stems",
    "karaoke": "flows.separation.karaoke",
    "train": "flows.training.train_voice",
    "import": "flows.training.import_voice_flow",
}


def flow_fn_of(kind: str) -> Callable:
    module, name = JOB_FLOW_FNS[kind].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _lower_priority(nice: int) -> None:
    """Give this thread, and the threads and processes it starts (Prefect's, the engine's,
    ffmpeg), a lower CPU priority than the process's own, so a bot running jobs in-process
    keeps answering commands at once however many jobs are running or waiting (on Linux a
    thread has a priority of its own, inherited by what it creates)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError as exc:  # a sandbox may forbid it: the job still runs
        log.debug("could not lower the priority of a job thread: %s", exc)


def _start(s: Settings, job_id: str, flow_fn: Callable, kwargs: dict) -> None:
    """Run the job's flow on a thread of this process; the Prefect backend starts first."""
    backend.start(s)  # once per process, before any flow thread (no-op with a server)

    def target() -> None:
        _lower_priority(s.job_nice)
        try:
            flow_fn(**kwargs)
        except Exception:  # the job row already says what the user needs to know
            log.exception("flow for job %s raised", job_id)

    thread = threading.Thread(target=target, name=f"job-{job_id}", daemon=False)
    _threads[job_id] = thread
    thread.start()


def _start_deployment(s: Settings, job_id: str, kind: str, params: dict, attempt: int) -> None:
    """Hand the job to the Prefect server; a job the server did not take ends at once, so
    nothing runs it later behind the user's back."""
    try:
        run_id = start_run(s, job_id, kind, params, attempt)
    except Exception as exc:
        log.warning("could not submit job %s: %s", job_id, exc)
        update_job(s, job_id, state="failed", step="done", reason=SERVER_DOWN)
        raise UserError(SERVER_DOWN) from exc
    update_job(s, job_id, flow_run_id=run_id)


def _submit(
    s: Settings,
    kind: str,
    owner: str,
    params: dict,
    key: str | None,
    flow_fn: Callable,
    reply_to: dict | None = None,
    quota: bool = False,
) -> str:
    """Make the job (counted against the owner's quotas when `quota`: a refusal raises
    `flows.users.QuotaExceeded` with nothing made) and start its flow.

    The reply target (where the flow reports progress and delivers, `flows.chat`) is kept
    in the database; the parameters, which Prefect stores, hold ids and options only."""
    embedded = s.run_mode != "cluster"
    runner = this_runner() if embedded else None
    if quota:
        job_id = create_counted_job(
            s, kind, owner, params, idempotency_key=key, reply_to=reply_to, runner=runner
        )
    else:
        job_id = create_job(
            s, kind, owner, params, idempotency_key=key, reply_to=reply_to, runner=runner
        )
    job = get_job(s, job_id)
    if job is None or job.state != "queued":
        return job_id
    if not embedded:
        if job.flow_run_id is None:
            _start_deployment(s, job_id, kind, job.params, job.attempts)
    elif job_id not in _threads and job.runner == runner:
        # (a repeated submission of another process's job is that process's to run, or,
        # if it died, the next recovery's: `flows.recovery`)
        try:
            _start(s, job_id, flow_fn, run_parameters(kind, job_id, params))
        except Exception as exc:  # the Prefect backend did not start: nothing will run it
            log.warning("could not start job %s: %s", job_id, exc)
            update_job(s, job_id, state="failed", step="done", reason=SERVER_DOWN)
            raise UserError(SERVER_DOWN) from exc
    return job_id


def resume(s: Settings, job: Job) -> None:
    """Run again, in this process, an open job this process has just taken over."""
    if job.id not in _threads:
        _start(s, job.id, flow_fn_of(job.kind), run_parameters(job.kind, job.id, job.params))


@worded
def submit_cover(
    owner: str,
    song_id: str,
    voice_id: str,
    options: dict | None = None,
    idempotency_key: str | None = None,
    s: Settings | None = None,
    reply_to: dict | None = None,
    quota: bool = False,
    link: str | None = None,
    chart: dict | None = None,
) -> str:
    """A cover of catalog song `song_id`, or (with `song_id` None) of the song at `link`,
    which the job fetches first (`flows.links`; refused at once when links are off)."""

    params = {"song_id": song_id, "voice_id": voice_id, "options": options or {}}
    if link:
        from flows.links import normalize, require_enabled

        s = s or get_settings()
        require_enabled(s)
        params["link"] = normalize(link)
    if chart:  # a chart song the resolver fetches (`flows.resolver`)
        from flows.links import require_enabled

        s = s or get_settings()
        require_enabled(s)
        params["chart"] = {"artist": str(chart["artist"]), "title": str(chart["title"])}
    return _submit(
        s or get_settings(), "cover", owner, params, idempotency_key, make_cover, reply_to, quota
    )


@worded
def submit_stems(
    owner: str,
    song_id: str,
    idempotency_key: str | None = None,
    s: Settings | None = None,
    reply_to: dict | None = None,
    quota: bool = False,
    options: dict | None = None,
) -> str:
    """`options`: `{"six": True}` for six stems (guitar and piano too)."""
    params = {"song_id": song_id, "options": options or {}}
    return _submit(
        s or get_settings(), "stems", owner, params, idempotency_key, stems, reply_to, quota
    )


@worded
def submit_karaoke(
    owner: str,
    song_id: str,
    options: dict | None = None,
    idempotency_key: str | None = None,
    s: Settings | None = None,
    reply_to: dict | None = None,
    quota: bool = False,
) -> str:
    params = {"song_id": song_id, "options": options or {}}
    return _submit(
        s or get_settings(), "karaoke", owner, params, idempotency_key, karaoke, reply_to, quota
    )


def stage_upload(owner: str, local: Path, filename: str, s: Settings | None = None) -> str:
    """Put a file a user sent into temporary storage; returns its URI for a `submit_*` call.

    Uploads live under `tmp/uploads/`, a prefix a lifecycle rule may expire; the job that
    consumes them deletes them when it ends.
    """
    s = s or get_settings()
    return open_storage(s.storage).put(Path(local), upload_key(owner, filename))


@worded
def submit_training(
    owner: str,
    name: str,
    samples: list[str],
    consent: bool,
    options: dict | None = None,
    idempotency_key: str | None = None,
    s: Settings | None = None,
    reply_to: dict | None = None,
    quota: bool = False,
) -> str:
    """Train voice `name` for `owner` from sample URIs (see `stage_upload`).

    Raises ConsentNeeded or UserError at once, with no job made, when consent is missing or
    the name is bad.
    """
    if not consent:
        raise ConsentNeeded()
    params = {
        "owner": owner,
        "name": valid_name(name),
        "samples": list(samples),
        "consent": True,
        "options": options or {},
    }
    return _submit(
        s or get_settings(), "train", owner, params, idempotency_key, train_voice, reply_to, quota
    )


@worded
def submit_import(
    owner: str,
    name: str,
    files: list[str],
    idempotency_key: str | None = None,
    s: Settings | None = None,
    reply_to: dict | None = None,
    quota: bool = False,
    links: list[str] | None = None,
) -> str:
    """Import an RVC model (URIs of a `.pth`, `.index` or `.zip`, and/or `links` to them,
    which the job downloads first) as `owner`'s voice `name`."""
    from flows.voices import valid_name

    params = {"owner": owner, "name": valid_name(name), "files": list(files)}
    if links:
        from flows.links import normalize, require_enabled

        s = s or get_settings()
        require_enabled(s, model=True)
        params["links"] = [normalize(url) for url in links]
    return _submit(
        s or get_settings(),
        "import",
        owner,
        params,
        idempotency_key,
        import_voice_flow,
        reply_to,
        quota,
    )


def running_here() -> list[str]:
    """Jobs whose flows run on threads of this process now (embedded mode)."""
    return [job_id for job_id, thread in list(_threads.items()) if thread.is_alive()]


def wait_running(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for the job threads of this process to end; the ids of
    those still running."""
    deadline = time.monotonic() + timeout
    for thread in list(_threads.values()):
        thread.join(max(0.0, deadline - time.monotonic()))
    return running_here()


def view(job_id: str, s: Settings | None = None) -> JobInfo | None:
    job = get_job(s or get_settings(), job_id)
    return JobInfo.of(job) if job is not None else None


def follow(
    job_id: str,
    on_change: Callable[[JobInfo], None] | None = None,
    poll_seconds: float = 0.25,
    timeout: float | None = None,
    s: Settings | None = None,
) -> JobInfo:
    """Wait for the job to end, calling `on_change` whenever its step or progress moves."""
    s = s or get_settings()
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        current = view(job_id, s)
        if current is None:
            raise KeyError(job_id)
        if on_change is not None and current != last:
            on_change(current)
        last = current
        thread = _threads.get(job_id)
        if current.done:
            if thread is not None:
                thread.join()
                _threads.pop(job_id, None)
            return current
        if thread is not None and not thread.is_alive():
            # The flow ended without touching the row (it crashed before starting).
            final = view(job_id, s)
            if final is not None and final.done:
                continue
            if stopping():  # stopped by this process's shutdown: left open, to resume
                return final
            update_job(s, job_id, state="failed", step="done", reason=GENERIC_FAILURE)
            continue
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(poll_seconds)
