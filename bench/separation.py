"""Benchmark: Encore's separation step against the `demucs` CLI on the same model and input.

    python bench/separation.py [--seconds 60] [--model-dir DIR] [--repeats 3]

Prints one JSON object. Each contender runs as its own process (so wall time includes
interpreter start, imports and model load for both, and peak RSS is that process's own,
from `os.wait4`); runs are interleaved `--repeats` times and the best wall time counts,
because other work on a shared machine slows single runs down; before each run it
waits (up to `--wait-idle` seconds) for the CPUs to be idle. Every output is compared
with fp32 `demucs.apply.apply_model` computed in this process (CLI normalisation, shifts=0,
overlap 0.25): SNR in dB over all stems.

Without `--model-dir`, a full-size htdemucs with random weights (the released architecture,
41,984,456 parameters, 84 MB) is generated once into a cache folder: timings are then those
of the real model, SNR figures those of random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

SR = 44100
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "encore" / "bench"
VARIANTS = {
    # name: (precision, allocator, workers); workers 0 = auto (one torch thread per chunk)
    "ours_bf16_tcmalloc": ("bf16", "tcmalloc", 0),
    "ours_bf16_tcmalloc_1worker": ("bf16", "tcmalloc", 1),
    "ours_bf16_glibc": ("bf16", "glibc", 0),
    "ours_fp32_tcmalloc": ("fp32", "tcmalloc", 0),
}


def synth(seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo 'song': bass line, chords, a vibrato lead and noise-burst drums."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    beat = t % 0.5
    notes = np.array([55, 65.4, 73.4, 49])[(t // 2).astype(int) % 4]
    bass = 0.25 * np.sin(2 * np.pi * np.cumsum(notes) / SR)
    chord = sum(0.06 * np.sin(2 * np.pi * f * t) for f in (262, 330, 392, 494))
    lead = 0.15 * np.sin(2 * np.pi * 440 * t + 4 * np.sin(2 * np.pi * 5.5 * t))
    lead *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t) ** 2
    drums = 0.3 * np.exp(-25 * beat) * rng.standard_normal(n)
    left = bass + chord + lead + drums
    right = bass + 0.8 * chord + lead + 0.9 * drums
    return np.stack([left, right]).astype(np.float32)


def ensure_model(model_dir: Path | None, name: str) -> tuple[Path, str]:
    if model_dir is not None:
        return model_dir, f"from {model_dir}"
    from tests.tiny_demucs import build_demucs_repo, full_htdemucs_kwargs

    folder = CACHE / "htdemucs-random-full"
    if not (folder / f"{name}.yaml").exists():
        build_demucs_repo(folder, name, kwargs=full_htdemucs_kwargs(), seed=0)
    return folder, "random weights, full htdemucs architecture"


def cpu_idle_fraction(seconds: float = 1.0) -> float:
    def read() -> list[int]:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]

    a = read()
    time.sleep(seconds)
    b = read()
    delta = [y - x for x, y in zip(a, b, strict=True)]
    return (delta[3] + delta[4]) / max(1, sum(delta))


def wait_for_idle(max_wait_s: float, idle: float = 0.85) -> float:
    """Wait (up to `max_wait_s`) until other processes leave the CPUs mostly idle."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait_s:
        try:
            if cpu_idle_fraction() >= idle:
                break
        except OSError:  # no /proc/stat
            break
    return time.monotonic() - start


def run_child(cmd: list[str], env: dict[str, str], log: Path, max_wait_s: float = 0) -> dict:
    """Run `cmd`; wall seconds, peak RSS (MB) and exit status of that process alone."""
    if max_wait_s:
        wait_for_idle(max_wait_s)
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{cmd[:4]}... failed ({proc.returncode}):\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024}


def child_ours(args: argparse.Namespace) -> None:
    """In a child process: decode-free load of the input, model load, separation."""
    t0 = time.perf_counter()
    import soundfile as sf

    from gpu_worker import cpu
    from gpu_worker import separate as sep

    t1 = time.perf_counter()
    audio = sf.read(args.input, dtype="float32", always_2d=True)[0].T
    options = sep.SeparationOptions(
        model=args.model, precision=args.precision, workers=args.workers
    )
    sep.load_model(Path(args.model_dir), args.model, options.device)
    t2 = time.perf_counter()
    sep.separate(audio, Path(args.out), model_dir=Path(args.model_dir), options=options)
    t3 = time.perf_counter()
    info = {"import_s": t1 - t0, "load_s": t2 - t1, "separate_s": t3 - t2}
    info["tcmalloc"] = cpu.fast_allocator_active()
    print("CHILD " + json.dumps(info))


def reference(model_dir: Path, name: str, audio: np.ndarray) -> tuple[dict, float]:
    """fp32 apply_model as Demucs's Separator runs it, and how long it took (with loading)."""
    from tests.tiny_demucs import demucs_reference

    start = time.perf_counter()
    stems = demucs_reference(model_dir, name, audio)
    return stems, time.perf_counter() - start


def snr_db(ref: np.ndarray, test: np.ndarray) -> float | str:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - test) ** 2))
    return round(float(10 * np.log10(np.sum(ref**2) / noise)), 2) if noise else "inf"


def compare(ref: dict, folder: Path) -> dict:
    import soundfile as sf

    got = {k: sf.read(str(folder / f"{k}.wav"), dtype="float32")[0].T for k in ref}
    for k in ref:
        assert got[k].shape == ref[k].shape, (k, got[k].shape, ref[k].shape)
    every = snr_db(np.concatenate(list(ref.values())), np.concatenate(list(got.values())))
    return {"snr_db": every, "snr_db_per_stem": {k: snr_db(ref[k], got[k]) for k in ref}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="htdemucs")
    parser.add_argument("--model-dir", type=Path, help="real weights (default: random full-size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of " + ",".join(VARIANTS))
    parser.add_argument("--cli-shifts", type=int, default=0, help="the CLI's own default is 1")
    parser.add_argument(
        "--wait-idle", type=float, default=60.0, help="seconds to wait for idle CPUs before a run"
    )
    parser.add_argument("--child", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_ours(args)

    import soundfile as sf
    import torch

    from gpu_worker import cpu
    from gpu_worker import separate as sep

    variants = [v for v in args.variants.split(",") if v]
    model_dir, weights = ensure_model(args.model_dir, args.model)
    work = Path(tempfile.mkdtemp(prefix="encore-bench-sep-"))
    audio = synth(args.seconds)
    track = work / "song.wav"
    sf.write(str(track), audio.T, SR, subtype="FLOAT")
    plain_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    envs = {"glibc": plain_env, "tcmalloc": cpu.fast_allocator_env(plain_env)}

    cli_cmd = [
        sys.executable, "-m", "demucs", "-n", args.model, "--repo", str(model_dir),
        "-o", str(work / "cli"), "--float32", "--clip-mode", "none",
        "--shifts", str(args.cli_shifts), "-d", "cpu", str(track),
    ]  # fmt: skip
    runs: dict[str, list[dict]] = {"cli": [], **{v: [] for v in variants}}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        runs["cli"].append(run_child(cli_cmd, plain_env, work / "cli.log", args.wait_idle))
        for v in variants:
            precision, allocator, workers = VARIANTS[v]
            cmd = [
                sys.executable, str(Path(__file__).resolve()), "--child", "ours",
                "--input", str(track), "--model-dir", str(model_dir), "--model", args.model,
                "--precision", precision, "--workers", str(workers), "--out", str(work / v),
            ]  # fmt: skip
            run = run_child(cmd, envs[allocator], work / f"{v}.log", args.wait_idle)
            lines = (work / f"{v}.log").read_text().splitlines()
            run.update(json.loads([x for x in lines if x.startswith("CHILD ")][-1][6:]))
            runs[v].append(run)
    load_after = os.getloadavg()[0]

    torch.set_num_threads(cpu.available_cpus())
    ref, ref_s = reference(model_dir, args.model, audio)

    def summary(rs: list[dict]) -> dict:
        best = min(rs, key=lambda r: r["wall_s"])
        out = {"wall_s": [round(r["wall_s"], 2) for r in rs]}
        out["best_wall_s"] = round(best["wall_s"], 2)
        out["cpu_s"] = [round(r["cpu_s"], 1) for r in rs]
        out["peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in rs))
        if "separate_s" in best:
            out["best_separate_s"] = round(min(r["separate_s"] for r in rs), 2)
            out["load_s"] = round(best["load_s"], 2)
            out["tcmalloc_loaded"] = best["tcmalloc"]
        return out

    cli = summary(runs["cli"])
    cli["command"] = " ".join(["python", *cli_cmd[1:]])
    cli.update(compare(ref, work / "cli" / args.model / track.stem))
    ours = {}
    for v in variants:
        precision, allocator, workers = VARIANTS[v]
        plan = sep.cpu_plan(0, workers)
        ours[v] = {"precision": precision, "allocator": allocator}
        ours[v].update({"workers": plan[0], "threads_per_worker": plan[1], **summary(runs[v])})
        ours[v]["speedup_vs_cli"] = round(cli["best_wall_s"] / ours[v]["best_wall_s"], 2)
        # a long-lived worker keeps the model loaded: only the separation itself repeats
        ours[v]["speedup_warm_vs_cli"] = round(cli["best_wall_s"] / ours[v]["best_separate_s"], 2)
        cpu_ratio = min(cli["cpu_s"]) / min(ours[v]["cpu_s"])
        ours[v]["cpu_time_ratio_vs_cli"] = round(cpu_ratio, 2)
        ours[v].update(compare(ref, work / v))
    met = [v for v in variants if ours[v]["speedup_vs_cli"] >= 2 and float(ours[v]["snr_db"]) >= 40]
    model = sep.load_model(model_dir, args.model)
    result = {
        "input": {"seconds": args.seconds, "sample_rate": SR, "channels": 2, "synthetic": True},
        "model": args.model,
        "weights": weights,
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {"overlap": 0.25, "shifts_ours": 0, "shifts_cli": args.cli_shifts},
        "machine": {
            "cpus": cpu.available_cpus(),
            "torch": torch.__version__,
            "native_bf16": cpu.cpu_has_native_bf16(),
            "tcmalloc": cpu.find_tcmalloc(),
            "loadavg_before_after": [round(load_before, 2), round(load_after, 2)],
            "waited_for_idle_s_max": args.wait_idle,
        },
        "cli": cli,
        "ours": ours,
        "reference_fp32_apply_model_in_process_s": round(ref_s, 2),
        "goal": {"speedup_min": 2.0, "snr_min_db": 40.0, "met_by": met},
    }
    print(json.dumps(result, indent=2))
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
