"""Convert: sing the separated lead vocal in the chosen voice (RVC)."""

from __future__ import annotations

from pathlib import Path

from flows.db import Voice
from flows.jobs import job_key_prefix, job_progress, job_step
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker import convert as engine


def voice_params(s: Settings, options: dict) -> engine.VoiceParams:
    """The user's knobs, with the operator's default pitch method."""
    known = engine.VoiceParams.__dataclass_fields__
    given = {k: v for k, v in options.items() if k in known and v is not None}
    given.setdefault("f0_method", s.f0_method)
    return engine.VoiceParams(**given)


def convert(
    s: Settings, job_id: str, vocal_uri: str, voice: Voice, options: dict, workdir: Path
) -> str:
    """URI of the converted vocal: same rate and length as the separated vocal."""
    with job_step(s, job_id, "converting", 0.45) as record:
        storage = open_storage(s.storage)
        vocal = storage.fetch(vocal_uri, workdir)
        pth = storage.fetch(voice.pth_uri, workdir)
        index = storage.fetch(voice.index_uri, workdir) if voice.index_uri else None
        params = voice_params(s, options)
        out = engine.convert(
            vocal,
            workdir / "converted.wav",
            voice_pth=pth,
            index_path=index,
            assets_dir=s.models / "rvc",
            device=s.resolved_device(),
            params=params,
            progress=job_progress(s, job_id, 0.45, 0.8),
        )
        record.detail = {"voice": voice.name, "f0_method": params.f0_method}
        return storage.put(out, f"{job_key_prefix(job_id)}/converted.wav")
