"""Voice training: fine-tune an RVC v2 40 kHz voice from the pretrained base on a user's samples.

It owns everything between a list of checked voice recordings and a finished voice: the options
(`TrainOptions`), the files training needs (`required_training_assets`), the training folder's
layout and its resume bookkeeping, progress (`TrainProgress`), cancellation, and `train`, which
returns the standard RVC v2 `.pth` every RVC tool reads plus its `added_*.index` (`TrainResult`).

The work is rvc-next's engine training stages, in order: slicing (cut to 3.7 s pieces at 40 kHz
and 16 kHz), pitch, content features (HuBERT), the training loop, and the faiss index.

Process model. `train` runs the stages in a child process (`python -m gpu_worker.train JOB`)
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

rvc-next names appear only here and in `gpu_worker.convert`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from gpu_worker import errors
from gpu_worker.errors import BadAudio, Cancelled, Crashed, EngineError, ModelMissing

logger = logging.getLogger(__name__)

SAMPLE_RATE = 40000
RATE_NAME = "40k"
VERSION = "v2"
EMBEDDER = "contentvec"
SLICE_SECONDS = 3.7  # rvc-next's (and the original RVC's) slice length
MIN_SLICED_SECONDS = 3.0
"""Least audio left after slicing (silences cut) that training accepts; real voices want minutes."""
GPU_CACHE_MAX_SECONDS = 30 * 60.0
"""Datasets up to this long are kept on the GPU for the whole run (as RVC's "cache" option)."""
CANCEL_GRACE_S = 120.0
"""How long a cancelled child may take to stop (one full-size CPU step is about 30-60 s)."""
POLL_S = 0.2

STAGES = ("slicing", "pitch", "features", "training", "indexing")
STAGE_WEIGHTS = {
    "slicing": 0.02,
    "pitch": 0.04,
    "features": 0.04,
    "training": 0.88,
    "indexing": 0.02,
}
"""Share of the whole job each stage counts for in `TrainProgress.fraction`."""

MANIFEST_FILE = "encore-train.json"
JOB_FILE = "encore-train-job.json"
LOG_FILE = "train.log"
LOCK_FILE = ".encore-train.lock"
DATASET_DIR = "dataset"
EVENT_PREFIX = "@encore "
_FORMAT = 1

# rvc-next's folder names inside an experiment.
_SLICE_DIRS = ("0_gt_wavs", "1_16k_wavs")
_F0_DIRS = ("2a_f0", "2b-f0nsf")
_FEATURE_DIR = "3_feature768"
_SLICE_DONE = "slice_done.txt"


# -- the public API ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOptions:
    """How to train. Invalid values raise `EngineError` on creation."""

    epochs: int = 200
    """Total epochs. 200 suits fine-tuning from the v2 base on a few minutes of voice."""
    batch_size: int = 8
    save_every: int = 10
    """Epochs between checkpoints (a rerun resumes from the last one)."""
    f0_method: str = "rmvpe"
    """Pitch method for the training data: rmvpe (best), swiftf0 (alias swift), pm, fcpe, crepe,
    crepe-tiny. pm and swiftf0 need no weights."""
    sample_rate: int = SAMPLE_RATE
    """Only 40000: the base models are RVC v2 40 kHz."""
    seed: int = 1234
    config_override: dict | None = None
    """Deep-merged into rvc-next's training config (tests shrink the model with it)."""

    def __post_init__(self) -> None:
        from gpu_worker.convert import F0_METHODS

        for field_name, low in (("epochs", 1), ("batch_size", 1), ("save_every", 1)):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EngineError(f"{field_name} must be a whole number of at least {low}.")
        if self.epochs > 100_000:
            raise EngineError("epochs must be at most 100000.")
        if self.batch_size > 256:
            raise EngineError("batch_size must be at most 256.")
        if self.f0_method not in F0_METHODS:
            raise EngineError(
                f"Unknown pitch method {self.f0_method!r}; "
                "use one of rmvpe, swiftf0, pm, fcpe, crepe."
            )
        if self.sample_rate != SAMPLE_RATE:
            raise EngineError(
                f"Voices can only be trained at {SAMPLE_RATE} Hz (the v2 40k base models); "
                f"{self.sample_rate!r} is not supported."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise EngineError("seed must be a whole number.")
        if self.config_override is not None and not isinstance(self.config_override, dict):
            raise EngineError("config_override must be a dict of rvc-next config sections.")

    @property
    def engine_f0_method(self) -> str:
        from gpu_worker.convert import F0_METHODS

        return F0_METHODS[self.f0_method]


@dataclass(frozen=True)
class TrainProgress:
    stage: str
    """slicing, pitch, features, training or indexing."""
    fraction: float
    """0..1 of the whole job (the training loop counts for most of it)."""
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    """Optimizer steps completed in total (they continue across resumes)."""
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    pth: Path
    """A standard RVC v2 40 kHz pitch-guided voice (the small model every RVC tool reads)."""
    index: Path
    """Its `added_*.index` (faiss)."""
    epochs: int
    """Epochs completed in total."""
    steps: int
    """Optimizer steps completed in total."""
    resumed_from_epoch: int
    """The epoch the loop went on from (0 for a fresh run; `epochs` when nothing was left)."""


def required_training_assets(assets_dir: Path, f0_method: str = "rmvpe") -> list[Path]:
    """The files training with `f0_method` reads: HuBERT, the pitch model's weights (none for pm
    and swiftf0) and the v2 40k base models `pretrained_v2/f0G40k.pth` and `f0D40k.pth`."""
    from gpu_worker.convert import required_assets

    return required_assets(Path(assets_dir), f0_method, embedder=EMBEDDER, training=True)


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
        raise EngineError("options must be TrainOptions.")
    job = _job(samples, Path(exp_dir), name, Path(assets_dir), device, options)
    exp = Path(job["exp_dir"])
    exp.mkdir(parents=True, exist_ok=True)
    job_path = exp / JOB_FILE
    _write_json(job_path, job)
    return _run_child(job_path, exp, progress, cancel, on_checkpoint)


def resume_files(exp_dir: Path) -> list[Path]:
    """What another machine needs to resume this training folder's loop: the latest G/D
    checkpoint pair, then the manifest (put back in an empty `exp_dir` under the same names)."""
    exp = Path(exp_dir)
    pairs = [p for pattern in ("G_*.pth", "D_*.pth") for p in sorted(exp.glob(pattern))]
    manifest = exp / MANIFEST_FILE
    return [*pairs, manifest] if pairs and manifest.is_file() else []


# -- checks done before any work ---------------------------------------------------------------


def safe_name(name: str) -> str:
    """`name` as it appears in the file names (letters, digits, `_`, `-`, `.`; at most 64)."""
    text = re.sub(r"[^\w.-]+", "_", str(name), flags=re.ASCII).strip("._-")
    return text[:64] or "voice"


def _device(device: str) -> str:
    text = str(device or "cpu").strip().lower()
    if text == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda(?::(\d{1,2}))?", text)
    if not m:
        raise EngineError(f"Unknown device {device!r}; use cpu, cuda or cuda:N.")
    return f"cuda:{int(m.group(1) or 0)}"


def _job(
    samples: Sequence[Path],
    exp_dir: Path,
    name: str,
    assets_dir: Path,
    device: str,
    options: TrainOptions,
) -> dict[str, Any]:
    from gpu_worker.convert import check_assets

    if isinstance(samples, str | Path):
        samples = [samples]
    paths = [Path(p) for p in samples]
    if not paths:
        raise BadAudio("No voice samples were given; upload at least one recording of the voice.")
    for p in paths:
        if not p.is_file():
            raise BadAudio(f"The sample {p.name} was not found; upload it again.")
    if not str(name or "").strip():
        raise EngineError("The voice needs a name.")
    dev = _device(device)
    check_assets(assets_dir, options.f0_method, embedder=EMBEDDER, training=True)
    return {
        "format": _FORMAT,
        "samples": [str(p.resolve()) for p in paths],
        "exp_dir": str(exp_dir.resolve()),
        "name": safe_name(name),
        "assets_dir": str(assets_dir.resolve()),
        "device": dev,
        "options": asdict(options),
    }


# -- the parent: run the child, relay progress, pass cancel on -----------------------------------


def _child_env() -> dict[str, str]:
    from gpu_worker.separate import fast_allocator_env

    # tcmalloc where installed: glibc's allocator page-faults on every large training buffer.
    env = fast_allocator_env(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _read_lines(stream: IO[bytes], out: queue.Queue) -> None:
    try:
        for raw in stream:
            out.put(raw)
    finally:
        out.put(None)


def _ask_to_stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.write(b"cancel\n")
        proc.stdin.flush()
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (its DataLoader workers): its process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def _progress_of(event: dict[str, Any]) -> TrainProgress:
    return TrainProgress(
        stage=str(event.get("stage", "")),
        fraction=float(min(1.0, max(0.0, event.get("fraction", 0.0)))),
        epoch=event.get("epoch"),
        epochs=event.get("epochs"),
        step=event.get("step"),
        message=str(event.get("message", "")),
    )


def _error_of(event: dict[str, Any]) -> EngineError:
    cls = getattr(errors, str(event.get("type")), EngineError)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = EngineError
    return cls(str(event.get("message") or "Voice training failed; try again."))


def _run_child(
    job_path: Path,
    exp: Path,
    progress: Callable[[TrainProgress], None] | None,
    cancel: Callable[[], bool] | None,
    on_checkpoint: Callable[[list[Path]], None] | None = None,
) -> TrainResult:
    if cancel is not None and cancel():
        raise Cancelled("Voice training was cancelled before it started.")
    cmd = [sys.executable, "-m", "gpu_worker.train", str(job_path)]
    with open(exp / LOG_FILE, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(exp),
            env=_child_env(),
            # Its own session: a terminal's Ctrl-C reaches the parent, which stops the child
            # between steps, instead of killing it mid-write.
            start_new_session=True,
        )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(
        target=_read_lines, args=(proc.stdout, lines), name="encore-train-reader", daemon=True
    )
    reader.start()
    stop: BaseException | None = None
    stop_at = 0.0
    result: dict[str, Any] | None = None
    failure: EngineError | None = None
    try:
        while True:
            if stop is None and cancel is not None:
                try:
                    if cancel():
                        stop = Cancelled(
                            "Voice training was cancelled; "
                            "start it again to resume from the last checkpoint."
                        )
                except BaseException as e:
                    stop = e
                if stop is not None:
                    stop_at = time.monotonic()
                    _ask_to_stop(proc)
            try:
                raw = lines.get(timeout=POLL_S)
            except queue.Empty:
                if stop is not None and time.monotonic() - stop_at > CANCEL_GRACE_S:
                    logger.warning("Training did not stop in %.0f s; killing it", CANCEL_GRACE_S)
                    _kill(proc)
                continue
            if raw is None:
                break
            event = _parse_event(raw)
            if event is None:
                continue
            kind = event.get("event")
            if kind == "progress" and stop is None:
                try:
                    if progress is not None:
                        progress(_progress_of(event))
                    if event.get("checkpoint") and on_checkpoint is not None:
                        on_checkpoint(resume_files(exp))
                except BaseException as e:
                    stop, stop_at = e, time.monotonic()
                    _ask_to_stop(proc)
            elif kind == "log":
                logger.info("%s", event.get("message", ""))
            elif kind == "result":
                result = event
            elif kind == "error":
                failure = _error_of(event)
    finally:
        if proc.poll() is None:
            _ask_to_stop(proc)
            try:
                proc.wait(timeout=CANCEL_GRACE_S if stop is not None else 30)
            except subprocess.TimeoutExpired:
                _kill(proc)
        code = proc.wait()
        reader.join(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
    if stop is not None:
        raise stop
    if failure is not None:
        raise failure
    if result is None:
        hint = ", perhaps out of memory" if code in (-9, 137) else ""
        logger.warning("training child exited with code %s%s", code, hint)
        raise Crashed(
            "Voice training stopped unexpectedly; run it again to resume from its last checkpoint."
        )
    return TrainResult(
        pth=Path(result["pth"]),
        index=Path(result["index"]),
        epochs=int(result["epochs"]),
        steps=int(result["steps"]),
        resumed_from_epoch=int(result["resumed_from_epoch"]),
    )


def _parse_event(raw: bytes) -> dict[str, Any] | None:
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(text[len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


# -- bookkeeping in the training folder -----------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _audio_sha256(path: Path) -> str:
    """A sample's identity for the resume keys: its sound (rate, channels, samples), not its
    bytes, since a float wav's header holds the time it was written (libsndfile's PEAK chunk)
    and the same samples prepared on another machine must resume the same training."""
    import soundfile as sf

    try:
        audio = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _file_sha256(path)  # not a format libsndfile reads: its bytes, then
    h = hashlib.sha256(f"{audio.samplerate}:{audio.channels}:".encode())
    with audio:
        while True:
            block = audio.read(1 << 16, dtype="float32")
            if not len(block):
                break
            h.update(block.tobytes())
    return h.hexdigest()


def _rel(exp: Path, path: Path) -> str:
    """`path` as the manifest stores it: relative to the training folder, so it can move."""
    try:
        return Path(path).relative_to(exp).as_posix()
    except ValueError:
        return str(path)


def _at(exp: Path, text: str | None) -> Path:
    if not text:
        return exp / ".no-such-file"
    path = Path(text)
    return path if path.is_absolute() else exp / path


class _Manifest:
    """`encore-train.json`: per stage, the key its outputs belong to (`started`) and whether it
    finished (`done`, with what it produced)."""

    def __init__(self, exp: Path):
        self.path = exp / MANIFEST_FILE
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
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
        _write_json(self.path, {"format": _FORMAT, "started": self.started, "done": self.done})


# -- the child: the stages ---------------------------------------------------------------------


class _Reporter:
    """Turns stage-local progress into `TrainProgress` events on the protocol stream."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]):
        self.emit = emit
        self.base = {}
        acc = 0.0
        for stage in STAGES:
            self.base[stage] = acc
            acc += STAGE_WEIGHTS[stage]

    def __call__(self, stage: str, within: float, message: str = "", **extra: Any) -> None:
        within = min(1.0, max(0.0, float(within)))
        fraction = self.base[stage] + STAGE_WEIGHTS[stage] * within
        self.emit(
            {
                "event": "progress",
                "stage": stage,
                "fraction": round(fraction, 6),
                "message": message,
                **extra,
            }
        )

    def log(self, message: str) -> None:
        logger.info("%s", message)
        self.emit({"event": "log", "message": str(message)[:2000]})


def _remove(paths: Sequence[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _drop_newest(folder: Path, pattern: str = "*.npy") -> None:
    """An interrupted stage may have left its last file half written: remove the newest."""
    files = [p for p in folder.glob(pattern) if p.is_file()] if folder.is_dir() else []
    if files:
        max(files, key=lambda p: p.stat().st_mtime_ns).unlink(missing_ok=True)


def _sliced_seconds(exp: Path) -> tuple[int, float]:
    import soundfile as sf

    count, seconds = 0, 0.0
    for p in (exp / _SLICE_DIRS[0]).glob("*.wav"):
        with contextlib.suppress(RuntimeError, OSError):
            info = sf.info(str(p))
            count += 1
            seconds += info.frames / max(1, info.samplerate)
    return count, seconds


def _engine_call(fn: Callable[[], Any]) -> Any:
    """Run an rvc-next stage, turning its errors into Encore's."""
    from rvc_next.engine.errors import Cancelled as EngineCancelled
    from rvc_next.engine.errors import MissingAssetError

    from gpu_worker.convert import DOWNLOAD_HINT

    try:
        return fn()
    except EngineCancelled:
        raise Cancelled("Voice training was cancelled.") from None
    except MissingAssetError as e:
        raise ModelMissing(f"Voice models are missing ({e}); {DOWNLOAD_HINT}.") from e


def _stage_progress(
    report: _Reporter, stage: str, noun: str
) -> Callable[[float | None, str | None], None]:
    def on_progress(value: float | None, label: str | None) -> None:
        if value is not None:
            report(stage, value, f"{stage}: {round(100 * value)}% of the {noun}")

    return on_progress


def _run_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None], token: Any) -> dict:
    """The whole pipeline, in this process. `token` is rvc-next's `CancelToken`."""
    exp = Path(job["exp_dir"])
    name = str(job["name"])
    assets = str(job["assets_dir"])
    device = str(job["device"])
    opts = TrainOptions(**job["options"])
    samples = [Path(p) for p in job["samples"]]
    report = _Reporter(emit)
    exp.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(exp)
    if device.startswith("cuda"):
        _check_cuda(device)
    else:
        import torch

        from gpu_worker.separate import available_cpus

        torch.set_num_threads(available_cpus())  # this process is the job: use every CPU

    # slicing
    hashes = []
    for p in samples:
        try:
            hashes.append(_audio_sha256(p))
        except OSError:
            raise BadAudio(f"The sample {p.name} cannot be read; upload it again.") from None
    k_slice = _key("slicing", hashes, opts.sample_rate, SLICE_SECONDS)
    if manifest.is_done("slicing", k_slice) and _has_outputs(exp, _SLICE_DIRS[0]):
        report("slicing", 1.0, "slicing: done before, reused")
    else:
        stale = manifest.start("slicing", k_slice)
        if stale:
            _remove([exp / d for d in (*_SLICE_DIRS, DATASET_DIR)] + [exp / _SLICE_DONE])
        _copy_samples(samples, exp / DATASET_DIR)
        report("slicing", 0.0, f"slicing {len(samples)} recordings")
        _slice(exp, opts, report, token)
        count, seconds = _sliced_seconds(exp)
        if seconds < MIN_SLICED_SECONDS:
            raise EngineError(
                f"Only {seconds:.1f} s of voice was left after cutting out silence; "
                f"upload at least {MIN_SLICED_SECONDS:.0f} s of clear singing or speech "
                "(a few minutes trains a good voice)."
            )
        manifest.finish("slicing", k_slice, slices=count, seconds=round(seconds, 2))
    token.check()

    # pitch
    k_pitch = _key("pitch", k_slice, opts.engine_f0_method)
    if manifest.is_done("pitch", k_pitch) and _has_outputs(exp, _F0_DIRS[1]):
        report("pitch", 1.0, "pitch: done before, reused")
    else:
        stale = manifest.start("pitch", k_pitch)
        if not stale:
            for d in _F0_DIRS:
                _drop_newest(exp / d)
        report("pitch", 0.0, f"pitch ({opts.f0_method})")
        counts = _pitch(exp, assets, device, opts, stale, report, token)
        voiced = len(list((exp / _F0_DIRS[1]).glob("*.npy")))
        if voiced == 0:
            if counts.get("failed"):
                raise EngineError(
                    f"Pitch detection ({opts.f0_method}) failed on every slice; run "
                    "`encore models download` or train with another pitch method."
                )
            raise EngineError(
                "No pitched voice was found in the samples; upload recordings of singing or speech."
            )
        manifest.finish("pitch", k_pitch, voiced=voiced)
    token.check()

    # features
    k_feat = _key("features", k_slice, VERSION, EMBEDDER)
    if manifest.is_done("features", k_feat) and _has_outputs(exp, _FEATURE_DIR):
        report("features", 1.0, "features: done before, reused")
    else:
        stale = manifest.start("features", k_feat)
        if not stale:
            _drop_newest(exp / _FEATURE_DIR)
        report("features", 0.0, "content features")
        counts = _features(exp, assets, device, stale, report, token)
        if not any((exp / _FEATURE_DIR).glob("*.npy")):
            raise EngineError(
                "Content features could not be computed for any slice; "
                "run `encore models download` and try again."
            )
        manifest.finish("features", k_feat, **counts)
    token.check()

    # training
    override = _config_override(opts)
    k_train = _key("training", k_pitch, k_feat, override, RATE_NAME, VERSION)
    trained = manifest.done.get("training") or {}
    pth = exp / "weights" / f"{name}.pth"
    if (
        manifest.is_done("training", k_train)
        and int(trained.get("epochs", 0)) >= opts.epochs
        and _at(exp, trained.get("pth")).is_file()
    ):
        if not pth.is_file():
            shutil.copyfile(_at(exp, trained["pth"]), pth)
        epochs, steps = int(trained["epochs"]), int(trained["steps"])
        resumed = epochs
        report(
            "training",
            1.0,
            f"training: done before ({epochs} epochs, {steps} steps)",
            epoch=epochs,
            epochs=epochs,
            step=steps,
        )
    else:
        previous = _at(exp, trained.get("pth")) if manifest.is_done("training", k_train) else None
        if manifest.start("training", k_train):
            _remove(_training_outputs(exp))
        for tmp in exp.glob("[GD]_*.pth.tmp"):
            tmp.unlink(missing_ok=True)
        _, seconds = _sliced_seconds(exp)
        loop = _loop(exp, name, assets, device, opts, override, seconds, report, token)
        epochs, steps, resumed = loop["epochs"], loop["steps"], loop["resumed_from_epoch"]
        final = Path(loop["final_model"]) if loop["final_model"] else pth
        if not final.is_file() and previous is not None and previous.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(previous, final)  # already trained, under another name
        if not final.is_file():
            raise EngineError("Training ended without a voice model; run it again.")
        pth = final
        manifest.finish("training", k_train, epochs=epochs, steps=steps, pth=_rel(exp, pth))
    token.check()

    # indexing
    k_index = _key("indexing", k_feat, name)
    done = manifest.done.get("indexing") or {}
    if manifest.is_done("indexing", k_index) and _at(exp, done.get("index")).is_file():
        index = _at(exp, done["index"])
        report("indexing", 1.0, "index: done before, reused")
    else:
        stale = manifest.start("indexing", k_index)
        report("indexing", 0.0, "building the index")
        index = _index(exp, name, opts, stale, report, token)
        manifest.finish("indexing", k_index, index=_rel(exp, index))
    report("indexing", 1.0, "done", epoch=epochs, epochs=epochs, step=steps)
    return {
        "pth": str(pth),
        "index": str(index),
        "epochs": epochs,
        "steps": steps,
        "resumed_from_epoch": resumed,
    }


def _has_outputs(exp: Path, folder: str) -> bool:
    """Whether a done stage's files are here (not so in a folder resumed on another machine)."""
    path = exp / folder
    return path.is_dir() and any(path.iterdir())


def _check_cuda(device: str) -> None:
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if not torch.cuda.is_available():
        raise EngineError("No CUDA GPU is available here; train on the cpu device instead.")
    if index >= torch.cuda.device_count():
        raise EngineError(
            f"There is no GPU {index} (this machine has {torch.cuda.device_count()}); "
            "use another cuda:N."
        )


def _copy_samples(samples: Sequence[Path], folder: Path) -> None:
    """Copy the samples into the training folder, in order (their names decide the slice keys)."""
    from rvc_next.engine.audio.io import AUDIO_EXTENSIONS

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, src in enumerate(samples):
        suffix = src.suffix.lower() if src.suffix.lower() in AUDIO_EXTENSIONS else ".wav"
        shutil.copyfile(src, folder / f"{i:04d}{suffix}")


def _slice(exp: Path, opts: TrainOptions, report: _Reporter, token: Any) -> None:
    from rvc_next.engine.train import preprocess

    request = preprocess.SliceRequest(
        exp_dir=str(exp),
        sample_rate=opts.sample_rate,
        folder=str(exp / DATASET_DIR),
        n_workers=1,
        per=SLICE_SECONDS,
    )
    out = _engine_call(
        lambda: preprocess.run(
            request, _stage_progress(report, "slicing", "recordings"), report.log, token
        )
    )
    failed = int(out.get("failed") or 0)
    if failed and not out.get("slices"):
        raise BadAudio("None of the samples could be read as audio; upload them again as WAV.")
    if failed:
        report.log(f"{failed} recordings could not be read and were left out")


def _pitch(
    exp: Path,
    assets: str,
    device: str,
    opts: TrainOptions,
    clean: bool,
    report: _Reporter,
    token: Any,
) -> dict[str, Any]:
    from rvc_next.engine.train import f0_extract

    request = f0_extract.F0Request(
        exp_dir=str(exp),
        method=opts.engine_f0_method,
        assets_dir=assets,
        device=device,
        n_workers=1,
        clean=clean,
    )
    return _engine_call(
        lambda: f0_extract.run(
            request, _stage_progress(report, "pitch", "slices"), report.log, token
        )
    )


def _features(
    exp: Path, assets: str, device: str, clean: bool, report: _Reporter, token: Any
) -> dict[str, Any]:
    from rvc_next.engine.train import feature_extract

    request = feature_extract.FeatureRequest(
        exp_dir=str(exp), version=VERSION, assets_dir=assets, device=device, clean=clean
    )
    out = _engine_call(
        lambda: feature_extract.run(
            request, _stage_progress(report, "features", "slices"), report.log, token
        )
    )
    return {"slices": int(out.get("total", 0)), "failed": int(out.get("failed", 0))}


def _config_override(opts: TrainOptions) -> dict[str, Any]:
    override = json.loads(json.dumps(opts.config_override or {}))
    train_section = dict(override.get("train") or {})
    train_section["seed"] = opts.seed
    override["train"] = train_section
    return override


def _training_outputs(exp: Path) -> list[Path]:
    """What the loop writes (the checkpoints, the exported voice, its config and file list)."""
    out = [p for pattern in ("G_*.pth*", "D_*.pth*") for p in exp.glob(pattern)]
    names = ("weights", "previews", "config.json", "filelist.txt", "metrics.jsonl")
    return out + [exp / n for n in names]


class _LoopWatch:
    """Follows the loop's callbacks: the step count (one metric line a step), the epoch, and the
    epoch the run started at, and reports `training` progress."""

    def __init__(self, total: int, report: _Reporter):
        self.total = total
        self.report = report
        self.start: int | None = None
        self.epoch = 0
        self.steps = 0

    def metric(self, item: dict[str, Any]) -> None:
        if item.get("kind") != "step":
            return
        self.epoch = int(item.get("epoch", self.epoch))
        self.steps = int(item.get("step", self.steps)) + 1  # the step's index, 0-based
        if self.start is None:
            self.start = self.epoch

    def progress(self, value: float | None, label: str | None) -> None:
        if value is None or self.start is None:
            return
        # rvc-next's value runs 0..1 over the epochs of this run; make it 0..1 over all epochs.
        span = self.total - self.start + 1
        within = min(1.0, max(0.0, value * span - (self.epoch - self.start)))
        done = (self.epoch - 1 + within) / self.total
        self.report(
            "training",
            done,
            f"epoch {self.epoch}/{self.total}, step {self.steps}",
            epoch=self.epoch,
            epochs=self.total,
            step=self.steps,
        )

    def output(self, path: str, kind: str, *rest: Any) -> None:
        if kind != "D":  # G is saved first, then D; both are on disk when D is reported
            return
        self.report(
            "training",
            self.epoch / self.total,
            f"checkpoint saved after epoch {self.epoch}, step {self.steps}",
            epoch=self.epoch,
            epochs=self.total,
            step=self.steps,
            checkpoint=True,
        )


def _loop(
    exp: Path,
    name: str,
    assets: str,
    device: str,
    opts: TrainOptions,
    override: dict[str, Any],
    seconds: float,
    report: _Reporter,
    token: Any,
) -> dict[str, Any]:
    from rvc_next.engine.errors import EngineError as RvcEngineError
    from rvc_next.engine.train import loop

    from gpu_worker.convert import TRAINING_FILES

    cuda = device.startswith("cuda")
    gpus = (int(device.split(":", 1)[1]),) if cuda else ()
    request = loop.TrainRequest(
        exp_dir=str(exp),
        sample_rate=RATE_NAME,
        version=VERSION,
        pitch_guidance=True,
        epochs=opts.epochs,
        save_every=opts.save_every,
        batch_size=opts.batch_size,
        pretrained_g=str(Path(assets) / TRAINING_FILES[0]),
        pretrained_d=str(Path(assets) / TRAINING_FILES[1]),
        gpus=gpus,
        cache_in_gpu=cuda and seconds <= GPU_CACHE_MAX_SECONDS,
        save_latest_only=True,
        name=name,
        config_override=override,
        log_interval=1,
        num_workers=2 if cuda else 0,
        seed=opts.seed,
        previews=False,
        embedder=EMBEDDER,
    )
    watch = _LoopWatch(opts.epochs, report)
    report("training", 0.0, "loading the base models", epoch=0, epochs=opts.epochs, step=0)
    try:
        out = _engine_call(
            lambda: loop.run(request, watch.progress, report.log, token, watch.metric, watch.output)
        )
    except RvcEngineError as e:
        if "No training batches" in str(e):
            raise EngineError(
                "The samples gave too few usable slices for one training batch; upload more "
                "voice or lower the batch size."
            ) from e
        raise
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise EngineError(
                "The GPU ran out of memory while training; lower the batch size and try again."
            ) from e
        raise
    start = int(out.get("start_epoch", 1))
    total = int(out.get("epochs", opts.epochs))
    last = start - 1 if start > total else total  # a run asked for fewer epochs than were done
    return {
        "epochs": last,
        "steps": int(out.get("global_step", 0)),
        "resumed_from_epoch": start - 1,
        "final_model": out.get("final_model") or "",
    }


def _index(
    exp: Path, name: str, opts: TrainOptions, force: bool, report: _Reporter, token: Any
) -> Path:
    from rvc_next.engine.index import build

    request = build.IndexRequest(
        exp_dir=str(exp),
        version=VERSION,
        name=name,
        multi_speaker=False,
        force=force,
        seed=opts.seed,
    )
    out = _engine_call(
        lambda: build.run(request, _stage_progress(report, "indexing", "index"), report.log, token)
    )
    index = Path(out["indexes"][0]["added"])
    # Only the added_ index is used; the vectors it was built from and the empty index are not.
    _remove(list(exp.glob("total_fea*.npy")) + list(exp.glob("trained_IVF*.index")))
    return index


# -- the child's entry point ---------------------------------------------------------------------


def _lock(exp: Path) -> IO[bytes]:
    import fcntl

    handle = open(exp / LOCK_FILE, "ab")  # noqa: SIM115 - held for the child's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EngineError(
            "This voice is already being trained; wait for that run to finish or cancel it."
        ) from None
    return handle


def _watch_stdin(token: Any) -> None:
    """Cancel when the parent says so, or when it goes away (stdin closes)."""
    # Raw reads: a daemon thread blocked in a buffered read aborts the interpreter at exit.
    pending = b""
    try:
        while b"cancel" not in pending:
            chunk = os.read(0, 256)
            if not chunk:
                break
            pending = (pending + chunk)[-64:]
    except OSError:
        pass
    finally:
        token.cancel()


def child_main(argv: Sequence[str]) -> int:
    """`python -m gpu_worker.train JOB.json`: run the job, report on stdout; the exit code."""
    # The protocol gets a private copy of stdout; anything else printed goes to the log.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )

    from rvc_next.engine.cancel import CancelToken
    from rvc_next.engine.errors import Cancelled as RvcCancelled

    token = CancelToken()
    threading.Thread(target=_watch_stdin, args=(token,), daemon=True).start()

    def emit(event: dict[str, Any]) -> None:
        if proto.closed:
            return
        try:
            proto.write(EVENT_PREFIX + json.dumps(event, default=str) + "\n")
            proto.flush()
        except OSError:  # the parent is gone: stop at the next step, as on a cancel
            token.cancel()
            with contextlib.suppress(OSError):
                proto.close()

    started = time.monotonic()
    try:
        job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        lock = _lock(Path(job["exp_dir"]))
        try:
            result = _run_job(job, emit, token)
        finally:
            lock.close()
        logger.info("Training job finished in %.1f s", time.monotonic() - started)
        emit({"event": "result", **result})
        return 0
    except RvcCancelled:
        logger.info("Training stopped: cancelled")
        emit({"event": "error", "type": "Cancelled", "message": "Voice training was cancelled."})
        return 2
    except EngineError as e:
        logger.info("Training stopped: %s", e)
        emit({"event": "error", "type": type(e).__name__, "message": e.message})
        return 2 if isinstance(e, Cancelled) else 1
    except BaseException as e:
        logger.exception("Training failed")
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            kind, message = "EngineError", "Training ran out of memory; lower the batch size."
        else:  # the details are in train.log; the user only needs to know a rerun resumes
            kind = "Crashed"
            message = "Voice training failed on our side; run it again to resume where it stopped."
        emit({"event": "error", "type": kind, "message": message})
        return 1


__all__ = [
    "Cancelled",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "required_training_assets",
    "resume_files",
    "safe_name",
    "train",
]


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
