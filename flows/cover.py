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
from flows.chat import tags_text
from flows.heavy import require_voice, run_heavy, sing_vocal
from flows.jobs import job_params, run_job
from flows.settings import get_settings
from flows.steps import fetch, remix, resolve, step_task
from gpu_worker.tags import cover_tags

fetch_task = step_task(fetch.fetch, name="fetch")
fetch_chart_task = step_task(fetch.fetch_chart, name="fetch-chart")
resolve_task = step_task(resolve.resolve, name="resolve")
remix_task = step_task(remix.remix, name="remix")


@flow(name="make-cover", flow_run_name="cover-{job_id}", persist_result=False)
def make_cover(
    job_id: str,
    song_id: str | None,
    voice_id: str,
    options: dict | None = None,
    chart: dict | None = None,
) -> dict:
    """Make a cover of `song_id` (or, without one, of the song at the job's link, fetched
    first: `flows.links`; the link stays in the job's row, not in the run's parameters) sung
    by `voice_id`, or of chart song `chart` ({"artist", "title"}) that the resolver fetches
    into the catalog first (`flows.resolver`); returns the stored cover's URI.

    `run_job` posts progress and the cover to the chat that asked (its reply target).
    """
    s = get_settings()
    options = options or {}
    link = None if song_id or chart else job_params(s, job_id).get("link")

    def body(workdir: Path) -> dict:
        if chart:
            wanted = fetch_chart_task(s, job_id, chart["artist"], chart["title"]).id
        else:
            wanted = fetch_task(s, job_id, link).id if link else song_id
        song, _audio = resolve_task(s, job_id, wanted, workdir)
        voice = require_voice(s, voice_id)
        sung = run_heavy(s, sing_vocal, job_id, song_id=wanted, voice_id=voice_id, options=options)
        pitch = int(options.get("pitch") or 0)
        shift = f", {pitch:+d}" if pitch else ""  # a +2 cover is not the original-key one
        title = f"{label(song)} ({voice.name} cover{shift})"
        tags = cover_tags(song.title, song.artist, voice.name)
        result = remix_task(
            s, job_id, sung["vocal"], sung["instrumental"], options, title, workdir, tags
        )
        if sung.get("a_cappella"):
            result["note"] = tags_text.A_CAPPELLA
        return {**result, "song_id": wanted} if wanted != song_id else result

    return run_job(s, job_id, body)
