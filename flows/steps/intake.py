"""Intake: check a user's voice samples before any GPU time is spent, and prepare them.

Every sample is checked (length, level, clipping, silence, rate, channels); the user hears
about each rejected one by number. Samples recorded over music can first go through the
separator, keeping only the vocal. The accepted samples are written as clean mono files into
the training folder, where a resumed run finds them again.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.errors import UserError, intake_summary, sample_problem
from flows.jobs import job_progress, job_step
from flows.settings import Settings
from flows.steps.separate import options as separation_options
from gpu_worker import samples as engine
from gpu_worker import separate
from gpu_worker.audio import decode

MAX_REASONS = 3


def refusal(report: engine.IntakeReport) -> str:
    """What the user reads when the samples cannot train a voice: the worst few, then why."""
    reasons = [sample_problem(c) for c in report.rejected][:MAX_REASONS]
    return " ".join([*filter(None, reasons), intake_summary(report)])


def _isolate(
    s: Settings, job_id: str, paths: list[Path], workdir: Path, limits: engine.IntakeLimits
) -> list[Path]:
    """Keep only the vocal of each sample (for samples recorded over music)."""
    opts = separation_options(s)
    out = []
    for i, path in enumerate(paths):
        share = 0.08 / len(paths)
        report = job_progress(s, job_id, 0.02 + share * i, 0.02 + share * (i + 1))
        stems = separate.separate(
            decode(path, separate.SAMPLE_RATE, 2, engine.decode_limits(limits)),
            workdir / f"isolated-{i}",
            model_dir=s.models / "demucs",
            options=opts,
            progress=report,
        )
        out.append(stems["vocals"])
    return out


def intake(
    s: Settings,
    job_id: str,
    local: list[Path],
    names: list[str],
    isolate: bool,
    exp_dir: Path,
    workdir: Path,
) -> dict:
    """Check and prepare the samples; returns what the check found (seconds, counts)."""
    prepared = exp_dir / "samples"
    manifest = prepared / "intake.json"
    if manifest.is_file():  # a resumed run: the samples were checked and prepared already
        found = json.loads(manifest.read_text())
        if all((prepared / name).is_file() for name in found["files"]):
            return found
    with job_step(s, job_id, "checking", 0.01) as record:
        limits = engine.IntakeLimits(min_total_s=s.train_min_seconds)
        report = engine.check_samples(local, limits, names=names)
        if not report.ok:
            raise UserError(refusal(report))
        if isolate:
            with job_step(s, job_id, "isolating", 0.02):
                kept = [local[c.number - 1] for c in report.accepted]
                vocals = _isolate(s, job_id, kept, workdir, limits)
                report = engine.check_samples(vocals, limits, names=[p.name for p in kept])
                if not report.ok:
                    # (numbers in this report count the kept samples, so only the total is told)
                    raise UserError(
                        "Little voice was left once the music was removed. "
                        + intake_summary(report)
                    )
                local = vocals
        prepared.mkdir(parents=True, exist_ok=True)
        files = engine.prepare_samples(report, local, prepared, limits=limits)
        found = {
            "files": [p.name for p in files],
            "voiced_seconds": round(report.voiced_s, 1),
            "accepted": len(report.accepted),
            "rejected": len(report.rejected),
            "summary": intake_summary(report),
        }
        manifest.write_text(json.dumps(found))
        record.detail = {k: v for k, v in found.items() if k != "files"}
        return found
