"""Resolve: turn the song a job names into a checked local audio file."""

from __future__ import annotations

from pathlib import Path

from flows.catalog import get_song, limits
from flows.db import Song
from flows.errors import UserError
from flows.jobs import job_step
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker.audio import probe


def resolve(s: Settings, job_id: str, song_id: str, workdir: Path) -> tuple[Song, Path]:
    """The song row and a local path to its audio, re-checked against today's limits."""
    with job_step(s, job_id, "resolving", 0.02):
        song = get_song(s, song_id)
        if song is None:
            raise UserError("That song is no longer in the catalog; pick another one.")
        local = open_storage(s.storage).fetch(song.uri, workdir)
        probe(local, limits(s))
        return song, local
