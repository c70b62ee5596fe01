"""Register: store a newly trained model and index and record it as the owner's voice."""

from __future__ import annotations

from pathlib import Path

from flows.db import Voice
from flows.jobs import job_step
from flows.settings import Settings
from flows.voices import register_voice

CONSENT = "The owner confirmed that the voice is theirs or that they have permission to clone it."


def register(s: Settings, job_id: str, owner: str, name: str, trained: dict) -> Voice:
    """The new voice's row; its files are in storage under the voice's own prefix."""
    with job_step(s, job_id, "registering", 0.86):
        index = Path(trained["index"]) if trained.get("index") else None
        return register_voice(
            s, owner, name, Path(trained["pth"]), index, source="trained", consent=CONSENT
        )
