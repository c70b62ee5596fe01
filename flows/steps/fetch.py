"""Fetch: the song a cover job names by a link becomes a song of the job's owner.

The download is `flows.links.fetch_song` (guarded, checked, cached by link and by content);
this step shows it on the job ("Fetching the song from the link", with the download's share
of the bar) and returns the song row, which the resolve step then takes like any other.
"""

from __future__ import annotations

from flows.db import Song
from flows.errors import UserError
from flows.jobs import get_job, job_progress, job_step
from flows.links import fetch_song
from flows.settings import Settings


def fetch(s: Settings, job_id: str, link: str) -> Song:
    with job_step(s, job_id, "fetching", 0.01) as record:
        job = get_job(s, job_id)
        if job is None:
            raise UserError("That job is gone; send the command again.")
        song = fetch_song(s, link, job.owner, progress=job_progress(s, job_id, 0.01, 0.05))
        record.detail = {"song_id": song.id}
        return song


def fetch_chart(s: Settings, job_id: str, artist: str, title: str) -> Song:
    """A chart song missing from the catalog, fetched into it by the resolver."""
    from flows.resolver import fetch_chart_song

    with job_step(s, job_id, "fetching", 0.01) as record:
        song = fetch_chart_song(s, artist, title, job_progress(s, job_id, 0.01, 0.05))
        record.detail = {"song_id": song.id}
        return song
