"""Remix: the converted vocal over the instrumental, at the loudness target, encoded."""

from __future__ import annotations

import re
from pathlib import Path

from flows.jobs import job_step
from flows.settings import Settings
from flows.steps.mark import mark
from flows.storage import open_storage
from gpu_worker import remix as engine
from gpu_worker.tags import ResultTags


def mix_options(s: Settings, options: dict) -> engine.MixOptions:
    return engine.MixOptions(
        vocal_gain_db=float(options.get("vocal_gain_db", 0.0)),
        instrumental_gain_db=float(options.get("instrumental_gain_db", 0.0)),
        reverb=float(options.get("reverb", 0.0)),
        loudness_lufs=s.loudness_lufs,
        true_peak_dbtp=s.true_peak_dbtp,
        format=options.get("format") or s.output_format,
    )


def file_title(text: str) -> str:
    """A file name users recognise, safe on every platform."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "", text).strip()[:120] or "cover"


def remix(
    s: Settings,
    job_id: str,
    vocal_uri: str,
    instrumental_uri: str,
    options: dict,
    title: str,
    workdir: Path,
    tags: ResultTags | None = None,
) -> dict:
    """Mix, mark (`tags`, see `flows.steps.mark`) and store the cover; returns its URI, file
    name and measured loudness."""
    with job_step(s, job_id, "mixing", 0.8) as record:
        storage = open_storage(s.storage)
        opts = mix_options(s, options)
        vocal = storage.fetch(vocal_uri, workdir)
        instrumental = storage.fetch(instrumental_uri, workdir)
        name = f"{file_title(title)}.{opts.format}"
        result = engine.remix(vocal, instrumental, workdir / f"cover.{opts.format}", opts)
        if tags is not None:
            mark(s, result.path, tags)
        uri = storage.put(result.path, f"covers/{job_id}/{name}")
        record.detail = {
            "lufs": result.loudness.integrated_lufs,
            "true_peak": result.loudness.true_peak_dbtp,
        }
        return {
            "uri": uri,
            "filename": name,
            "duration": result.samples / result.sample_rate,
            **record.detail,
        }
