"""The voice flows: `train-voice` (samples → a new RVC voice) and `import-voice`.

Training runs intake → train (with the index) → register → preview. Intake and training form
one heavy step, as does the preview (`flows.heavy`; a cluster runs them on the GPU pool). The
training task retries after a crash, and each retry resumes from the last checkpoint; what the
user did wrong (samples, consent, a taken name) or a cancel is not retried. The user's uploaded
samples are deleted when the job ends, and the training folder once the model is stored.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

import flows.chat  # noqa: F401  (chats hear of their jobs: see flows.chat)
from flows import erase
from flows.db import TERMINAL
from flows.errors import ConsentNeeded, UserError
from flows.heavy import render_preview, run_heavy, train_model
from flows.jobs import get_job, job_params, job_progress, job_step, run_job
from flows.settings import get_settings
from flows.steps import register, step_task
from flows.steps.train import delete_checkpoints
from flows.storage import open_storage
from flows.voices import get_voice, import_voice, name_taken, valid_name

register_task = step_task(register.register, name="register")


def _delete_uploads(job_id: str, uris: list[str]) -> None:
    """Delete the job's uploaded files once it ended (a job stopped by a shutdown keeps them:
    it runs again when Encore starts again); one S3 refuses now is left to the sweeper."""
    s = get_settings()
    job = get_job(s, job_id)
    if job is not None and job.state not in TERMINAL:
        return
    erase.erase(s, [erase.uri(uri) for uri in uris])


@flow(name="train-voice", flow_run_name="train-{job_id}", persist_result=False)
def train_voice(job_id: str, options: dict | None = None) -> dict:
    """Train the job's voice (its owner, name, sample URIs and consent are in the job's row,
    not in the run's parameters: `flows.jobs.run_parameters`); registers it and renders a
    preview."""
    s = get_settings()
    options = options or {}
    asked = job_params(s, job_id)
    owner, samples = asked.get("owner", ""), list(asked.get("samples") or [])

    def body(workdir: Path) -> dict:
        if not asked.get("consent"):
            raise ConsentNeeded()
        voice_name = valid_name(asked.get("name", ""))
        if get_voice(s, owner, voice_name, include_public=False) is not None:
            raise UserError(name_taken(voice_name))
        trained = run_heavy(s, train_model, job_id, options=options)
        voice = register_task(s, job_id, owner, voice_name, trained, workdir)
        delete_checkpoints(s, trained.get("checkpoints") or "")  # (kept for a rerun until now)
        heard = run_heavy(s, render_preview, job_id, voice_id=voice.id)
        return {
            **heard,
            "voice_id": voice.id,
            "voice": voice.name,
            "preview_uri": heard["uri"],
            "voiced_seconds": trained["voiced_seconds"],
            "epochs": trained["epochs"],
            "steps": trained["steps"],
            "resumed_from_epoch": trained["resumed_from_epoch"],
        }

    try:
        return run_job(s, job_id, body)
    finally:
        _delete_uploads(job_id, samples)


@flow(name="import-voice", flow_run_name="import-{job_id}", persist_result=False)
def import_voice_flow(job_id: str) -> dict:
    """Check an uploaded RVC model (`.pth`, `.index` or `.zip`) and register it; links are
    downloaded first (`flows.links.fetch_model`), then checked like uploads. The owner, the
    name, the files and the links are read from the job's row (`flows.jobs.run_parameters`)."""
    s = get_settings()
    asked = job_params(s, job_id)
    owner, name = asked.get("owner", ""), asked.get("name", "")
    files, links = list(asked.get("files") or []), list(asked.get("links") or [])

    def body(workdir: Path) -> dict:
        fetched = []
        if links:
            from flows.links import fetch_model

            with job_step(s, job_id, "downloading", 0.02):
                for i, url in enumerate(links):
                    share = 0.08 / len(links)
                    report = job_progress(s, job_id, 0.02 + share * i, 0.02 + share * (i + 1))
                    fetched.append(fetch_model(s, url, workdir / f"link-{i}", report))
        with job_step(s, job_id, "importing", 0.1):
            storage = open_storage(s.storage)
            local = [storage.fetch(uri, workdir) for uri in files] + fetched
            voice = import_voice(s, owner, name, local, job_id=job_id)
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
        _delete_uploads(job_id, files)
