"""The `make-cover` flow: resolve → separate (cached) → convert → remix → store.

Resolve and remix are tasks of this flow; separation and conversion are one heavy step
(`flows.heavy.sing_vocal`), which a cluster runs on its GPU work pool. The job row shows the
user where the work is, and always ends in a terminal state (see `flows.jobs.run_job`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

import flows.chat  # noqa: F401  (chats hear of their jobs: see flows.chat)
from flows.catalog import label
from flows.heavy import require_voice, run_heavy, sing_vocal
from flows.jobs import run_job
from flows.settings import get_settings
from flows.steps import remix, resolve, step_task

resolve_task = step_task(resolve.resolve, name="resolve")
remix_task = step_task(remix.remix, name="remix")


@flow(name="make-cover", flow_run_name="cover-{job_id}", persist_result=False)
def make_cover(
    job_id: str,
    song_id: str,
    voice_id: str,
    options: dict | None = None,
) -> dict:
    """Make a cover of `song_id` sung by `voice_id`; returns the stored cover's URI.

    `run_job` posts progress and the cover to the chat that asked (its reply target).
    """
    s = get_settings()
    options = options or {}

    def body(workdir: Path) -> dict:
        song, _audio = resolve_task(s, job_id, song_id, workdir)
        voice = require_voice(s, voice_id)
        sung = run_heavy(s, sing_vocal, job_id, song_id=song_id, voice_id=voice_id, options=options)
        pitch = int(options.get("pitch") or 0)
        shift = f", {pitch:+d}" if pitch else ""  # a +2 cover is not the original-key one
        title = f"{label(song)} ({voice.name} cover{shift})"
        return remix_task(s, job_id, sung["vocal"], sung["instrumental"], options, title, workdir)

    return run_job(s, job_id, body)
