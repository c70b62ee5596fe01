"""The voice flows: `train-voice` (samples → a new RVC voice) and `import-voice`.

Training runs intake → train (with the index) → register → preview. The training task retries
after a crash, and each retry resumes from the last checkpoint; what the user did wrong
(samples, consent, a taken name) or a cancel is not retried. The user's uploaded samples are
deleted when the job ends, and the training folder once the voice is registered.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.jobs import JobCancelled, job_step, run_job
from flows.settings import get_settings
from flows.steps import intake, preview, register, train
from flows.storage import open_storage
from flows.submit import CONSENT_NEEDED
from flows.voices import get_voice, import_voice, name_taken, valid_name
from gpu_worker.errors import Crashed, EngineError

step_task = task(cache_policy=NO_CACHE, persist_result=False)
intake_task = step_task(intake.intake, name="intake")
register_task = step_task(register.register, name="register")
preview_task = step_task(preview.preview, name="preview")


def _worth_retrying(_task, _run, state) -> bool:
    """Crashes are retried (and resume); the user's mistakes and cancels are not."""
    error = state.data
    return isinstance(error, Crashed) or not isinstance(error, EngineError | JobCancelled)


train_task = step_task(train.train, name="train", retry_condition_fn=_worth_retrying)


def _delete_uploads(uris: list[str]) -> None:
    storage = open_storage(get_settings().storage)
    for uri in uris:
        with contextlib.suppress(OSError, ValueError):
            storage.delete(uri)


@flow(name="train-voice", flow_run_name="train-{job_id}", persist_result=False)
def train_voice(
    job_id: str,
    owner: str,
    name: str,
    samples: list[str],
    consent: bool,
    options: dict | None = None,
    reply_to: dict | None = None,
) -> dict:
    """Train `owner`'s voice `name` from sample URIs; registers it and renders a preview."""
    s = get_settings()
    options = options or {}

    def body(workdir: Path) -> dict:
        if not consent:
            raise EngineError(CONSENT_NEEDED)
        voice_name = valid_name(name)
        if get_voice(s, owner, voice_name, include_public=False) is not None:
            raise EngineError(name_taken(voice_name))
        train.sweep_stale(s)
        storage = open_storage(s.storage)
        local = [storage.fetch(uri, workdir) for uri in samples]
        names = [uri.rsplit("/", 1)[-1] for uri in samples]
        exp_dir = train.training_dir(s, owner, voice_name, local)
        isolate = bool(options.get("isolate", s.train_isolate))
        found = intake_task(s, job_id, local, names, isolate, exp_dir, workdir)
        retries = train_task.with_options(retries=s.train_retries, retry_delay_seconds=5)
        trained = retries(s, job_id, voice_name, exp_dir / "samples", exp_dir, options)
        voice = register_task(s, job_id, owner, voice_name, trained)
        shutil.rmtree(exp_dir, ignore_errors=True)
        heard = preview_task(s, job_id, voice, workdir)
        return {
            **heard,
            "voice_id": voice.id,
            "voice": voice.name,
            "preview_uri": heard["uri"],
            "voiced_seconds": found["voiced_seconds"],
            "epochs": trained["epochs"],
            "steps": trained["steps"],
            "resumed_from_epoch": trained["resumed_from_epoch"],
        }

    try:
        return run_job(s, job_id, body)
    finally:
        _delete_uploads(samples)


@flow(name="import-voice", flow_run_name="import-{job_id}", persist_result=False)
def import_voice_flow(
    job_id: str, owner: str, name: str, files: list[str], reply_to: dict | None = None
) -> dict:
    """Check an uploaded RVC model (`.pth`, `.index` or `.zip`) and register it."""
    s = get_settings()

    def body(workdir: Path) -> dict:
        with job_step(s, job_id, "importing", 0.1):
            storage = open_storage(s.storage)
            local = [storage.fetch(uri, workdir) for uri in files]
            voice = import_voice(s, owner, name, local)
        return {
            "voice_id": voice.id,
            "voice": voice.name,
            "version": voice.version,
            "sample_rate": voice.sample_rate,
            "f0": voice.f0,
            "index": voice.index_uri is not None,
        }

    try:
        return run_job(s, job_id, body)
    finally:
        _delete_uploads(files)
