"""Voice training: fine-tune an RVC v2 40 kHz voice from the pretrained base on a user's samples.

It owns everything between a list of checked voice recordings and a finished voice: the options
(`TrainOptions`), the files training needs (`required_training_assets`), the training folder's
layout and its resume bookkeeping, progress (`TrainProgress`), cancellation, and `train`, which
returns the standard RVC v2 `.pth` every RVC tool reads plus its `added_*.index` (`TrainResult`).

The work is rvc-next's engine training stages, in order: slicing (cut to 3.7 s pieces at 40 kHz
and 16 kHz), pitch, content features (HuBERT), the training loop, and the faiss index.

Process model. `train` runs the stages in a child process (`python -m gpu_worker.train_child JOB`)
that reports JSON lines on a private copy of its stdout; everything else the child prints, and
its log, goes to `train.log` in the training folder. The parent only reads those lines, calls
`progress` and polls `cancel`, from the calling thread, so it is safe in a worker thread of a
Prefect flow and from a process that has threads running: the child starts no processes of its
own (every stage runs with one worker in the child; the DataLoader loads in the training process
on the CPU and with two workers, forked from the child, on a GPU). A crash, an out-of-memory
kill or a CUDA context in the child leaves the caller's process untouched, and the GPU's memory
goes back when the child ends.

Resume. The training folder (`exp_dir`) is persistent. After each stage, `encore-train.json`
records a key of what the stage read (the samples' content hashes, rate, pitch method, model
config); a rerun skips every stage whose key matches and redoes a stage, with everything after
it, when its inputs changed (other samples, another pitch method, another model size). A stage
interrupted half way goes on where it stopped. The loop resumes from its checkpoint (one G/D
pair, overwritten every `save_every` epochs and after the last epoch, so at most one pair is on
disk: at full size they are about 0.4 and 0.9 GB with their optimizer state), and counts epochs
and optimizer steps on from there; asking for more epochs later trains on from the last one.
To resume on another machine, the caller keeps `resume_files` somewhere (`on_checkpoint` hears
of each new checkpoint) and puts them back in a fresh `exp_dir`: a stage whose outputs are not
on disk is done again (the cheap ones), and the loop goes on from the checkpoint.

Cancel. When `cancel()` returns True, or `progress` raises, the parent tells the child to stop
(a line on its stdin; the child also stops when its stdin closes, so an orphaned child ends
itself). The child stops before the next optimizer step or the next file of a stage, keeping
the last checkpoint; if it has not ended after `CANCEL_GRACE_S` it is killed (checkpoints are
written to a temporary name and renamed, so a kill leaves the previous one whole). Then
`Cancelled` is raised, or the callback's own exception, unchanged.

Where each part lives: `train_options` (options, progress, result), `train_manifest` (the
training folder and its resume bookkeeping), `train_supervisor` (the parent side),
`train_stages` (the table of stages the child runs), `train_child` (the child's entry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadAudio, BadOptions, Cancelled
from gpu_worker.rvc_assets import check_assets
from gpu_worker.train_manifest import FORMAT, JOB_FILE, MANIFEST_FILE, resume_files, write_json
from gpu_worker.train_options import (
    EMBEDDER,
    SAMPLE_RATE,
    TrainOptions,
    TrainProgress,
    TrainResult,
    parse_device,
    required_training_assets,
    safe_name,
)
from gpu_worker.train_stages import STAGES
from gpu_worker.train_supervisor import run_child


def train(
    samples: Sequence[Path],
    exp_dir: Path,
    name: str,
    *,
    assets_dir: Path,
    device: str = "cpu",
    options: TrainOptions = TrainOptions(),
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[list[Path]], None] | None = None,
) -> TrainResult:
    """Train voice `name` on `samples` (checked recordings of one voice) in `exp_dir`.

    Calling it again with the same `exp_dir` resumes: stages already done for the same inputs
    are skipped and the loop goes on from its last checkpoint. `device` is cpu, cuda or cuda:N.
    `progress` hears about every file of a stage and every optimizer step; `cancel` is polled
    several times a second. Raises `Cancelled` when cancelled, the `progress` callback's own
    exception when it raises, `ModelMissing` when weights are missing, `BadAudio` for a missing
    sample, and `EngineError` for anything else a user can act on. `on_checkpoint` is called
    with `resume_files(exp_dir)` after every checkpoint, from the calling thread (an exception
    from it stops the training as one from `progress` does).
    """
    if not isinstance(options, TrainOptions):
        raise BadOptions("train_options")
    job = _job(samples, Path(exp_dir), name, Path(assets_dir), device, options)
    exp = Path(job["exp_dir"])
    exp.mkdir(parents=True, exist_ok=True)
    job_path = exp / JOB_FILE
    write_json(job_path, job)
    return run_child(job_path, exp, progress, cancel, on_checkpoint)


def _job(
    samples: Sequence[Path],
    exp_dir: Path,
    name: str,
    assets_dir: Path,
    device: str,
    options: TrainOptions,
) -> dict[str, Any]:
    if isinstance(samples, str | Path):
        samples = [samples]
    paths = [Path(p) for p in samples]
    if not paths:
        raise BadAudio("no_samples")
    for p in paths:
        if not p.is_file():
            raise BadAudio("sample_not_found", name=p.name)
    if not str(name or "").strip():
        raise BadOptions("voice_name")
    dev = parse_device(device)
    check_assets(assets_dir, options.f0_method, embedder=EMBEDDER, training=True)
    return {
        "format": FORMAT,
        "samples": [str(p.resolve()) for p in paths],
        "exp_dir": str(exp_dir.resolve()),
        "name": safe_name(name),
        "assets_dir": str(assets_dir.resolve()),
        "device": dev,
        "options": asdict(options),
    }


__all__ = [
    "MANIFEST_FILE",
    "SAMPLE_RATE",
    "STAGES",
    "Cancelled",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "required_training_assets",
    "resume_files",
    "safe_name",
    "train",
]
