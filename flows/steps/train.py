"""Train: fine-tune an RVC v2 voice from the prepared samples, then build its index.

The training folder is named after the owner, the voice name and the samples' content, so a
retry (Prefect's, or the user sending the same samples again after a crash) resumes from the
last checkpoint instead of starting over. It is removed once the voice is registered.

The latest checkpoint and the resume manifest are also kept in storage, under
`tmp/training/<owner>/<training folder's name>/` (`Checkpoints`): uploaded after every save, and
downloaded by a run that finds no checkpoint of its own, so a rerun on another machine
(another GPU, another data folder) resumes too. They are deleted when the voice is
registered, or when the job ends for good (a user's mistake, a cancel).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from flows.jobs import job_progress, job_step
from flows.settings import Settings
from flows.storage import open_storage
from gpu_worker import cancel
from gpu_worker import train as engine
from gpu_worker.hashing import file_sha256

log = logging.getLogger("encore.train")

STALE_DAYS = 7
TRAIN_START, TRAIN_END = 0.1, 0.85


def training_root(s: Settings) -> Path:
    return s.data_dir / "training"


def training_dir(s: Settings, owner: str, name: str, samples: list[Path]) -> Path:
    """The folder a run with these samples trains in: the same for a retry of the same work."""
    digest = hashlib.sha256()
    for path in samples:
        digest.update(file_sha256(path).encode())
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


def engine_dir(exp_dir: Path) -> Path:
    """The engine's own folder inside a training folder (where its checkpoints are)."""
    return exp_dir / "rvc"


def owner_checkpoints(owner: str) -> str:
    """The storage prefix of all `owner`'s stored checkpoints (`/forget` deletes it)."""
    key = re.sub(r"[^\w.-]", "_", owner)[:60] or "_"
    return f"tmp/training/{key}"


def checkpoints_prefix(owner: str, exp_dir: Path) -> str:
    return f"{owner_checkpoints(owner)}/{exp_dir.name}"


class Checkpoints:
    """A training folder's resume files in storage: one version at a time, named by
    `latest.json` (written after the files, so a reader never sees half a version)."""

    def __init__(self, s: Settings, owner: str, exp_dir: Path):
        self.storage = open_storage(s.storage)
        self.prefix = checkpoints_prefix(owner, exp_dir)
        self.local = engine_dir(exp_dir)

    def _pointer(self) -> dict | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.storage.fetch(self.storage.uri(f"{self.prefix}/latest.json"), Path(tmp))
                return json.loads(path.read_text())
            except (FileNotFoundError, OSError, ValueError):
                return None

    def upload(self, files: list[Path]) -> None:
        """Store `files` as the new version, then drop the old one. A failed upload leaves the
        previous version in place (training goes on; a rerun resumes from an older epoch)."""
        if not files:
            return
        try:
            old = self._pointer()
            version = uuid.uuid4().hex[:12]
            for path in files:
                self.storage.put(path, f"{self.prefix}/{version}/{path.name}")
            with tempfile.TemporaryDirectory() as tmp:
                pointer = Path(tmp) / "latest.json"
                names = [path.name for path in files]
                pointer.write_text(json.dumps({"version": version, "files": names}))
                self.storage.put(pointer, f"{self.prefix}/latest.json")
            if old and old.get("version") and old["version"] != version:
                self.storage.delete_prefix(f"{self.prefix}/{old['version']}")
        except Exception:  # storage trouble must not stop a training that is going well
            log.warning("could not store the checkpoint of %s", self.prefix, exc_info=True)

    def download(self) -> bool:
        """Copy the stored version into the local training folder if that has no checkpoint
        of its own (a rerun on another machine); whether one was fetched."""
        if engine.resume_files(self.local):
            return False  # this machine's own folder is as new as storage, or newer
        pointer = self._pointer()
        if not pointer:
            return False
        self.local.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.local) as tmp:
            fetched = []
            for name in pointer["files"]:
                uri = self.storage.uri(f"{self.prefix}/{pointer['version']}/{name}")
                fetched.append(self.storage.fetch(uri, Path(tmp)))
            for path in fetched:  # (a file storage hands back its own file: copy it)
                part = self.local / f".{path.name}.part"
                shutil.copyfile(path, part)
                part.replace(self.local / path.name)
        log.info("resuming %s from the checkpoint in storage", self.prefix)
        return True


def delete_checkpoints(s: Settings, prefix: str) -> None:
    """Drop a training's stored checkpoints (`trained["checkpoints"]`)."""
    if prefix.startswith("tmp/training/"):
        with contextlib.suppress(OSError):
            open_storage(s.storage).delete_prefix(prefix)


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
    s: Settings,
    job_id: str,
    name: str,
    samples_dir: Path,
    exp_dir: Path,
    options: dict,
    owner: str = "",
) -> dict:
    """Train (or resume) the voice; returns local paths of the model and index, the counts,
    and the storage prefix of its checkpoints (`Checkpoints`: kept there as they are saved,
    fetched from there when this machine has none).
    """
    with job_step(s, job_id, "training", TRAIN_START) as record:
        report = job_progress(s, job_id, TRAIN_START, TRAIN_END, every_s=2.0)
        samples = sorted(p for p in samples_dir.iterdir() if p.suffix == ".wav")
        stored = Checkpoints(s, owner, exp_dir)
        stored.download()
        result = engine.train(
            samples,
            engine_dir(exp_dir),
            name,
            assets_dir=s.models / "rvc",
            device=s.resolved_device(),
            options=train_options(s, options),
            progress=lambda p: report(p.fraction),
            cancel=_cancel_check(),
            on_checkpoint=stored.upload,
        )
        record.detail = {
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
        }
        return {
            "checkpoints": stored.prefix,
            "pth": str(result.pth),
            "index": str(result.index),
            "epochs": result.epochs,
            "steps": result.steps,
            "resumed_from_epoch": result.resumed_from_epoch,
        }
