"""Benchmark: voice training (`gpu_worker.train`) at full size: stage times, step time, memory.

    python bench/train.py [--device cpu|cuda] [--seconds 60] [--batch-size 8] [--warmup 1]
                          [--steps 5] [--f0 rmvpe] [--allocator tcmalloc|glibc] [--assets DIR]

Prints one JSON object. The input is `--seconds` of synthetic singing (`tests.tiny_rvc.voice_like`,
phrases of sung syllables with pauses), one 44.1 kHz stereo file.

The measured part runs in a process of its own (started with the allocator `train` gives its
child: tcmalloc where installed, or `--allocator glibc`), which runs the engine's pipeline as
`train`'s child does: slicing, pitch, content features, then the training loop, which it stops
after `--warmup` + `--steps` optimizer steps (before any checkpoint), then the index. Stage
times are wall seconds between the pipeline's own progress events; `first_step_s` includes
building the models and loading the base weights. `step_s` are the seconds between consecutive
steps after the warm-up (data loading included), and `median_step_s` their median. Peak memory
is that process's peak RSS (`os.wait4`) and, on CUDA, `torch.cuda.max_memory_allocated`.

Without `--assets`, full-size assets with random weights are generated once under
~/.cache/encore/bench/rvc-train-full: HuBERT base (12 layers), RMVPE, and the v2 40k base
generator (rvc-next's real config, 36 M parameters) and discriminator (71 M). Timings are those
of the real architectures; what the voice learns is noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "encore" / "bench"
SR = 44100


def ensure_assets(assets: Path | None) -> tuple[Path, str]:
    """The assets folder; full-size random-weight assets are generated once when none is given."""
    if assets is not None:
        return assets, f"from {assets}"
    import torch

    from tests.tiny_rvc import FULL_MODEL, build_hubert, build_pretrained, build_rmvpe
    from tests.tiny_rvc import tiny_generator as generator

    folder = CACHE / "rvc-train-full" / "assets"
    if not (folder / "hubert_base" / "pytorch_model.bin").is_file():
        build_hubert(folder, full=True)
    if not (folder / "rmvpe" / "rmvpe.pt").is_file():
        build_rmvpe(folder)
    g_path = folder / "pretrained_v2" / "f0G40k.pth"
    if not g_path.is_file():
        build_pretrained(folder)  # the full-size D, and a tiny G replaced below
        state = {k: v.detach().half() for k, v in generator(3, FULL_MODEL).state_dict().items()}
        tmp = g_path.with_name(".f0G40k.pth.tmp")
        torch.save({"model": state}, tmp)
        tmp.replace(g_path)
    return folder, "random weights: full-size v2 40k base G and D, HuBERT base, RMVPE"


def make_sample(work: Path, seconds: float) -> Path:
    import numpy as np
    import soundfile as sf

    from tests.tiny_rvc import voice_like

    x = voice_like(seconds, SR, seed=0)
    path = work / "voice.wav"
    sf.write(path, np.stack([x, 0.9 * x], axis=1), SR, subtype="PCM_16")
    return path


def steps_per_epoch(exp: Path, batch_size: int) -> int:
    """Optimizer steps in one epoch of this dataset, as rvc-next's bucket sampler batches it."""
    from rvc_next.engine.train.dataset import DistributedBucketSampler, TextAudioLoaderMultiNSFsid
    from rvc_next.engine.train.hparams import HParams, read_config

    data = HParams(**read_config(exp)["data"])
    dataset = TextAudioLoaderMultiNSFsid(str(exp / "filelist.txt"), data)
    bounds = [100, 200, 300, 400, 500, 600, 700, 800, 900]
    sampler = DistributedBucketSampler(dataset, batch_size, bounds, num_replicas=1, rank=0)
    return len(sampler)


def child(args: argparse.Namespace) -> None:
    """In a process of its own: the pipeline, stopped after the measured steps; JSON on stdout."""
    from rvc_next.engine.cancel import CancelToken

    from gpu_worker import train as tr
    from gpu_worker import train_stages as stages

    stop_after = args.warmup + args.steps
    token = CancelToken()
    events: list[tuple[float, dict]] = []

    def emit(event: dict) -> None:
        if event.get("event") != "progress":
            return
        events.append((time.perf_counter(), event))
        if event.get("stage") == "training" and (event.get("step") or 0) >= stop_after:
            token.cancel()

    options = tr.TrainOptions(
        epochs=100_000, save_every=100_000, batch_size=args.batch_size, f0_method=args.f0
    )
    job = tr._job(
        [Path(args.sample)], Path(args.exp), "bench", Path(args.assets), args.device, options
    )
    start = time.perf_counter()
    with contextlib.suppress(tr.Cancelled):  # stopped after the measured steps
        stages.run_job(job, emit, token)
    end_training = time.perf_counter()

    # The index stage (after training in a real run; the loop was stopped before it here).
    t0 = time.perf_counter()
    stages._index(
        Path(args.exp), "bench", options, True, stages.Reporter(lambda e: None), token=None
    )
    index_s = time.perf_counter() - t0

    first: dict[str, float] = {}
    for t, e in events:
        first.setdefault(e["stage"], t)
    order = [s for s in tr.STAGES if s in first]
    stage_s = {}
    for i, s in enumerate(order):
        nxt = first[order[i + 1]] if i + 1 < len(order) else end_training
        stage_s[s] = round(nxt - first[s], 2)
    stage_s["indexing"] = round(index_s, 2)
    steps = [(t, e["step"]) for t, e in events if e["stage"] == "training" and e.get("epoch")]
    step_times: dict[int, float] = {}
    for t, n in steps:
        step_times.setdefault(n, t)
    loading = next(t for t, e in events if e["stage"] == "training")
    ordered = sorted(step_times.items())
    deltas = [b[1] - a[1] for a, b in zip(ordered, ordered[1:], strict=False) if b[0] == a[0] + 1]
    measured = deltas[max(0, args.warmup - 1) :][: args.steps]
    out = {
        "stage_s": stage_s,
        "first_step_s": round(ordered[0][1] - loading, 2) if ordered else None,
        "step_s": [round(d, 2) for d in measured],
        "median_step_s": round(statistics.median(measured), 2) if measured else None,
        "steps_run": len(ordered),
        "pipeline_s": round(end_training - start, 2),
    }
    exp = Path(args.exp)
    out["slices"] = len(list((exp / "0_gt_wavs").glob("*.wav")))
    out["steps_per_epoch"] = steps_per_epoch(exp, args.batch_size)
    if args.device.startswith("cuda"):
        import torch

        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        out["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20)
        out["gpu"] = torch.cuda.get_device_name()
    print("CHILD " + json.dumps(out), flush=True)


def wait_for_idle(max_wait_s: float) -> float:
    from bench.separation import wait_for_idle as wait

    return wait(max_wait_s)


def run_measured(args: argparse.Namespace, sample: Path, assets: Path, work: Path) -> dict:
    from gpu_worker.cpu import fast_allocator_env

    plain = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    env = fast_allocator_env(plain) if args.allocator == "tcmalloc" else plain
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child",
        "--sample", str(sample), "--exp", str(work / "exp"), "--assets", str(assets),
        "--device", args.device, "--batch-size", str(args.batch_size), "--f0", args.f0,
        "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    log = work / "child.log"
    waited = wait_for_idle(args.wait_idle) if args.wait_idle else 0.0
    with open(log, "w") as f:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    lines = [x for x in text.splitlines() if x.startswith("CHILD ")]
    if code != 0 or not lines:
        raise SystemExit(f"the measured process failed ({code}):\n{text[-3000:]}")
    out = json.loads(lines[-1][6:])
    out["waited_for_idle_s"] = round(waited, 1)
    out["process_wall_s"] = round(wall, 2)
    out["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    out["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the median")
    parser.add_argument("--steps", type=int, default=5, help="steps measured after the warm-up")
    parser.add_argument("--f0", default="rmvpe", help="pitch method for the training data")
    parser.add_argument("--allocator", choices=["tcmalloc", "glibc"], default="tcmalloc")
    parser.add_argument("--assets", type=Path, help="real assets folder (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the training folder")
    parser.add_argument(
        "--wait-idle", type=float, default=60.0, help="seconds to wait for idle CPUs first"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    parser.add_argument("--exp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    if args.child:
        return child(args)

    import torch

    from gpu_worker.cpu import available_cpus, find_tcmalloc

    assets, weights = ensure_assets(args.assets)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="encore-bench-train-"))
    try:
        sample = make_sample(work, args.seconds)
        measured = run_measured(args, sample, assets, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    params = {}
    for name in ("f0G40k", "f0D40k"):
        state = torch.load(assets / "pretrained_v2" / f"{name}.pth", weights_only=True)["model"]
        params[name] = sum(v.numel() for v in state.values())
    median = measured.get("median_step_s")
    epoch_s = median * measured["steps_per_epoch"] if median else None
    result = {
        "input": {"seconds": args.seconds, "sample_rate": SR, "channels": 2, "synthetic": True},
        "device": args.device,
        "weights": weights,
        "parameters": params,
        "settings": {
            "batch_size": args.batch_size,
            "f0_method": args.f0,
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "allocator": args.allocator,
            "precision": "rvc-next auto (fp16 on GPUs that qualify, else fp32)",
        },
        "machine": {
            "cpus": available_cpus(),
            "torch": torch.__version__,
            "tcmalloc": find_tcmalloc(),
            "loadavg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        **measured,
        "estimates": {
            "epoch_s": round(epoch_s, 1) if epoch_s else None,
            "hours_for_200_epochs": round(200 * epoch_s / 3600, 2) if epoch_s else None,
        },
        "work_dir": str(work) if args.keep else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
