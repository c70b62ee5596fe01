"""Train: fine-tune an RVC v2 voice from the prepared samples, then build its index.

The training folder is named after the owner, the voice name and the samples' content, so a
retry (Prefect's, or the user sending the same samples again after a crash) resumes from the
last checkpoint instead of starting over. It is removed once the voice is registered.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

from flows.catalog import file_hash
from flows.jobs import job_progress, job_step
from flows.settings import Settings
from gpu_worker import cancel
from gpu_worker import train as engine

STALE_DAYS = 7
TRAIN_START, TRAIN_END = 0.1, 0.85


def training_root(s: Settings) -> Path:
    return s.data_dir / "training"


def training_dir(s: Settings, owner: str, name: str, samples: list[Path]) -> Path:
    """The folder a run with these samples trains in: the same for a retry of the same work."""
    digest = hashlib.sha256()
    for path in samples:
        digest.update(file_hash(path).encode())
    key = re.sub(r"[^\w.-]", "_", f"{owner}-{name}")[:80]
    return training_root(s) / f"{key}-{digest.hexdigest()[:16]}"


def owner_folders(s: Settings, owner: str) -> list[Path]:
    """The training folders of `owner`'s runs on this machine (see `training_dir`)."""
    root = training_root(s)
    start = re.sub(r"[^\w.-]", "_", f"{owner}-")
    if not root.is_dir():
        return []
    return [f for f in root.iterdir() if f.is_dir() and f.name.startswith(start)]


def sweep_stale(s: Settings, days: float = STALE_DAYS) -> None:
    """Drop training folders nobody resumed for `days` (their checkpoints are large)."""
    root = training_root(s)
    if not root.is_dir():
        return
    cutoff = time.time() - days * 86400
    for folder in root.iterdir():
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def train_options(s: Settings, options: dict) -> engine.TrainOptions:
    """The operator's defaults, with what a job asked for (tests ask for a tiny model)."""
    known = engine.TrainOptions.__dataclass_fields__
    given = {k: v for k, v in options.items() if k in known and v is not None}
    given.setdefault("epochs", s.train_epochs)
    given.setdefault("batch_size", s.train_batch_size)
    given.setdefault("save_every", s.train_save_every)
    given.setdefault("f0_method", s.f0_method)
    given.setdefault("config_override", s.train_config)
    return engine.TrainOptions(**given)


def _cancel_check():
    """The job's stop check (a cancel, a shutdown) as the engine's `cancel` poll: the training
    child is then told to stop, keeping its last checkpoint for a resumed run."""
    stop = cancel.current()
    return None if stop is None else lambda: bool(stop())


def train(
    s: Settings, job_id: str, name: str, samples_dir: Path, exp_dir: Path, options: dict
) -> dict:
    """Train (or resume) the voice; returns local paths of the model and index and the counts."""
    with job_step(s, job_id, "training", TRAIN_START) as record:
        report = job_progress(s, job_id, TRAIN_START, TRAIN_END, every_s=2.0)
        samples = sorted(p for p in samples_dir.iterdir() if p.suffix == ".wav")
        result = engine.train(
            samples,
            exp_dir / "rvc",
            name,
            assets_dir=s.models / "rvc",
            device=s.resolved_device(),
            options=train_options(s, options),
            progress=lambda p: report(p.fraction),
            cancel=_cancel_check(),
        )
        record.detail = {
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
        }
        return {
            "pth": str(result.pth),
            "index": str(result.index),
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
        }
