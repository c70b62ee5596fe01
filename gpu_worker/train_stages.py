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
from pathlib import Path
from typing import Any

from gpu_worker.errors import BadAudio, Cancelled, EngineError, ModelMissing
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

STAGES = ("slicing", "pitch", "features", "training", "indexing")
STAGE_WEIGHTS = {
    "slicing": 0.02,
    "pitch": 0.04,
    "features": 0.04,
    "training": 0.88,
    "indexing": 0.02,
}
"""Share of the whole job each stage counts for in `TrainProgress.fraction`."""


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

    from gpu_worker.convert import DOWNLOAD_HINT

    try:
        return fn()
    except EngineCancelled:
        raise Cancelled("Voice training was cancelled.") from None
    except MissingAssetError as e:
        raise ModelMissing(f"Voice models are missing ({e}); {DOWNLOAD_HINT}.") from e


def _stage_progress(
    report: Reporter, stage: str, noun: str
) -> Callable[[float | None, str | None], None]:
    def on_progress(value: float | None, label: str | None) -> None:
        if value is not None:
            report(stage, value, f"{stage}: {round(100 * value)}% of the {noun}")

    return on_progress


def run_job(job: dict[str, Any], emit: Callable[[dict[str, Any]], None], token: Any) -> dict:
    """The whole pipeline, in this process. `token` is rvc-next's `CancelToken`."""
    exp = Path(job["exp_dir"])
    name = str(job["name"])
    assets = str(job["assets_dir"])
    device = str(job["device"])
    opts = TrainOptions(**job["options"])
    samples = [Path(p) for p in job["samples"]]
    report = Reporter(emit)
    exp.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(exp)
    if device.startswith("cuda"):
        _check_cuda(device)
    else:
        import torch

        from gpu_worker.cpu import available_cpus

        torch.set_num_threads(available_cpus())  # this process is the job: use every CPU

    # slicing
    hashes = []
    for p in samples:
        try:
            hashes.append(audio_sha256(p))
        except OSError:
            raise BadAudio(f"The sample {p.name} cannot be read; upload it again.") from None
    k_slice = stage_key("slicing", hashes, opts.sample_rate, SLICE_SECONDS)
    if manifest.is_done("slicing", k_slice) and has_outputs(exp, SLICE_DIRS[0]):
        report("slicing", 1.0, "slicing: done before, reused")
    else:
        stale = manifest.start("slicing", k_slice)
        if stale:
            remove_paths([exp / d for d in (*SLICE_DIRS, DATASET_DIR)] + [exp / SLICE_DONE])
        _copy_samples(samples, exp / DATASET_DIR)
        report("slicing", 0.0, f"slicing {len(samples)} recordings")
        _slice(exp, opts, report, token)
        count, seconds = sliced_seconds(exp)
        if seconds < MIN_SLICED_SECONDS:
            raise EngineError(
                f"Only {seconds:.1f} s of voice was left after cutting out silence; "
                f"upload at least {MIN_SLICED_SECONDS:.0f} s of clear singing or speech "
                "(a few minutes trains a good voice)."
            )
        manifest.finish("slicing", k_slice, slices=count, seconds=round(seconds, 2))
    token.check()

    # pitch
    k_pitch = stage_key("pitch", k_slice, opts.engine_f0_method)
    if manifest.is_done("pitch", k_pitch) and has_outputs(exp, F0_DIRS[1]):
        report("pitch", 1.0, "pitch: done before, reused")
    else:
        stale = manifest.start("pitch", k_pitch)
        if not stale:
            for d in F0_DIRS:
                drop_newest(exp / d)
        report("pitch", 0.0, f"pitch ({opts.f0_method})")
        counts = _pitch(exp, assets, device, opts, stale, report, token)
        voiced = len(list((exp / F0_DIRS[1]).glob("*.npy")))
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
    k_feat = stage_key("features", k_slice, VERSION, EMBEDDER)
    if manifest.is_done("features", k_feat) and has_outputs(exp, FEATURE_DIR):
        report("features", 1.0, "features: done before, reused")
    else:
        stale = manifest.start("features", k_feat)
        if not stale:
            drop_newest(exp / FEATURE_DIR)
        report("features", 0.0, "content features")
        counts = _features(exp, assets, device, stale, report, token)
        if not any((exp / FEATURE_DIR).glob("*.npy")):
            raise EngineError(
                "Content features could not be computed for any slice; "
                "run `encore models download` and try again."
            )
        manifest.finish("features", k_feat, **counts)
    token.check()

    # training
    override = _config_override(opts)
    k_train = stage_key("training", k_pitch, k_feat, override, RATE_NAME, VERSION)
    trained = manifest.done.get("training") or {}
    pth = exp / "weights" / f"{name}.pth"
    if (
        manifest.is_done("training", k_train)
        and int(trained.get("epochs", 0)) >= opts.epochs
        and folder_path(exp, trained.get("pth")).is_file()
    ):
        if not pth.is_file():
            shutil.copyfile(folder_path(exp, trained["pth"]), pth)
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
        previous = (
            folder_path(exp, trained.get("pth")) if manifest.is_done("training", k_train) else None
        )
        if manifest.start("training", k_train):
            remove_paths(training_outputs(exp))
        for tmp in exp.glob("[GD]_*.pth.tmp"):
            tmp.unlink(missing_ok=True)
        _, seconds = sliced_seconds(exp)
        loop = _loop(exp, name, assets, device, opts, override, seconds, report, token)
        epochs, steps, resumed = loop["epochs"], loop["steps"], loop["resumed_from_epoch"]
        final = Path(loop["final_model"]) if loop["final_model"] else pth
        if not final.is_file() and previous is not None and previous.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(previous, final)  # already trained, under another name
        if not final.is_file():
            raise EngineError("Training ended without a voice model; run it again.")
        pth = final
        manifest.finish(
            "training", k_train, epochs=epochs, steps=steps, pth=relative_to_folder(exp, pth)
        )
    token.check()

    # indexing
    k_index = stage_key("indexing", k_feat, name)
    done = manifest.done.get("indexing") or {}
    if manifest.is_done("indexing", k_index) and folder_path(exp, done.get("index")).is_file():
        index = folder_path(exp, done["index"])
        report("indexing", 1.0, "index: done before, reused")
    else:
        stale = manifest.start("indexing", k_index)
        report("indexing", 0.0, "building the index")
        index = _index(exp, name, opts, stale, report, token)
        manifest.finish("indexing", k_index, index=relative_to_folder(exp, index))
    report("indexing", 1.0, "done", epoch=epochs, epochs=epochs, step=steps)
    return {
        "pth": str(pth),
        "index": str(index),
        "epochs": epochs,
        "steps": steps,
        "resumed_from_epoch": resumed,
    }


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
        raise BadAudio("None of the samples could be read as audio; upload them again as WAV.")
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
