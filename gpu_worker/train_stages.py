"""The training stages, run in the training child: slicing, pitch, features, training, indexing.

Each stage is rvc-next's own engine stage, called with one worker; `run_job` runs them in order,
skipping a stage whose inputs (its key in the manifest) are unchanged and whose outputs are on
disk, and redoing a stage, with everything after it, when they changed. `Reporter` turns each
stage's own progress into `TrainProgress` events for the parent.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadAudio, BadOptions, Cancelled, EngineError, ModelMissing
from gpu_worker.rvc_assets import TRAINING_FILES
from gpu_worker.train_manifest import (
    DATASET_DIR,
    F0_DIRS,
    FEATURE_DIR,
    SLICE_DIRS,
    SLICE_DONE,
    Manifest,
    audio_sha256,
    drop_newest,
    folder_path,
    has_outputs,
    relative_to_folder,
    remove_paths,
    sliced_seconds,
    stage_key,
    training_outputs,
)
from gpu_worker.train_options import (
    EMBEDDER,
    GPU_CACHE_MAX_SECONDS,
    MIN_SLICED_SECONDS,
    RATE_NAME,
    SLICE_SECONDS,
    VERSION,
    TrainOptions,
)

logger = logging.getLogger(__name__)


class Reporter:
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


def _engine_call(fn: Callable[[], Any]) -> Any:
    """Run an rvc-next stage, turning its errors into Encore's."""
    from rvc_next.engine.errors import Cancelled as EngineCancelled
    from rvc_next.engine.errors import MissingAssetError

    try:
        return fn()
    except EngineCancelled:
        raise Cancelled("training") from None
    except MissingAssetError as e:
        raise ModelMissing("voice_models", detail=str(e)[:300]) from e


def _stage_progress(
    report: Reporter, stage: str, noun: str
) -> Callable[[float | None, str | None], None]:
    def on_progress(value: float | None, label: str | None) -> None:
        if value is not None:
            report(stage, value, f"{stage}: {round(100 * value)}% of the {noun}")

    return on_progress


@dataclass
class _Run:
    """One job as the stages see it: its inputs, and what the stages produced so far."""

    exp: Path
    name: str
    assets: str
    device: str
    opts: TrainOptions
    samples: list[Path]
    report: Reporter
    token: Any
    keys: dict[str, str] = field(default_factory=dict)
    """Each stage's key, once computed (a later stage's key includes an earlier one's)."""
    out: dict[str, Any] = field(default_factory=dict)
    """pth, index, epochs, steps, resumed_from_epoch: the job's result, filled in by stages."""


@dataclass(frozen=True)
class Stage:
    """One row of the table: how to key, reuse and run one stage."""

    name: str
    weight: float
    """Share of the whole job the stage counts for in `TrainProgress.fraction`."""
    key: Callable[[_Run], str]
    """The key of everything the stage reads; a change redoes it and every later stage."""
    kept: Callable[[_Run, dict], bool]
    """Whether a finished stage's outputs (its manifest record) are here to be reused."""
    run: Callable[[_Run, bool, dict | None], dict]
    """Do the stage: (job, its outputs belong to other inputs, the record of an earlier finished
    run with the same key) -> the record the manifest keeps."""
    reuse: Callable[[_Run, dict], None] | None = None
    """What reusing a finished stage sets up (default: nothing but a progress line)."""


def _sample_hashes(r: _Run) -> list[str]:
    hashes = []
    for p in r.samples:
        try:
            hashes.append(audio_sha256(p))
        except OSError:
            raise BadAudio("sample_unreadable", name=p.name) from None
    return hashes


def _run_slicing(r: _Run, stale: bool, previous: dict | None) -> dict:
    exp = r.exp
    if stale:
        remove_paths([exp / d for d in (*SLICE_DIRS, DATASET_DIR)] + [exp / SLICE_DONE])
    _copy_samples(r.samples, exp / DATASET_DIR)
    r.report("slicing", 0.0, f"slicing {len(r.samples)} recordings")
    _slice(exp, r.opts, r.report, r.token)
    count, seconds = sliced_seconds(exp)
    if seconds < MIN_SLICED_SECONDS:
        raise BadAudio(
            "too_little_voice", seconds=round(seconds, 1), min_seconds=MIN_SLICED_SECONDS
        )
    return {"slices": count, "seconds": round(seconds, 2)}


def _run_pitch(r: _Run, stale: bool, previous: dict | None) -> dict:
    if not stale:
        for d in F0_DIRS:
            drop_newest(r.exp / d)
    r.report("pitch", 0.0, f"pitch ({r.opts.f0_method})")
    counts = _pitch(r.exp, r.assets, r.device, r.opts, stale, r.report, r.token)
    voiced = len(list((r.exp / F0_DIRS[1]).glob("*.npy")))
    if voiced == 0:
        if counts.get("failed"):
            raise EngineError("pitch_failed", f0_method=r.opts.f0_method)
        raise BadAudio("no_pitched_voice")
    return {"voiced": voiced}


def _run_features(r: _Run, stale: bool, previous: dict | None) -> dict:
    if not stale:
        drop_newest(r.exp / FEATURE_DIR)
    r.report("features", 0.0, "content features")
    counts = _features(r.exp, r.assets, r.device, stale, r.report, r.token)
    if not any((r.exp / FEATURE_DIR).glob("*.npy")):
        raise EngineError("features_failed")
    return counts


def _voice_path(r: _Run) -> Path:
    return r.exp / "weights" / f"{r.name}.pth"


def _training_kept(r: _Run, record: dict) -> bool:
    return (
        int(record.get("epochs", 0)) >= r.opts.epochs
        and folder_path(r.exp, record.get("pth")).is_file()
    )


def _reuse_training(r: _Run, record: dict) -> None:
    pth = _voice_path(r)
    if not pth.is_file():
        shutil.copyfile(folder_path(r.exp, record["pth"]), pth)
    epochs, steps = int(record["epochs"]), int(record["steps"])
    r.out.update(pth=pth, epochs=epochs, steps=steps, resumed_from_epoch=epochs)
    r.report(
        "training",
        1.0,
        f"training: done before ({epochs} epochs, {steps} steps)",
        epoch=epochs,
        epochs=epochs,
        step=steps,
    )


def _run_training(r: _Run, stale: bool, previous: dict | None) -> dict:
    exp = r.exp
    earlier = folder_path(exp, previous.get("pth")) if previous is not None else None
    if stale:
        remove_paths(training_outputs(exp))
    for tmp in exp.glob("[GD]_*.pth.tmp"):
        tmp.unlink(missing_ok=True)
    _, seconds = sliced_seconds(exp)
    override = _config_override(r.opts)
    loop = _loop(exp, r.name, r.assets, r.device, r.opts, override, seconds, r.report, r.token)
    final = Path(loop["final_model"]) if loop["final_model"] else _voice_path(r)
    if not final.is_file() and earlier is not None and earlier.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier, final)  # already trained, under another name
    if not final.is_file():
        raise EngineError("no_voice_model")
    epochs, steps = loop["epochs"], loop["steps"]
    r.out.update(
        pth=final, epochs=epochs, steps=steps, resumed_from_epoch=loop["resumed_from_epoch"]
    )
    return {"epochs": epochs, "steps": steps, "pth": relative_to_folder(exp, final)}


def _reuse_index(r: _Run, record: dict) -> None:
    r.out["index"] = folder_path(r.exp, record["index"])
    r.report("indexing", 1.0, "indexing: done before, reused")


def _run_indexing(r: _Run, stale: bool, previous: dict | None) -> dict:
    r.report("indexing", 0.0, "building the index")
    index = _index(r.exp, r.name, r.opts, stale, r.report, r.token)
    r.out["index"] = index
    return {"index": relative_to_folder(r.exp, index)}


def _outputs_in(folder: str) -> Callable[[_Run, dict], bool]:
    return lambda r, record: has_outputs(r.exp, folder)


TABLE: tuple[Stage, ...] = (
    Stage(
        "slicing",
        0.02,
        key=lambda r: stage_key("slicing", _sample_hashes(r), r.opts.sample_rate, SLICE_SECONDS),
        kept=_outputs_in(SLICE_DIRS[0]),
        run=_run_slicing,
    ),
    Stage(
        "pitch",
        0.04,
        key=lambda r: stage_key("pitch", r.keys["slicing"], r.opts.engine_f0_method),
        kept=_outputs_in(F0_DIRS[1]),
        run=_run_pitch,
    ),
    Stage(
        "features",
        0.04,
        key=lambda r: stage_key("features", r.keys["slicing"], VERSION, EMBEDDER),
        kept=_outputs_in(FEATURE_DIR),
        run=_run_features,
    ),
    Stage(
        "training",
        0.88,
        key=lambda r: stage_key(
            "training",
            r.keys["pitch"],
            r.keys["features"],
            _config_override(r.opts),
            RATE_NAME,
            VERSION,
        ),
        kept=_training_kept,
        run=_run_training,
        reuse=_reuse_training,
    ),
    Stage(
        "indexing",
        0.02,
        key=lambda r: stage_key("indexing", r.keys["features"], r.name),
        kept=lambda r, record: folder_path(r.exp, record.get("index")).is_file(),
        run=_run_indexing,
        reuse=_reuse_index,
    ),
)
"""The stages in the order they run; each one's outputs are the next one's inputs."""
STAGES = tuple(stage.name for stage in TABLE)
STAGE_WEIGHTS = {stage.name: stage.weight for stage in TABLE}


def run_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None], token: Any) -> dict:
    """The whole pipeline, in this process: every stage of `TABLE` in turn, each reused when
    its key and outputs are unchanged. `token` is rvc-next's `CancelToken`."""
    r = _Run(
        exp=Path(job["exp_dir"]),
        name=str(job["name"]),
        assets=str(job["assets_dir"]),
        device=str(job["device"]),
        opts=TrainOptions(**job["options"]),
        samples=[Path(p) for p in job["samples"]],
        report=Reporter(emit),
        token=token,
    )
    r.exp.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(r.exp)
    if r.device.startswith("cuda"):
        _check_cuda(r.device)
    else:
        import torch

        from gpu_worker.cpu import available_cpus

        torch.set_num_threads(available_cpus())  # this process is the job: use every CPU

    for stage in TABLE:
        key = r.keys[stage.name] = stage.key(r)
        record = manifest.done.get(stage.name) if manifest.is_done(stage.name, key) else None
        if record is not None and stage.kept(r, record):
            if stage.reuse is not None:
                stage.reuse(r, record)
            else:
                r.report(stage.name, 1.0, f"{stage.name}: done before, reused")
        else:
            stale = manifest.start(stage.name, key)
            manifest.finish(stage.name, key, **stage.run(r, stale, record))
        if stage is not TABLE[-1]:
            token.check()
    epochs, steps = r.out["epochs"], r.out["steps"]
    r.report("indexing", 1.0, "done", epoch=epochs, epochs=epochs, step=steps)
    return {
        "pth": str(r.out["pth"]),
        "index": str(r.out["index"]),
        "epochs": epochs,
        "steps": steps,
        "resumed_from_epoch": r.out["resumed_from_epoch"],
    }


def _check_cuda(device: str) -> None:
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if not torch.cuda.is_available():
        raise BadOptions("no_cuda")
    if index >= torch.cuda.device_count():
        raise BadOptions("no_such_gpu", index=index, count=torch.cuda.device_count())


def _copy_samples(samples: Sequence[Path], folder: Path) -> None:
    """Copy the samples into the training folder, in order (their names decide the slice keys)."""
    from rvc_next.engine.audio.io import AUDIO_EXTENSIONS

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, src in enumerate(samples):
        suffix = src.suffix.lower() if src.suffix.lower() in AUDIO_EXTENSIONS else ".wav"
        shutil.copyfile(src, folder / f"{i:04d}{suffix}")


def _slice(exp: Path, opts: TrainOptions, report: Reporter, token: Any) -> None:
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
        raise BadAudio("no_readable_samples")
    if failed:
        report.log(f"{failed} recordings could not be read and were left out")


def _pitch(
    exp: Path,
    assets: str,
    device: str,
    opts: TrainOptions,
    clean: bool,
    report: Reporter,
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
    exp: Path, assets: str, device: str, clean: bool, report: Reporter, token: Any
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


class _LoopWatch:
    """Follows the loop's callbacks: the step count (one metric line a step), the epoch, and the
    epoch the run started at, and reports `training` progress."""

    def __init__(self, total: int, report: Reporter):
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
    report: Reporter,
    token: Any,
) -> dict[str, Any]:
    from rvc_next.engine.errors import EngineError as RvcEngineError
    from rvc_next.engine.train import loop

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
            raise BadAudio("too_few_slices", batch_size=opts.batch_size) from e
        raise
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise EngineError("training_out_of_memory", device=device) from e
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
    exp: Path, name: str, opts: TrainOptions, force: bool, report: Reporter, token: Any
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
    remove_paths(list(exp.glob("total_fea*.npy")) + list(exp.glob("trained_IVF*.index")))
    return index
