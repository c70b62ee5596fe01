"""The `stems` and `karaoke` flows: the separation step alone, delivered as files.

`stems` gives every stem Demucs makes plus the instrumental (`{"six": True}`: the six-source
model, with guitar and piano); `karaoke` gives the instrumental encoded for listening. Both
reuse the stems cache, so they cost nothing after a cover. Every file is tagged
(`flows.steps.mark`).
Separation is a heavy step (`flows.heavy`): a cluster runs it on the GPU work pool.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from prefect import flow

import flows.chat  # noqa: F401  (chats hear of their jobs: see flows.chat)
from flows.catalog import label
from flows.chat import tags_text
from flows.db import Song
from flows.heavy import run_heavy, separate_song
from flows.jobs import job_step, run_job
from flows.settings import get_settings
from flows.steps import resolve, step_task
from flows.steps.mark import mark
from flows.steps.remix import file_title
from flows.steps.separate import is_a_cappella
from flows.storage import open_storage
from gpu_worker.audio import encode
from gpu_worker.tags import ResultTags

resolve_task = step_task(resolve.resolve, name="resolve")


def separated_tags(song: Song, what: str) -> ResultTags:
    """Tags of a file made by separation alone (no voice sang it)."""
    title = f"{song.title} ({what})"
    return ResultTags(title, song.artist, f"{song.title} (Encore)", label(song), None, False)


def _separation_job(
    job_id: str, song_id: str, kind: str, package: Callable, model: str | None = None
) -> dict:
    """Resolve and separate the song (with `model`, default the operator's), then store what
    `package(storage, stems, workdir, song)` makes of the stems, named after the song and
    `kind`."""
    s = get_settings()

    def body(workdir: Path) -> dict:
        song, _audio = resolve_task(s, job_id, song_id, workdir)
        uris = run_heavy(s, separate_song, job_id, song_id=song_id, model=model)
        with job_step(s, job_id, "storing", 0.9):
            storage = open_storage(s.storage)
            local, extra = package(storage, uris, workdir, song)
            name = f"{file_title(label(song))} ({kind}){local.suffix}"
            uri = storage.put(local, f"results/{job_id}/{name}")
            if is_a_cappella(s, song, model):
                extra["note"] = tags_text.A_CAPPELLA
            return {"uri": uri, "filename": name, **extra}

    return run_job(s, job_id, body)


@flow(name="stems", flow_run_name="stems-{job_id}", persist_result=False)
def stems(job_id: str, song_id: str, options: dict | None = None) -> dict:
    """All stems of a song as one zip of lossless FLAC files; `{"six": True}` separates with
    the six-source model (guitar and piano too)."""
    six = bool((options or {}).get("six"))
    model = get_settings().six_stems_model if six else None

    def package(storage, uris: dict, workdir: Path, song: Song):
        bundle = workdir / "stems.zip"
        with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as zf:
            for stem, uri in sorted(uris.items()):
                flac = encode(storage.fetch(uri, workdir), workdir / f"{stem}.flac", "flac")
                mark(get_settings(), flac, separated_tags(song, stem))
                zf.write(flac, f"{stem}.flac")
        return bundle, {"stems": sorted(uris)}

    kind = tags_text.SIX_STEMS if six else "stems"
    return _separation_job(job_id, song_id, kind, package, model)


@flow(name="karaoke", flow_run_name="karaoke-{job_id}", persist_result=False)
def karaoke(job_id: str, song_id: str, options: dict | None = None) -> dict:
    """The instrumental (everything but the vocal), encoded in the output format."""
    fmt = (options or {}).get("format") or get_settings().output_format

    def package(storage, uris: dict, workdir: Path, song: Song):
        src = storage.fetch(uris["instrumental"], workdir)
        out = encode(src, workdir / f"karaoke.{fmt}", fmt)
        mark(get_settings(), out, separated_tags(song, "karaoke"))
        return out, {}

    return _separation_job(job_id, song_id, "karaoke", package)
