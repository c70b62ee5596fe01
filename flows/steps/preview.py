"""Preview: a few seconds of the demo song sung by a new voice, so its owner hears the clone.

The dry melody and backing come from `flows.demo`, so no separation is needed: the line is
converted with the voice and mixed over the backing at the loudness target.
"""

from __future__ import annotations

from pathlib import Path

from flows.db import Voice, session
from flows.demo import SR, preview_parts
from flows.erase import erase
from flows.erase import uri as erase_uri
from flows.jobs import JobCancelled, job_progress, job_step
from flows.settings import Settings
from flows.steps.convert import voice_params
from flows.steps.mark import mark
from flows.steps.remix import file_title, mix_options
from flows.storage import open_storage
from flows.voices import voice_prefix
from gpu_worker import convert, remix
from gpu_worker.audio import write_wav
from gpu_worker.tags import cover_tags


def preview(s: Settings, job_id: str, voice: Voice, workdir: Path) -> dict:
    """Render and store the preview; returns its URI and file name."""
    with job_step(s, job_id, "previewing", 0.9) as record:
        storage = open_storage(s.storage)
        vocal, backing = preview_parts()
        dry = write_wav(workdir / "preview-dry.wav", vocal, SR)
        backing_wav = write_wav(workdir / "preview-backing.wav", backing, SR)
        pth = storage.fetch(voice.pth_uri, workdir)
        index = storage.fetch(voice.index_uri, workdir) if voice.index_uri else None
        sung = convert.convert(
            dry,
            workdir / "preview-sung.wav",
            voice_pth=pth,
            index_path=index,
            assets_dir=s.models / "rvc",
            device=s.resolved_device(),
            params=voice_params(s, {}),
            progress=job_progress(s, job_id, 0.9, 0.97),
        )
        opts = mix_options(s, {"reverb": 0.15})
        mixed = remix.remix(sung, backing_wav, workdir / f"preview.{opts.format}", opts)
        mark(s, mixed.path, cover_tags("Encore demo tune (preview)", "Encore", voice.name))
        name = f"{file_title(voice.name)} (preview).{opts.format}"
        uri = storage.put(mixed.path, f"{voice_prefix(voice.owner, voice.id)}/{name}")
        with session(s.database) as db:
            row = db.get(Voice, voice.id, with_for_update=True)
            if row is not None:
                row.preview_uri = uri
        if row is None:  # the voice was deleted meanwhile (its owner forgotten): keep nothing
            erase(s, [erase_uri(uri)])
            raise JobCancelled()
        record.detail = {"lufs": mixed.loudness.integrated_lufs}
        return {"uri": uri, "filename": name, "duration": mixed.samples / mixed.sample_rate}
