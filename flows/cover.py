"""The `make-cover` flow: resolve → separate (cached) → convert → remix → store.

Each step is a Prefect task around the step module of the same name; the job row shows the
user where the work is, and always ends in a terminal state (see `flows.jobs.run_job`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.catalog import label
from flows.db import Voice, session
from flows.jobs import run_job
from flows.settings import get_settings
from flows.steps import convert, remix, resolve, separate
from gpu_worker.errors import EngineError

step_task = task(cache_policy=NO_CACHE, persist_result=False)
resolve_task = step_task(resolve.resolve, name="resolve")
separate_task = step_task(separate.separate, name="separate")
convert_task = step_task(convert.convert, name="convert")
remix_task = step_task(remix.remix, name="remix")


def _voice(voice_id: str) -> Voice:
    with session(get_settings().database) as db:
        voice = db.get(Voice, voice_id)
    if voice is None:
        raise EngineError("That voice was deleted; pick another voice.")
    return voice


@flow(name="make-cover", flow_run_name="cover-{job_id}", persist_result=False)
def make_cover(
    job_id: str,
    song_id: str,
    voice_id: str,
    options: dict | None = None,
    reply_to: dict | None = None,
) -> dict:
    """Make a cover of `song_id` sung by `voice_id`; returns the stored cover's URI.

    `reply_to` names the chat that asked; `run_job` posts progress and the cover there.
    """
    s = get_settings()
    options = options or {}

    def body(workdir: Path) -> dict:
        song, audio = resolve_task(s, job_id, song_id, workdir)
        voice = _voice(voice_id)
        stems = separate_task(s, job_id, song, audio, workdir)
        vocal = convert_task(s, job_id, stems["vocals"], voice, options, workdir)
        title = f"{label(song)} ({voice.name} cover)"
        return remix_task(s, job_id, vocal, stems["instrumental"], options, title, workdir)

    return run_job(s, job_id, body)
