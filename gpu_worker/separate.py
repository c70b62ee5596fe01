"""Source separation with Demucs: a song in, sample-aligned stems and an instrumental out.

This module owns the separation step of the engine:

- loading Demucs models from a local model folder through Demucs's own loader
  (`demucs.pretrained.get_model(name, repo=folder)`), cached in-process;
- running them (`demucs.apply.apply_model`, chunked with overlap) in fp32 or bf16 autocast,
  normalising the mix the way the Demucs CLI does;
- writing every stem and `instrumental.wav` (the sum of all non-vocal stems) as float32 WAV at
  44.1 kHz stereo, each exactly as long as the input, into a folder that appears whole or not
  at all;
- filling a model folder with Demucs's own download mechanism (`download_demucs`), which is
  what `encore models download` calls; jobs never download;
- how many chunks run at once on a CPU, on how many torch threads (`cpu_plan`).

The CPU count and the fast allocator are `gpu_worker.cpu`'s.

Input is an array, not a path: the caller decodes with `gpu_worker.audio.decode(path, 44100, 2)`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_worker import cancel, loads
from gpu_worker.cpu import available_cpus, cpu_has_native_bf16
from gpu_worker.errors import BadAudio, BadOptions, EngineError, ModelMissing

SAMPLE_RATE = 44100
CHANNELS = 2
VOCALS = "vocals"
INSTRUMENTAL = "instrumental"
PRECISIONS = ("fp32", "bf16", "auto")
DOWNLOAD_TIMEOUT_S = 60.0

ProgressFn = Callable[[float], None]


@dataclass(frozen=True)
class SeparationOptions:
    """How to separate.

    model: a Demucs bag name (`htdemucs`, `htdemucs_ft`, `htdemucs_6s`, ...) or a single
        model signature present in the model folder.
    device: a torch device string (`cpu`, `cuda`, `cuda:1`).
    precision: `fp32`; `bf16` (autocast: about 2x faster on CPUs with native bf16, output
        within about 48 dB of fp32); `auto` picks `default_precision(device)`.
    overlap: fraction of each 7.8 s chunk shared with the next (the Demucs default 0.25).
        Cost is proportional to the number of chunks.
    shifts: random time shifts averaged ("shift trick"); 0 is deterministic.
    threads: CPU threads in all; 0 means the CPUs this process may use.
    workers: chunks computed at once on CPU, each on threads // workers torch threads;
        0 picks min(threads, 4). Chunks on one thread each wait on no OpenMP barrier, so
        they lose far less when another process shares the cores (one chunk measured 1.73
        CPU-s on one thread, 1.92 on two). Each extra worker holds one more chunk's
        activations (about 0.3 GB for htdemucs).
    """

    model: str = "htdemucs"
    device: str = "cpu"
    precision: str = "fp32"
    overlap: float = 0.25
    shifts: int = 0
    threads: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), not {self.overlap}")
        if min(self.shifts, self.threads, self.workers) < 0:
            raise ValueError("shifts, threads and workers must be >= 0")
        if not self.model or "/" in self.model or self.model.startswith("."):
            raise ValueError(f"invalid model name {self.model!r}")


def default_model(device: str) -> str:
    """`htdemucs_ft` (a bag of four fine-tuned models, 4x the work) on CUDA, else `htdemucs`."""
    return "htdemucs_ft" if str(device).startswith("cuda") else "htdemucs"


def default_precision(device: str) -> str:
    """`bf16` on a CPU with native bf16 (about 2x faster there), `fp32` everywhere else.

    Without hardware bf16 the autocast path is emulated and slower than fp32; on CUDA
    fp32 is already fast and keeps the reference output.
    """
    if str(device).startswith("cpu") and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


# ---------------------------------------------------------------------------------------------
# Threads


MAX_AUTO_WORKERS = 4


def cpu_plan(threads: int = 0, workers: int = 0) -> tuple[int, int]:
    """(workers, torch threads per worker) for CPU separation."""
    total = threads or available_cpus()
    workers = workers or min(total, MAX_AUTO_WORKERS)
    return workers, max(1, total // workers)


# ---------------------------------------------------------------------------------------------
# Models


_models: dict[tuple[str, str, str], object] = {}
_models_lock = threading.Lock()


def _missing(name: str, model_dir: Path, state: str, detail: str = "") -> ModelMissing:
    """The separation model `name` is not usable in `model_dir`: `state` is `not_installed`,
    `checksum` (damaged: its checksum does not match) or `damaged` (`detail` says how)."""
    return ModelMissing(
        "separation_model", model=name, folder=str(model_dir), state=state, detail=detail
    )


def load_model(model_dir: Path, name: str, device: str = "cpu"):
    """The Demucs model (or bag of models) `name` from `model_dir`, cached per process."""
    model_dir = Path(model_dir).expanduser().resolve()
    key = (str(model_dir), name, str(device))
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            return model
        if not model_dir.is_dir():
            # Demucs calls sys.exit for a missing folder; say what to do instead.
            raise _missing(name, model_dir, "no_folder")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from demucs.pretrained import get_model
        from demucs.repo import ModelLoadingError

        try:
            model = get_model(name, repo=model_dir)
        except ModelLoadingError as exc:
            state = "checksum" if "checksum" in str(exc).lower() else "not_installed"
            raise _missing(name, model_dir, state) from exc
        except (SystemExit, ImportError) as exc:
            raise BadOptions("separation_model_feature", model=name, detail=str(exc)[:200]) from exc
        except Exception as exc:  # a truncated or foreign file
            raise _missing(name, model_dir, "damaged", type(exc).__name__) from exc
        if VOCALS not in model.sources:
            raise BadOptions("separation_model_no_vocals", model=name)
        try:
            model.to(device)  # apply_model moves bag members back and forth otherwise
        except (RuntimeError, AssertionError) as exc:
            raise BadOptions(
                "separation_device", device=str(device), detail=str(exc)[:200]
            ) from exc
        model.eval()
        _models[key] = model
        loads.count()
        return model


def clear_model_cache() -> None:
    """Forget every loaded model (frees their memory once no caller holds them)."""
    with _models_lock:
        _models.clear()


# ---------------------------------------------------------------------------------------------
# Separation


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        raise BadAudio("separation_rate", needs=SAMPLE_RATE, sample_rate=sample_rate)
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2):
        raise BadAudio("separation_shape", shape=list(audio.shape))
    if audio.shape[1] == 0:
        raise BadAudio("empty_audio")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise BadAudio("invalid_audio")
    if audio.shape[0] == 1:
        audio = np.repeat(audio, CHANNELS, axis=0)
    return audio


def _chunk_count(model, length: int, options: SeparationOptions) -> int:
    """Chunks apply_model will run (an upper bound when shifts > 0)."""
    members = getattr(model, "models", None) or [model]
    extra = int(0.5 * model.samplerate) if options.shifts else 0
    total = 0
    for member in members:
        segment_length = int(member.samplerate * float(member.segment))
        stride = max(1, int((1 - options.overlap) * segment_length))
        total += max(1, options.shifts) * math.ceil((length + extra) / stride)
    return max(1, total)


def _progress_callback(progress: ProgressFn | None, total: int):
    """Demucs's chunk callback (it runs in the pool's threads): reports progress, and stops
    the work at a chunk's start or end when the caller's stop check (`gpu_worker.cancel`)
    raises; Demucs then cancels the chunks not started and re-raises."""
    stop = cancel.current()  # pool threads do not inherit the caller's context
    if progress is None and stop is None:
        return None
    done = 0

    def on_chunk(info: dict) -> None:
        nonlocal done
        if stop is not None:
            stop()
        if info.get("state") == "end":
            done += 1
            if progress is not None:
                progress(min(done / total, 0.99))

    return on_chunk


def _autocast(device: str, precision: str):
    import torch

    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _ChunkPool(ThreadPoolExecutor):
    """The pool apply_model submits its chunks to.

    Inference mode and autocast are thread-local, so each chunk enters them in its worker.
    """

    def __init__(self, workers: int, device: str, precision: str):
        super().__init__(max_workers=workers, thread_name_prefix="demucs-chunk")
        self._device, self._precision = device, precision

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(self._run, fn, args, kwargs)

    def _run(self, fn, args, kwargs):
        import torch

        with torch.inference_mode(), _autocast(self._device, self._precision):
            return fn(*args, **kwargs)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Set torch's intra-op threads for the block (process-wide), then restore them."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def separate_array(
    audio: np.ndarray,
    *,
    model_dir: Path,
    options: SeparationOptions = SeparationOptions(),
    progress: ProgressFn | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, np.ndarray]:
    """Stems as float32 (2, samples) arrays, keyed by source name, same length as `audio`.

    The mix is normalised like the Demucs CLI does (mean and std of its mono sum), run
    through `apply_model` in chunks, and scaled back.
    """
    import torch
    from demucs.apply import apply_model

    mix = _check_audio(audio, sample_rate)
    precision = (
        default_precision(options.device) if options.precision == "auto" else options.precision
    )
    model = load_model(model_dir, options.model, options.device)
    if torch.device(options.device).type == "cpu":
        workers, threads = cpu_plan(options.threads, options.workers)
    else:
        workers, threads = 1, torch.get_num_threads()
    wav = torch.from_numpy(np.ascontiguousarray(mix))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    if wav.shape[-1] < 2:  # std of one sample is nan
        mean, std = ref.mean(), torch.tensor(1.0)
    callback = _progress_callback(progress, _chunk_count(model, wav.shape[-1], options))
    with (
        _torch_threads(threads),
        _ChunkPool(workers, options.device, precision) as pool,
        torch.inference_mode(),
    ):
        out = apply_model(
            model,
            ((wav - mean) / std)[None],
            shifts=options.shifts,
            split=True,
            overlap=options.overlap,
            device=options.device,
            pool=pool,
            callback=callback,
        )
    out = (out[0].float() * std + mean).numpy()
    if progress is not None:
        progress(1.0)
    return {name: out[i] for i, name in enumerate(model.sources)}


def _write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), np.ascontiguousarray(audio.T), SAMPLE_RATE, subtype="FLOAT", format="WAV")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place, replacing an older one."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def separate(
    audio: np.ndarray,
    out_dir: Path,
    *,
    model_dir: Path,
    options: SeparationOptions = SeparationOptions(),
    progress: ProgressFn | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, Path]:
    """Separate `audio` (float32 (channels, samples) at 44.1 kHz) into `out_dir`.

    Writes `<source>.wav` for every source of the model and `instrumental.wav` (the sum of
    every source but the vocals), float32 44.1 kHz stereo, each exactly `audio.shape[-1]`
    samples long. Returns their paths keyed by stem name. `out_dir` is written in a sibling
    temporary folder and renamed into place, so a failure leaves nothing behind; an existing
    `out_dir` is replaced. `progress(fraction)` is called as chunks finish (0..1, one call
    at a time, possibly from a worker thread); an exception it raises aborts the separation.

    Raises ModelMissing (the model is not in `model_dir`), BadAudio, BadOptions, EngineError.
    """
    out_dir = Path(out_dir)
    stems = separate_array(
        audio, model_dir=model_dir, options=options, progress=progress, sample_rate=sample_rate
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        instrumental = np.zeros_like(stems[VOCALS])
        for name, stem in stems.items():
            _write_wav(tmp / f"{name}.wav", stem)
            if name != VOCALS:
                instrumental += stem
        _write_wav(tmp / f"{INSTRUMENTAL}.wav", instrumental)
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: out_dir / f"{name}.wav" for name in [*stems, INSTRUMENTAL]}


# ---------------------------------------------------------------------------------------------
# Downloading weights (for `encore models download`; never called by a job)


def _remote_catalog():
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files

    return REMOTE_ROOT, _parse_remote_files(REMOTE_ROOT / "files.txt")


def demucs_files(names: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """For each model name, the (file name, URL) pairs Demucs's remote repo lists for it."""
    import yaml

    root, urls = _remote_catalog()
    out: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        bag_file = root / f"{name}.yaml"
        if bag_file.exists():
            sigs = yaml.safe_load(bag_file.read_text())["models"]
        elif name in urls:
            sigs = [name]
        else:
            known = sorted(p.stem for p in root.glob("*.yaml"))
            raise BadOptions("separation_model_unknown", model=name, allowed=known)
        out[name] = [(urls[sig].rsplit("/", 1)[1], urls[sig]) for sig in sigs]
    return out


def download_demucs(
    model_dir: Path, names: Iterable[str] = ("htdemucs",), timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> list[Path]:
    """Fill `model_dir` with the named Demucs models so `get_model(name, repo=model_dir)` works.

    Uses Demucs's own remote repo (its file list, URL root and bag files) and torch.hub's
    downloader, which checks each file's sha256 prefix. Files already present are kept.
    Returns the files written or found. Raises EngineError when a download fails.
    """
    from torch.hub import download_url_to_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    root, _ = _remote_catalog()
    plan = demucs_files(names)
    paths: list[Path] = []
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # torch.hub has none; a dropped connection hangs
    try:
        for name, files in plan.items():
            for filename, url in files:
                dst = model_dir / filename
                if not dst.exists():
                    sha_prefix = Path(filename).stem.rsplit("-", 1)[-1]
                    try:
                        download_url_to_file(url, str(dst), hash_prefix=sha_prefix, progress=False)
                    except Exception as exc:
                        dst.unlink(missing_ok=True)
                        raise EngineError(
                            "download_failed",
                            what=f"Demucs model {name}",
                            url=url,
                            file=filename,
                            folder=str(model_dir),
                            detail=str(exc)[:200],
                        ) from exc
                paths.append(dst)
            bag_file = root / f"{name}.yaml"
            if bag_file.exists():
                dst = model_dir / bag_file.name
                shutil.copyfile(bag_file, dst)
                paths.append(dst)
    finally:
        socket.setdefaulttimeout(old_timeout)
    return paths
