"""Job rows: create, move through steps, and always end in a state the user can see.

`run_job` is the one wrapper every flow body runs in. It turns any failure into a terminal row
with a short reason, removes what the job half-wrote, and never lets a traceback reach a user.
It tells the job's observers (`observe_jobs`) how the job goes and when it ended: that is how
a chat hears of its job (`flows.chat` registers an observer per platform), and this module
knows nothing of chats.

While a job runs, `watch_job` watches its row: a user's cancel, or this process shutting down
(`stop_all_jobs`), stops the work within seconds through the engine's stop check
(`gpu_worker.cancel`). A shutdown never fails a job: it is released (`release_job`) for the
next process to resume. An embedded job's row names the process that runs it (`this_runner`),
so a starting process can tell a dead process's jobs from a live one's (`flows.recovery`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from flows.db import TERMINAL, Job, ReplyTarget, StepRun, engine_for, now, session, untouched_s
from flows.erase import erase, prefix, uri
from flows.errors import EXPECTED, user_message
from flows.settings import Settings
from gpu_worker import cancel, loads
from gpu_worker.errors import Crashed, ModelMissing

log = logging.getLogger("encore.jobs")

GENERIC_FAILURE = "Something went wrong on our side; please try again in a few minutes."


class JobCancelled(Exception):
    """The user cancelled the job; the flow stops at its next check (see `watch_job`)."""


class JobInterrupted(JobCancelled):
    """This process is shutting down: the job stops like a cancelled one, but stays open, and
    runs again when Encore starts again (`flows.recovery`)."""


# ------------------------------------------------------------------------------------------
# Which process runs a job (embedded mode)

RELEASED = "released"  # the runner of a job that its process let go of when shutting down


def _proc_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot), or "" where /proc cannot say."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def this_runner() -> str:
    """This process, as recorded on the jobs it runs: host, boot, pid and start time, so a
    later process with the same pid (a restarted container's pid 1) is not taken for it."""
    pid = os.getpid()
    return f"{socket.gethostname()[:100]}|{_boot_id()}|{pid}|{_proc_start(pid)}"


def runner_alive(runner: str | None) -> bool | None:
    """Whether the process that `runner` names still runs; None when this host cannot tell
    (no runner recorded, or another machine): then only the row's age tells."""
    if not runner or runner == RELEASED:
        return None
    try:
        host, boot, pid_text, started = runner.split("|")
        pid = int(pid_text)
    except ValueError:
        return None  # not a runner this code wrote: only the row's age tells
    if host != socket.gethostname()[:100] or boot != _boot_id():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # the pid exists but is another user's: its start time below tells if it is ours
    return _proc_start(pid) == started


# ------------------------------------------------------------------------------------------
# Stopping jobs: a user's cancel, or this process shutting down

_stopping = threading.Event()
WATCH_S = 0.5  # how often a running job looks whether it was cancelled


def stop_all_jobs() -> None:
    """This process is shutting down: every job it runs stops within seconds and is left
    open for the next start to resume (`JobInterrupted`)."""
    _stopping.set()


def stopping() -> bool:
    return _stopping.is_set()


@contextmanager
def watch_job(s: Settings, job_id: str) -> Iterator[Callable[[], None]]:
    """While the block runs, a thread of this process watches the job's row: it notices a
    cancel within `WATCH_S` and touches the row every `heartbeat_s` (the row stays fresh as
    long as the process lives). Yields the stop check, also installed for the engine
    (`gpu_worker.cancel`): it raises JobInterrupted when the process shuts down and
    JobCancelled once the job is cancelled; heavy loops and subprocesses poll it."""
    cancelled = threading.Event()
    done = threading.Event()

    def watch() -> None:
        touched = time.monotonic()
        while not done.wait(WATCH_S):
            try:
                job = get_job(s, job_id)
                if job is None or job.state == "cancelled":
                    cancelled.set()
                    return
                if time.monotonic() - touched > heartbeat_s(s):
                    update_job(s, job_id)
                    touched = time.monotonic()
            except Exception:  # a database hiccup: look again next time
                log.warning("watching job %s failed", job_id, exc_info=True)

    def check() -> None:
        if _stopping.is_set():
            raise JobInterrupted()
        if cancelled.is_set():
            raise JobCancelled()

    thread = threading.Thread(target=watch, name=f"watch-{job_id}", daemon=True)
    thread.start()
    try:
        with cancel.watching(check):
            yield check
    finally:
        done.set()
        thread.join()


def create_job(
    s: Settings,
    kind: str,
    owner: str,
    params: dict,
    idempotency_key: str | None = None,
    reply_to: dict | None = None,
    runner: str | None = None,
) -> str:
    """A new queued job, or the existing one with the same idempotency key."""
    engine_for(s.database)  # migrate first: only a clash of keys may be caught below
    try:
        with session(s.database) as db:
            return insert_job(db, kind, owner, params, idempotency_key, reply_to, runner).id
    except IntegrityError:
        if idempotency_key is None:
            raise
        return job_id_by_key(s, idempotency_key)


def insert_job(
    db,
    kind: str,
    owner: str,
    params: dict,
    idempotency_key: str | None = None,
    reply_to: dict | None = None,
    runner: str | None = None,
) -> Job:
    """Add a queued job in the open transaction `db` (a clash of idempotency keys raises
    IntegrityError at commit or flush).

    `reply_to` (the chat to report to, see `flows.chat`) is kept in its own table, never
    in `params`: parameters go to Prefect, and must name nobody. `runner` names the process
    that will run it in-process (`this_runner`), for embedded jobs.
    """
    job = Job(kind=kind, owner=owner, params=params, idempotency_key=idempotency_key, runner=runner)
    db.add(job)
    db.flush()
    if reply_to is not None:
        db.add(ReplyTarget(job_id=job.id, target=reply_to))
    return job


def job_id_by_key(s: Settings, idempotency_key: str) -> str:
    """The job made earlier with `idempotency_key`."""
    with session(s.database) as db:
        return db.scalars(select(Job.id).where(Job.idempotency_key == idempotency_key)).one()


def get_job(s: Settings, job_id: str) -> Job | None:
    with session(s.database) as db:
        return db.get(Job, job_id)


def reply_target(s: Settings, job_id: str) -> dict | None:
    """Where the job reports to (a chat), or None: a job from the CLI, or a forgotten user."""
    with session(s.database) as db:
        row = db.get(ReplyTarget, job_id)
        return dict(row.target) if row is not None and isinstance(row.target, dict) else None


def update_job(s: Settings, job_id: str, **fields: Any) -> None:
    """Change a running job; a job already in a terminal state is never reopened."""
    with session(s.database) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL:
            return
        for key, value in fields.items():
            setattr(job, key, value)
        job.updated_at = now()


def cancel_job(s: Settings, job_id: str) -> bool:
    """Mark a job cancelled; a running flow notices at its next step."""
    with session(s.database) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL:
            return False
        job.state, job.step, job.reason = "cancelled", "done", "Cancelled."
        job.updated_at = now()
        return True


OPEN = ("queued", "running")
INTERRUPTED = "The job was interrupted before it finished; please run it again."
SERVER_DOWN = "Encore's job server is not answering; please try again in a few minutes."
# Failures that are Encore's, not the user's: they use up no quota (`flows.users`).
OUR_FAILURES = (GENERIC_FAILURE, INTERRUPTED, SERVER_DOWN)


def failed_on_our_side(job: Job) -> bool:
    """Did the job fail for a reason of ours (a crash, a restart, a server down)?

    Any other failure comes from what the user sent, and counts against their quota.
    """
    if job.state != "failed":
        return False
    return job.reason in OUR_FAILURES or (job.result or {}).get("fault") == "ours"


def heartbeat_s(s: Settings) -> float:
    """How often a live process touches its job's row: well inside `reap_after_seconds`."""
    return max(0.5, min(20.0, s.reap_after_seconds / 4))


@contextmanager
def heartbeat(s: Settings, job_id: str) -> Iterator[None]:
    """Touch the job's row every `heartbeat_s` while the block runs, from a thread of this
    process: the row stays fresh exactly as long as the process is alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s(s)):
            try:
                update_job(s, job_id)
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("heartbeat of job %s failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def quiet_job_ids(s: Settings, idle_seconds: float | None = None) -> list[str]:
    """Open jobs that nothing has touched for `idle_seconds` (default `reap_after_seconds`).

    A live job's process keeps its row fresh (steps report progress, heavy steps and waiting
    jobs beat a heartbeat), so a job this quiet has no process behind it. Callers lock each
    row and look again (`untouched_s`) before acting on it.
    """
    idle = s.reap_after_seconds if idle_seconds is None else idle_seconds
    with session(s.database) as db:
        rows = db.scalars(select(Job).where(Job.state.in_(OPEN)))
        return [job.id for job in rows if untouched_s(job) > idle]


def reap_interrupted(s: Settings, idle_seconds: float | None = None) -> int:
    """End the quiet jobs (their process died): every job ends where users see it."""
    idle = s.reap_after_seconds if idle_seconds is None else idle_seconds
    reaped = 0
    for job_id in quiet_job_ids(s, idle):
        with session(s.database) as db:
            job = db.get(Job, job_id, with_for_update=True)
            if job is None or job.state not in OPEN or untouched_s(job) <= idle:
                continue  # ended or touched meanwhile
            job.state, job.step, job.reason = "failed", "done", INTERRUPTED
            job.updated_at = now()
            reaped += 1
    return reaped


def step_runs(s: Settings, job_id: str) -> list[StepRun]:
    with session(s.database) as db:
        return list(db.scalars(select(StepRun).where(StepRun.job_id == job_id)))


class StepRecord:
    """What a step reports about itself: whether a cache served it, and anything else."""

    def __init__(self) -> None:
        self.cached = False
        self.detail: dict = {}


@contextmanager
def job_step(s: Settings, job_id: str, step: str, progress: float) -> Iterator[StepRecord]:
    """Enter `step`: show it on the job, then record its time and cache use."""
    cancel.checkpoint()
    job = get_job(s, job_id)
    if job is not None and job.state == "cancelled":
        raise JobCancelled()
    update_job(s, job_id, state="running", step=step, progress=progress)
    record = StepRecord()
    start = time.perf_counter()
    loaded = loads.total()
    yield record
    # Models the step loaded (none when a warm worker had them resident, `flows.warm`).
    detail = {**record.detail, "models_loaded": loads.total() - loaded}
    with session(s.database) as db:
        db.add(
            StepRun(
                job_id=job_id,
                step=step,
                cached=record.cached,
                seconds=time.perf_counter() - start,
                detail=detail,
            )
        )


def job_progress(
    s: Settings, job_id: str, start: float, end: float, every_s: float = 1.0
) -> Callable[[float], None]:
    """A progress callback for an engine call spanning [start, end] of the job's bar.

    It writes at most once every `every_s` seconds, and stops the work (by raising
    JobCancelled) once the user has cancelled the job. It may be called from the engine's
    own threads: the job's stop check (`watch_job`) is taken along, and polled on every call.
    """
    last = [0.0]
    stop = cancel.current()

    def report(fraction: float) -> None:
        if stop is not None:
            stop()
        moment = time.monotonic()
        if moment - last[0] < every_s:
            return
        last[0] = moment
        job = get_job(s, job_id)
        if job is not None and job.state == "cancelled":
            raise JobCancelled()
        update_job(s, job_id, progress=start + (end - start) * min(max(fraction, 0.0), 1.0))

    return report


def job_workdir(s: Settings, job_id: str) -> Path:
    path = s.work_dir / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_key_prefix(job_id: str) -> str:
    """Storage prefix for a job's intermediate files (removed when the job ends)."""
    return f"tmp/jobs/{job_id}"


def job_prefixes(job_id: str) -> list[str]:
    """Every storage prefix a job writes under: its results and its scratch."""
    return [f"covers/{job_id}", f"results/{job_id}", job_key_prefix(job_id)]


# ------------------------------------------------------------------------------------------
# Observers: who hears how a job goes (a chat, through `flows.chat`)


class JobObserver(Protocol):
    """Follows one job for someone outside the runner. `run_job` calls `started` before the
    job runs, `progressed` with the job's row every `every_s` seconds while it is open, and
    `ended` once the runner is done with it (ended, or left open for a later process). An
    observer's failure is logged, never the job's. While the job waits in line, `progressed`
    comes every `waiting_every_s` seconds instead (a long line then costs the database little).
    """

    every_s: float
    waiting_every_s: float

    def started(self) -> None: ...

    def progressed(self, job: Job) -> None: ...

    def ended(self) -> None: ...


# Given a job, an observer for it, or None when it has nobody to tell.
ObserverFactory = Callable[[Settings, str], "JobObserver | None"]
_observer_factories: list[ObserverFactory] = []


def observe_jobs(factory: ObserverFactory) -> ObserverFactory:
    """Give every job run in this process an observer made by `factory` (once per factory):
    each chat platform registers its courier (`flows.chat`)."""
    if factory not in _observer_factories:
        _observer_factories.append(factory)
    return factory


def _call(observer: JobObserver, what: str, *args) -> None:
    try:
        getattr(observer, what)(*args)
    except Exception:  # telling someone how a job goes is never worth failing the job for
        log.warning("job observer %s.%s failed", type(observer).__name__, what, exc_info=True)


def _observers(s: Settings, job_id: str) -> list[JobObserver]:
    found = []
    for factory in list(_observer_factories):
        try:
            observer = factory(s, job_id)
        except Exception:
            log.warning("job %s: no observer from %s", job_id, factory, exc_info=True)
            continue
        if observer is not None:
            found.append(observer)
    return found


@contextmanager
def _observed(s: Settings, job_id: str) -> Iterator[None]:
    """While the block runs, a thread of this process reads the job's row and hands it to the
    job's observers, until the job ends; then each observer hears that the runner is done."""
    observers = _observers(s, job_id)
    if not observers:
        yield
        return
    for observer in observers:
        _call(observer, "started")
    stop = threading.Event()

    def feed() -> None:
        # A running job is read often (its progress moves); one waiting in line only as often
        # as the observers may speak, so a long line costs the database little.
        running_poll = max(0.05, min(0.5, min(o.every_s for o in observers)))
        waiting_poll = max(running_poll, min(o.waiting_every_s for o in observers))
        poll = running_poll
        while not stop.wait(poll):
            try:
                job = get_job(s, job_id)
            except Exception:  # a database hiccup: look again next time
                log.warning("job %s: reading it for its observers failed", job_id)
                continue
            if job is None or job.state in TERMINAL:
                return
            poll = waiting_poll if job.state == "queued" else running_poll
            for observer in observers:
                _call(observer, "progressed", job)

    thread = threading.Thread(target=feed, name=f"observe-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        for observer in observers:
            _call(observer, "ended")


# What of a job's parameters its flow run carries: ids and options, which Prefect stores and
# shows. Whatever else the job was given (its owner, a voice's name, uploaded files, links)
# stays in the job's row, where the flow reads it (`job_params`), and goes with `/forget`.
RUN_PARAMETERS: dict[str, tuple[str, ...]] = {
    "cover": ("song_id", "voice_id", "options", "chart"),
    "stems": ("song_id", "options"),
    "karaoke": ("song_id", "options"),
    "train": ("options",),
    "import": (),
}


def run_parameters(kind: str, job_id: str, params: dict | None) -> dict:
    """The parameters of job `job_id`'s flow run (see `RUN_PARAMETERS`)."""
    keep = RUN_PARAMETERS[kind]
    return {"job_id": job_id, **{k: v for k, v in (params or {}).items() if k in keep}}


def job_params(s: Settings, job_id: str) -> dict:
    """The parameters job `job_id` was submitted with ({} once its row is gone)."""
    job = get_job(s, job_id)
    return dict(job.params or {}) if job is not None else {}


def queue_position(s: Settings, job: Job) -> int:
    """1 for the next job to start; counts queued jobs submitted before this one."""
    with session(s.database) as db:
        ahead = db.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.state == "queued", Job.created_at < job.created_at, Job.id != job.id)
        )
    return int(ahead or 0) + 1


# ------------------------------------------------------------------------------------------
# Running a job

FORGOTTEN = "forgotten"  # the owner of a job whose user was forgotten while it ran


def run_job(s: Settings, job_id: str, body: Callable[[Path], dict]) -> dict:
    """Run `body(workdir)` as job `job_id`; end the row in a terminal state whatever happens.

    The body waits for a free slot first (`max_running_jobs`; users see their place in line).
    The job's observers (`observe_jobs`; for a job from a chat, its platform's courier, which
    edits the status message and posts the outcome once) hear how it goes and that it ended.
    """
    job = get_job(s, job_id)
    if job is not None and job.state in TERMINAL:  # a late duplicate run: nothing to do
        return {"state": job.state, **(job.result or {})}
    try:
        with _observed(s, job_id):
            return _run(s, job_id, body)
    finally:
        _drop_if_forgotten(s, job_id)


def _drop_if_forgotten(s: Settings, job_id: str) -> None:
    """The flow of a job whose user was forgotten has ended: its row goes, and whatever it
    stored meanwhile (the sweeper also looks, `flows.erase`)."""
    with session(s.database) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.owner != FORGOTTEN:
            return
        db.delete(job)
    erase(s, [prefix(p) for p in job_prefixes(job_id)])


def _run(s: Settings, job_id: str, body: Callable[[Path], dict]) -> dict:
    from prefect.runtime import flow_run  # (Prefect loads when the first job runs)

    workdir = job_workdir(s, job_id)

    update_job(s, job_id, flow_run_id=flow_run.id)  # links the job to its run in Prefect's UI
    try:
        with watch_job(s, job_id), _slots.hold(s, job_id):
            result = body(workdir)
    except JobInterrupted:
        release_job(s, job_id)
        return {"state": "interrupted"}
    except JobCancelled:
        return {"state": "cancelled"}
    except Exception as exc:
        if stopping():  # whatever broke while the process shuts down: it runs again later
            log.warning("job %s stopped by the shutdown: %s", job_id, exc)
            release_job(s, job_id)
            return {"state": "interrupted"}
        if isinstance(exc, EXPECTED):
            ours = {"fault": "ours"} if isinstance(exc, Crashed | ModelMissing) else None
            reason = user_message(exc)
            _finish(s, job_id, "failed", reason=reason, result=ours)
            return {"state": "failed", "reason": reason}
        log.exception("job %s failed", job_id)
        _finish(s, job_id, "failed", reason=GENERIC_FAILURE)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        erase(s, [prefix(job_key_prefix(job_id))])
    if not _succeed(s, job_id, result):  # cancelled (or its user forgotten) meanwhile
        stored = [result[key] for key in ("uri", "preview_uri") if isinstance(result.get(key), str)]
        erase(s, [uri(u) for u in stored])
        return {"state": "cancelled"}
    return {"state": "succeeded", **result}


def _succeed(s: Settings, job_id: str, result: dict) -> bool:
    """Record the result, under the row's lock: False if the job was cancelled or its row
    removed (`/forget`) before it could, so what it stored must go."""
    with session(s.database) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL:
            return False
        job.state, job.step, job.reason, job.progress = "succeeded", "done", None, 1.0
        job.result, job.updated_at = result, now()
        return True


CANCEL_CHECK_S = 2.0  # how often a job waiting in line looks whether it was cancelled


class _Slots:
    """Jobs running at once in this process; the others wait in line, oldest first.

    A cluster caps GPU work with work-pool limits instead; this keeps one machine (the
    embedded mode, a bot with many users) from running every submitted job at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._line: list[str] = []
        self._held = threading.local()  # a flow running inside another needs no second slot

    @contextmanager
    def hold(self, s: Settings, job_id: str) -> Iterator[None]:
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self._wait(s, job_id)
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _wait(self, s: Settings, job_id: str) -> None:
        touched = looked = time.monotonic()
        with self._cond:
            self._line.append(job_id)
        try:
            while True:
                with self._cond:
                    if self._running < max(1, s.max_running_jobs) and self._line[0] == job_id:
                        self._running += 1
                        return
                    self._cond.wait(0.5)
                if _stopping.is_set():
                    raise JobInterrupted()
                if time.monotonic() - looked < CANCEL_CHECK_S:
                    continue
                looked = time.monotonic()
                job = get_job(s, job_id)
                if job is not None and job.state == "cancelled":
                    raise JobCancelled()
                if time.monotonic() - touched > heartbeat_s(s):
                    update_job(s, job_id)
                    touched = time.monotonic()
        finally:
            with self._cond:
                self._line.remove(job_id)
                self._cond.notify_all()


_slots = _Slots()


def release_job(s: Settings, job_id: str) -> None:
    """Let go of a job this process stops running because it shuts down: the job stays
    open (queued, step "interrupted"), and the next process to start resumes it."""
    with session(s.database) as db:
        job = db.get(Job, job_id, with_for_update=True)
        if job is None or job.state in TERMINAL:
            return
        job.state, job.step, job.runner = "queued", "interrupted", RELEASED
        job.updated_at = now()


def _finish(s: Settings, job_id: str, state: str, reason: str | None = None, result=None) -> None:
    fields: dict[str, Any] = {"state": state, "step": "done", "reason": reason}
    if state == "succeeded":
        fields["progress"] = 1.0
    if result is not None:
        fields["result"] = result
    update_job(s, job_id, **fields)
