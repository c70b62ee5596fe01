"""The training folder: its layout and the resume bookkeeping kept in it.

It owns the file names inside a training folder (`exp_dir`), the manifest `encore-train.json`
(per stage, the key of the inputs its outputs belong to and whether it finished), the stage
keys (content hashes of the samples' sound, options, model config), the files another machine
needs to resume (`resume_files`) and the small file operations the stages use to clean up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpu_worker.hashing import file_sha256

MANIFEST_FILE = "encore-train.json"
JOB_FILE = "encore-train-job.json"
LOG_FILE = "train.log"
LOCK_FILE = ".encore-train.lock"
DATASET_DIR = "dataset"
FORMAT = 1

# rvc-next's folder names inside an experiment.
SLICE_DIRS = ("0_gt_wavs", "1_16k_wavs")
F0_DIRS = ("2a_f0", "2b-f0nsf")
FEATURE_DIR = "3_feature768"
SLICE_DONE = "slice_done.txt"


def resume_files(exp_dir: Path) -> list[Path]:
    """What another machine needs to resume this training folder's loop: the latest G/D
    checkpoint pair, then the manifest (put back in an empty `exp_dir` under the same names)."""
    exp = Path(exp_dir)
    pairs = [p for pattern in ("G_*.pth", "D_*.pth") for p in sorted(exp.glob(pattern))]
    manifest = exp / MANIFEST_FILE
    return [*pairs, manifest] if pairs and manifest.is_file() else []


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def stage_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def audio_sha256(path: Path) -> str:
    """A sample's identity for the resume keys: its sound (rate, channels, samples), not its
    bytes, since a float wav's header holds the time it was written (libsndfile's PEAK chunk)
    and the same samples prepared on another machine must resume the same training."""
    import soundfile as sf

    try:
        audio = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return file_sha256(path)  # not a format libsndfile reads: its bytes, then
    h = hashlib.sha256(f"{audio.samplerate}:{audio.channels}:".encode())
    with audio:
        while True:
            block = audio.read(1 << 16, dtype="float32")
            if not len(block):
                break
            h.update(block.tobytes())
    return h.hexdigest()


def relative_to_folder(exp: Path, path: Path) -> str:
    """`path` as the manifest stores it: relative to the training folder, so it can move."""
    try:
        return Path(path).relative_to(exp).as_posix()
    except ValueError:
        return str(path)


def folder_path(exp: Path, text: str | None) -> Path:
    if not text:
        return exp / ".no-such-file"
    path = Path(text)
    return path if path.is_absolute() else exp / path


class Manifest:
    """`encore-train.json`: per stage, the key its outputs belong to (`started`) and whether it
    finished (`done`, with what it produced)."""

    def __init__(self, exp: Path):
        self.path = exp / MANIFEST_FILE
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            data = {}
        self.started: dict[str, str] = dict(data.get("started") or {})
        self.done: dict[str, dict[str, Any]] = dict(data.get("done") or {})

    def is_done(self, stage: str, key: str) -> bool:
        return (self.done.get(stage) or {}).get("key") == key

    def start(self, stage: str, key: str) -> bool:
        """Mark `stage` as running for `key`; True when its outputs belong to another key."""
        stale = self.started.get(stage) != key
        self.started[stage] = key
        self.done.pop(stage, None)
        self.save()
        return stale

    def finish(self, stage: str, key: str, **info: Any) -> None:
        self.done[stage] = {"key": key, **info}
        self.save()

    def save(self) -> None:
        write_json(self.path, {"format": FORMAT, "started": self.started, "done": self.done})


def remove_paths(paths: Sequence[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def drop_newest(folder: Path, pattern: str = "*.npy") -> None:
    """An interrupted stage may have left its last file half written: remove the newest."""
    files = [p for p in folder.glob(pattern) if p.is_file()] if folder.is_dir() else []
    if files:
        max(files, key=lambda p: p.stat().st_mtime_ns).unlink(missing_ok=True)


def sliced_seconds(exp: Path) -> tuple[int, float]:
    import soundfile as sf

    count, seconds = 0, 0.0
    for p in (exp / SLICE_DIRS[0]).glob("*.wav"):
        with contextlib.suppress(RuntimeError, OSError):
            info = sf.info(str(p))
            count += 1
            seconds += info.frames / max(1, info.samplerate)
    return count, seconds


def has_outputs(exp: Path, folder: str) -> bool:
    """Whether a done stage's files are here (not so in a folder resumed on another machine)."""
    path = exp / folder
    return path.is_dir() and any(path.iterdir())


def training_outputs(exp: Path) -> list[Path]:
    """What the loop writes (the checkpoints, the exported voice, its config and file list)."""
    out = [p for pattern in ("G_*.pth*", "D_*.pth*") for p in exp.glob(pattern)]
    names = ("weights", "previews", "config.json", "filelist.txt", "metrics.jsonl")
    return out + [exp / n for n in names]
