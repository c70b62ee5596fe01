"""Register: store a newly trained model and index and record it as the owner's voice."""

from __future__ import annotations

from pathlib import Path

from flows.db import Voice
from flows.jobs import job_step
from flows.settings import Settings
from flows.storage import open_storage
from flows.voices import register_voice

CONSENT = "The owner confirmed that the voice is theirs or that they have permission to clone it."


def register(
    s: Settings, job_id: str, owner: str, name: str, trained: dict, workdir: Path
) -> Voice:
    """The new voice's row; its files (stored by the training step, `trained["pth"]` and
    `trained["index"]`) are copied under the voice's own prefix. Nothing is registered for a
    job cancelled meanwhile, or whose user was forgotten (`register_voice` checks)."""
    with job_step(s, job_id, "registering", 0.86):
        storage = open_storage(s.storage)
        pth = storage.fetch(trained["pth"], workdir)
        index = storage.fetch(trained["index"], workdir) if trained.get("index") else None
        return register_voice(
            s, owner, name, pth, index, source="trained", consent=CONSENT, job_id=job_id
        )
