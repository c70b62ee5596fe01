"""The heavy steps as flows of their own: separation, singing, training and the preview.

Each is a flow so that a cluster can run it as its own deployment on the GPU work pool, where
only these steps occupy a GPU. A cover's separation and conversion form one run
(`sing-vocal`), which saves a second start-up and model load per cover.

The parent flow calls `run_heavy(s, flow, job_id, ...)`:

- embedded (`ENCORE_RUN_MODE=embedded`), that is a plain subflow call in this process;
- in a cluster, it is `run_deployment` of the step's deployment. The parent waits for it,
  touching the job row so the job is not taken for lost while it waits for a GPU, and stops
  the step when the user cancels. The step hands its output back as a small JSON object in the
  job's temporary storage prefix, since the two runs share neither memory nor disk. A user's
  mistake found by the step (an engine error or a `UserError`) crosses over as a record of
  plain data (`flows.errors.error_record`).

Every wait is bounded. A step no worker has started within `heavy_start_timeout_s` (no GPU
capacity, an image that does not pull, a container dead before Prefect starts) is cancelled
in Prefect, so it frees the GPU pool's slot and never runs later, and its job fails with a
sentence. Each step flow has a Prefect timeout (`step_timeout_s`, `train_timeout_s`): the
flow's process stops the step (a training child is stopped with it) and the job fails with a
sentence; should the process not stop, the parent cancels the run after a grace period, which
makes its worker kill it.

Inputs and outputs are storage URIs and ids, never local paths or audio.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from flows.catalog import get_song
from flows.db import Voice, session, untouched_s
from flows.errors import EXPECTED, UserError, error_record, from_error_record
from flows.jobs import (
    JobCancelled,
    get_job,
    heartbeat,
    heartbeat_s,
    job_key_prefix,
    job_params,
    update_job,
    watch_job,
)
from flows.settings import Settings, get_settings
from flows.steps import convert, intake, preview, separate, step_task, train
from flows.storage import open_storage
from gpu_worker import cancel
from gpu_worker.errors import Crashed

log = logging.getLogger("encore.heavy")

DEPLOYMENT = "encore"  # every Encore flow is deployed under this name: "<flow>/encore"
POLL_S = (0.1, 2.0)  # how often a waiting parent looks at its step's run: soon, then less
LOST_RUN_TRIES = 2  # a step run that died without a word (its worker was lost) is run again
STOP_GRACE_S = 60.0  # past its timeout, a step's own process has this long to stop it
NOT_STARTED_STATES = ("SCHEDULED", "PENDING", "PAUSED")  # waiting for a worker (or a GPU)

# What each step is called in the sentence a job fails with when it takes too long.
DOING = {
    "separate-song": "Separating the song",
    "sing-vocal": "Singing the cover",
    "train-model": "Training the voice",
    "render-preview": "Singing the preview",
}


def spoken(seconds: float) -> str:
    """A duration as a sentence says it: "15 minutes", "6 hours", "5 seconds"."""
    if seconds >= 5400:
        n, unit = round(seconds / 3600), "hour"
    elif seconds >= 90:
        n, unit = round(seconds / 60), "minute"
    else:
        n, unit = round(seconds), "second"
    return f"{n} {unit}{'' if n == 1 else 's'}"


def not_started(s: Settings) -> str:
    return (
        f"No GPU worker took the job within {spoken(s.heavy_start_timeout_s)}; "
        "please try again later."
    )


def timed_out(step_flow) -> str:
    doing = DOING.get(step_flow.name, "The job")
    limit = spoken(step_flow.timeout_seconds or 0)
    return f"{doing} took longer than {limit} and was stopped; please try again later."


def _time_limit(kind: str) -> float:
    """A step flow's timeout, from the settings when `flows.heavy` is imported."""
    s = get_settings()
    return s.train_timeout_s if kind == "train" else s.step_timeout_s


def deployment_name(flow_fn) -> str:
    return f"{flow_fn.name}/{DEPLOYMENT}"


def require_voice(s: Settings, voice_id: str) -> Voice:
    """The row of voice `voice_id`; a user-facing error if it was deleted."""
    with session(s.database) as db:
        voice = db.get(Voice, voice_id)
    if voice is None:
        raise UserError("That voice was deleted; pick another voice.")
    return voice


def _handoff_key(job_id: str, run_id: str) -> str:
    return f"{job_key_prefix(job_id)}/handoff/{run_id}.json"


def _step(s: Settings, job_id: str, name: str, body: Callable[[Path], Any]) -> Any:
    """Run a heavy step's body in a scratch folder of its own, with a heartbeat on the job's
    row (the parent takes a quiet row for a lost step); in a cluster, hand off the output."""
    from prefect.runtime import flow_run

    # Beside the parent's folder, not in it; one per run, should a step ever run twice.
    workdir = s.work_dir / f"{job_id}.{name}.{str(flow_run.id)[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] | None = None  # stays None on an unexpected error
    try:
        # The job's watch (stop check and heartbeat) is the parent's in-process; a step run by
        # a worker (a cluster) watches the job itself, so a cancel stops it within seconds.
        watch = heartbeat(s, job_id) if cancel.current() is not None else watch_job(s, job_id)
        with watch:
            out = body(workdir)
        record = {"ok": out}
        return out
    except JobCancelled:
        record = {"cancelled": True}
        raise
    except EXPECTED as exc:
        record = {"error": error_record(exc)}
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if s.run_mode == "cluster" and record is not None:
            _hand_off(s, job_id, record)


def _hand_off(s: Settings, job_id: str, record: dict) -> None:
    from prefect.runtime import flow_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "handoff.json"
        path.write_text(json.dumps(record))
        open_storage(s.storage).put(path, _handoff_key(job_id, flow_run.id))


def _received(s: Settings, job_id: str, run_id: str) -> dict | None:
    storage = open_storage(s.storage)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = storage.fetch(storage.uri(_handoff_key(job_id, run_id)), Path(tmp))
        except (FileNotFoundError, OSError):
            return None
        return json.loads(path.read_text())


def _raise(record: dict) -> None:
    if record.get("cancelled"):
        raise JobCancelled()
    error = record.get("error")
    raise from_error_record(error if isinstance(error, dict) else {"message": str(error)})


def run_heavy(s: Settings, step_flow, job_id: str, **params: Any) -> Any:
    """Run a heavy step for `job_id` where the run mode says, and return its output."""
    if s.run_mode != "cluster":
        try:
            return step_flow(job_id=job_id, **params)
        except TimeoutError:  # the step flow's own timeout
            raise UserError(timed_out(step_flow)) from None
    for attempt in range(1, LOST_RUN_TRIES + 1):
        run_id, state = _run_deployment(s, step_flow, job_id, params)
        record = _received(s, job_id, run_id)
        if record is not None:
            if "ok" in record:
                return record["ok"]
            _raise(record)
        if state == "TIMEDOUT":
            raise UserError(timed_out(step_flow))
        if state == "CRASHED" and attempt < LOST_RUN_TRIES:
            log.warning("%s for job %s crashed; running it again", step_flow.name, job_id)
            continue
        raise RuntimeError(f"{step_flow.name} for job {job_id} ended {state} without output")
    raise AssertionError("unreachable")


def _run_deployment(s: Settings, step_flow, job_id: str, params: dict) -> tuple[str, str]:
    """Start the step's deployment and wait for its run to end; (run id, final state type, or
    "TIMEDOUT" for a run its timeout stopped).

    While the run waits for a worker (or a GPU), the parent touches the job row, for at most
    `heavy_start_timeout_s`: then the run is cancelled and the job fails. Once it runs, the
    step's heartbeat touches the row; a running step whose row stays untouched for
    `reap_after_seconds` has lost its process, and is marked crashed so it can run again. A
    step still running `STOP_GRACE_S` past its own timeout is cancelled (its worker kills it).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled, Cancelling
    from prefect.states import Crashed as CrashedState

    run = run_deployment(
        deployment_name(step_flow),
        parameters={"job_id": job_id, **params},
        timeout=0,
        as_subflow=True,
        flow_run_name=step_flow.flow_run_name.format(job_id=job_id),  # named while it waits
    )
    started = touched = time.monotonic()
    running_since: float | None = None
    limit = step_flow.timeout_seconds
    with get_client(sync_client=True) as client:
        while True:
            current = client.read_flow_run(run.id)
            state = current.state.type.value if current.state is not None else "SCHEDULED"
            if current.state is not None and current.state.is_final():
                timed = state == "FAILED" and current.state.name == "TimedOut"
                return str(run.id), "TIMEDOUT" if timed else state
            job = get_job(s, job_id)
            if job is not None and job.state == "cancelled":
                client.set_flow_run_state(run.id, Cancelling(), force=True)
                raise JobCancelled()
            now = time.monotonic()
            if state == "RUNNING":
                running_since = running_since or now
                if job is not None and untouched_s(job) > s.reap_after_seconds:
                    lost = CrashedState(message="The step's worker was lost.")
                    client.set_flow_run_state(run.id, lost, force=True)
                    return str(run.id), "CRASHED"
                if limit and now - running_since > limit + STOP_GRACE_S:
                    stop = Cancelling(message="It ran past its timeout and did not stop.")
                    client.set_flow_run_state(run.id, stop, force=True)
                    raise UserError(timed_out(step_flow))
            elif state in NOT_STARTED_STATES and now - started > s.heavy_start_timeout_s:
                # No worker started it: nothing runs it, so it is cancelled outright (a state
                # that holds no slot, and that a late start cannot leave).
                message = f"No worker started it within {spoken(s.heavy_start_timeout_s)}."
                client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
                log.warning("%s for job %s was not started; cancelled", step_flow.name, job_id)
                raise UserError(not_started(s))
            if state != "RUNNING" and now - touched > heartbeat_s(s):
                update_job(s, job_id)  # still alive: waiting for a worker or a GPU
                touched = now
            waited = time.monotonic() - started  # a long step (training) is asked less often
            time.sleep(POLL_S[0] if waited < 60 else POLL_S[1])


# ------------------------------------------------------------------------------------------
# The steps


@flow(
    name="separate-song",
    flow_run_name="separate-{job_id}",
    persist_result=False,
    timeout_seconds=_time_limit("step"),
)
def separate_song(job_id: str, song_id: str, model: str | None = None) -> dict:
    """Stem URIs of the song (from the stems cache, or separated now); `model` replaces the
    operator's separation model (six stems)."""
    s = get_settings()

    def body(workdir: Path) -> dict:
        return _separate(s, job_id, song_id, workdir, model)

    return _step(s, job_id, "separate", body)


def _separate(
    s: Settings, job_id: str, song_id: str, workdir: Path, model: str | None = None
) -> dict:
    song = get_song(s, song_id)
    if song is None:
        raise UserError("That song is no longer in the catalog; pick another one.")
    audio = open_storage(s.storage).fetch(song.uri, workdir)
    return separate.separate(s, job_id, song, audio, workdir, model)


@flow(
    name="sing-vocal",
    flow_run_name="sing-{job_id}",
    persist_result=False,
    timeout_seconds=_time_limit("step"),
)
def sing_vocal(job_id: str, song_id: str, voice_id: str, options: dict | None = None) -> dict:
    """Separate the song (cached) and sing its lead vocal in the voice: one GPU run per cover.

    Returns the URIs of the sung vocal and of the instrumental it is mixed with, and whether
    the song was a cappella (its whole audio was sung, unseparated).
    """
    s = get_settings()

    def body(workdir: Path) -> dict:
        voice = require_voice(s, voice_id)
        stems = _separate(s, job_id, song_id, workdir)
        vocal = convert.convert(s, job_id, stems["vocals"], voice, options or {}, workdir)
        song = get_song(s, song_id)
        solo = song is not None and separate.is_a_cappella(s, song)
        return {"vocal": vocal, "instrumental": stems["instrumental"], "a_cappella": solo}

    return _step(s, job_id, "sing", body)


def _worth_retrying(_task, _run, state) -> bool:
    """Crashes are retried (and resume); the user's mistakes and cancels are not."""
    error = state.data
    return isinstance(error, Crashed) or not isinstance(error, (*EXPECTED, JobCancelled))


intake_task = step_task(intake.intake, name="intake")
train_task = step_task(train.train, name="train", retry_condition_fn=_worth_retrying)


@flow(
    name="train-model",
    flow_run_name="train-model-{job_id}",
    persist_result=False,
    timeout_seconds=_time_limit("train"),
)
def train_model(job_id: str, options: dict | None = None) -> dict:
    """Check the samples and train the model; the model and index go to the job's storage.

    The training folder is kept until the model is stored, so a retry (Prefect's, or the user
    sending the same samples after a crash) resumes from the last checkpoint; a cancelled
    job's folder goes at once. Its checkpoint is also kept in storage, for a rerun on another
    machine, until the voice is registered or the job ends for good (a user's mistake or a
    cancel).
    """
    s = get_settings()
    options = options or {}
    asked = job_params(s, job_id)  # the owner, the voice's name and the samples
    owner, name, samples = asked.get("owner", ""), asked.get("name", ""), asked.get("samples", [])

    def body(workdir: Path) -> dict:
        train.sweep_stale(s)
        storage = open_storage(s.storage)
        local = [storage.fetch(uri, workdir) for uri in samples]
        names = [uri.rsplit("/", 1)[-1] for uri in samples]
        exp_dir = train.training_dir(s, owner, name, local)
        isolate = bool(options.get("isolate", s.train_isolate))
        try:
            found = intake_task(s, job_id, local, names, isolate, exp_dir, workdir)
            retries = train_task.with_options(retries=s.train_retries, retry_delay_seconds=5)
            trained = retries(s, job_id, name, exp_dir / "samples", exp_dir, options, owner)
        except (*EXPECTED, JobCancelled) as exc:
            if isinstance(exc, JobCancelled):  # nothing resumes a cancelled (or forgotten) job
                shutil.rmtree(exp_dir, ignore_errors=True)
            if not isinstance(exc, Crashed):  # not to be resumed: its checkpoint goes
                train.delete_checkpoints(s, train.checkpoints_prefix(owner, exp_dir))
            raise
        prefix = f"{job_key_prefix(job_id)}/model"
        trained["pth"] = storage.put(Path(trained["pth"]), f"{prefix}/model.pth")
        if trained.get("index"):
            trained["index"] = storage.put(Path(trained["index"]), f"{prefix}/added.index")
        shutil.rmtree(exp_dir, ignore_errors=True)
        return {**trained, "voiced_seconds": found["voiced_seconds"]}

    return _step(s, job_id, "train", body)


@flow(
    name="render-preview",
    flow_run_name="preview-{job_id}",
    persist_result=False,
    timeout_seconds=_time_limit("step"),
)
def render_preview(job_id: str, voice_id: str) -> dict:
    """A short preview of a voice: its stored URI, file name and duration."""
    s = get_settings()

    def body(workdir: Path) -> dict:
        return preview.preview(s, job_id, require_voice(s, voice_id), workdir)

    return _step(s, job_id, "preview", body)


HEAVY_FLOWS = (separate_song, sing_vocal, train_model, render_preview)
