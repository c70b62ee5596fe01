"""Separate: split a song into stems with Demucs, once per (song content, model).

The stems cache is a row per (content hash, model). The first run claims the row and computes;
a run that finds the row ready reuses the stored stems; a run that finds it being computed by
someone else waits for it. A claim whose owner died is taken over after `stems_wait_seconds`,
or at once by a later attempt of the same job (a cluster re-runs a job whose worker died).

An a cappella song (its separated instrumental near-silent, `gpu_worker.acappella`) keeps
the untouched song as its vocal stem and silence for the rest; a marker file beside its
stems (`a-cappella.json`) says so to every later job that reuses them.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flows.catalog import limits
from flows.db import Song, StemSet, now, session
from flows.errors import UserError
from flows.jobs import job_progress, job_step
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker import acappella
from gpu_worker import separate as engine
from gpu_worker.audio import decode

POLL_SECONDS = 1.0
A_CAPPELLA_MARK = "a-cappella.json"


def options(s: Settings, model: str | None = None) -> engine.SeparationOptions:
    """The operator's separation settings; `model` replaces the model (six stems)."""
    device = s.resolved_device()
    precision = s.separation_precision
    if precision == "auto":
        precision = engine.default_precision(device)
    return engine.SeparationOptions(
        model=model or s.separation_model or engine.default_model(device),
        device=device,
        precision=precision,
        overlap=s.separation_overlap,
    )


def stems_key(song: Song, model: str) -> str:
    return f"tmp/stems/{song.content_hash}/{model}"


def _claim(s: Settings, song: Song, model: str, job_id: str | None) -> StemSet | None:
    """Our new claim, or None if a row for this song and model exists."""
    try:
        with session(s.database) as db:
            row = StemSet(
                content_hash=song.content_hash, model=model, state="computing", job_id=job_id
            )
            db.add(row)
            db.flush()
            return row
    except IntegrityError:
        return None


def _existing(s: Settings, song: Song, model: str) -> StemSet | None:
    with session(s.database) as db:
        query = select(StemSet).where(
            StemSet.content_hash == song.content_hash, StemSet.model == model
        )
        return db.scalars(query).first()


def _usable(s: Settings, row: StemSet) -> bool:
    storage = open_storage(s.storage)
    return row.state == "ready" and all(storage.exists(uri) for uri in row.stems.values())


def _drop(s: Settings, row_id: str) -> None:
    with session(s.database) as db:
        row = db.get(StemSet, row_id)
        if row is not None:
            db.delete(row)


def _compute(
    s: Settings, song: Song, audio_path: Path, workdir: Path, opts, progress
) -> dict[str, str]:
    audio = decode(audio_path, 44100, 2, limits(s))  # a user's file: the song limits hold
    files = engine.separate(
        audio, workdir / "stems", model_dir=s.models / "demucs", options=opts, progress=progress
    )
    storage = open_storage(s.storage)
    key = stems_key(song, opts.model)
    share = acappella.check_stems(audio, files, s.a_cappella_db)
    if share is not None:  # the song is voice alone: its stems were replaced, say so
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            mark = Path(tmp) / A_CAPPELLA_MARK
            mark.write_text(json.dumps({"instrumental_share_db": round(share, 1)}))
            storage.put(mark, f"{key}/{A_CAPPELLA_MARK}")
    else:  # a mark left by earlier stems of this song (another threshold) no longer holds
        storage.delete(storage.uri(f"{key}/{A_CAPPELLA_MARK}"))
    return {name: storage.put(path, f"{key}/{name}.wav") for name, path in files.items()}


def is_a_cappella(s: Settings, song: Song, model: str | None = None) -> bool:
    """Whether the song's stems (by `model`, default the operator's) found it a cappella."""
    storage = open_storage(s.storage)
    key = stems_key(song, options(s, model).model)
    return storage.exists(storage.uri(f"{key}/{A_CAPPELLA_MARK}"))


def get_stems(
    s: Settings,
    song: Song,
    audio_path: Path,
    workdir: Path,
    progress=None,
    job_id=None,
    model: str | None = None,
) -> tuple[dict, bool]:
    """Stem URIs for `song` and whether they came from the cache; `job_id` names the claim;
    `model` replaces the operator's separation model."""
    opts = options(s, model)
    deadline = time.monotonic() + s.stems_wait_seconds
    while True:
        row = _claim(s, song, opts.model, job_id)
        if row is not None:
            try:
                stems = _compute(s, song, audio_path, workdir, opts, progress)
            except BaseException:
                _drop(s, row.id)
                raise
            with session(s.database) as db:
                mine = db.get(StemSet, row.id)
                mine.stems, mine.state, mine.updated_at = stems, "ready", now()
            return stems, False
        other = _existing(s, song, opts.model)
        if other is None:
            continue  # released between our two looks: claim again
        if _usable(s, other):
            return dict(other.stems), True
        touched = other.updated_at
        if touched.tzinfo is None:  # SQLite hands back naive UTC
            touched = touched.replace(tzinfo=UTC)
        stale = touched < now() - timedelta(seconds=s.stems_wait_seconds)
        stale = stale or (job_id is not None and other.job_id == job_id)  # our dead attempt
        if other.state == "ready" or stale:
            _drop(s, other.id)  # files gone or owner dead: compute again
            continue
        if time.monotonic() > deadline:
            raise UserError("Separating this song is taking too long; try again later.")
        time.sleep(POLL_SECONDS)


def separate(
    s: Settings,
    job_id: str,
    song: Song,
    audio_path: Path,
    workdir: Path,
    model: str | None = None,
) -> dict:
    """The job's separation step: stems from the cache or freshly computed."""
    with job_step(s, job_id, "separating", 0.1) as record:
        progress = job_progress(s, job_id, 0.1, 0.45)
        stems, cached = get_stems(s, song, audio_path, workdir, progress, job_id, model)
        record.cached = cached
        record.detail = {"model": options(s, model).model}
        if is_a_cappella(s, song, model):
            record.detail["a_cappella"] = True
        return stems
