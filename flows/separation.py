"""The `stems` and `karaoke` flows: the separation step alone, delivered as files.

`stems` gives every stem Demucs makes plus the instrumental; `karaoke` gives the instrumental
encoded for listening. Both reuse the stems cache, so they cost nothing after a cover.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.catalog import label
from flows.jobs import job_step, run_job
from flows.settings import get_settings
from flows.steps import resolve, separate
from flows.steps.remix import file_title
from flows.storage import open_storage
from gpu_worker.audio import encode

step_task = task(cache_policy=NO_CACHE, persist_result=False)
resolve_task = step_task(resolve.resolve, name="resolve")
separate_task = step_task(separate.separate, name="separate")


@flow(name="stems", flow_run_name="stems-{job_id}", persist_result=False)
def stems(job_id: str, song_id: str, options: dict | None = None) -> dict:
    """All stems of a song as one zip of lossless FLAC files."""
    s = get_settings()

    def body(workdir: Path) -> dict:
        song, audio = resolve_task(s, job_id, song_id, workdir)
        uris = separate_task(s, job_id, song, audio, workdir)
        with job_step(s, job_id, "storing", 0.9):
            storage = open_storage(s.storage)
            name = f"{file_title(label(song))} (stems).zip"
            bundle = workdir / "stems.zip"
            with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as zf:
                for stem, uri in sorted(uris.items()):
                    flac = encode(storage.fetch(uri, workdir), workdir / f"{stem}.flac", "flac")
                    zf.write(flac, f"{stem}.flac")
            uri = storage.put(bundle, f"results/{job_id}/{name}")
            return {"uri": uri, "filename": name, "stems": sorted(uris)}

    return run_job(s, job_id, body)


@flow(name="karaoke", flow_run_name="karaoke-{job_id}", persist_result=False)
def karaoke(job_id: str, song_id: str, options: dict | None = None) -> dict:
    """The instrumental (everything but the vocal), encoded in the output format."""
    s = get_settings()
    fmt = (options or {}).get("format") or s.output_format

    def body(workdir: Path) -> dict:
        song, audio = resolve_task(s, job_id, song_id, workdir)
        uris = separate_task(s, job_id, song, audio, workdir)
        with job_step(s, job_id, "storing", 0.9):
            storage = open_storage(s.storage)
            name = f"{file_title(label(song))} (karaoke).{fmt}"
            local = encode(storage.fetch(uris["instrumental"], workdir), workdir / name, fmt)
            uri = storage.put(local, f"results/{job_id}/{name}")
            return {"uri": uri, "filename": name}

    return run_job(s, job_id, body)
