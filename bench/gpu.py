"""Benchmark: a cover on a GPU, cold (a new process) against warm (models resident).

    python bench/gpu.py [--seconds 210] [--device cuda] [--f0 rmvpe]
    python bench/gpu.py --device cpu --tiny --seconds 10     # a quick smoke check on CPU

Prints one JSON object. Two songs of `--seconds` (`flows.demo.synth_song`, 3.5 minutes by
default) are covered one after the other by one new process, as a warm heavy-step host
(`flows.warm host`) runs them: decode, separate (Demucs, `precision="auto"`), convert (RVC,
`precision="auto"`), remix, each on `--device`.

- `cold`: the first cover, counted from the process's start: interpreter start and imports,
  starting CUDA, loading every model, and the steps; what each heavy step cost when it ran as
  a new process.
- `warm`: the second cover (another song, so every step runs) in the same process: the
  models stay loaded, `models_loaded` (`gpu_worker.loads`) is 0.

Without `--model-dir` / `--rvc-dir`, full-size models with random weights are generated once
under ~/.cache/encore/bench, as bench/cover.py does (htdemucs, HuBERT base, RMVPE and a v2
40 kHz voice with its index): timings are those of the real architectures. `--tiny` uses the
tests' tiny models instead (seconds on a CPU; for checking that the bench runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SR = 44100


def child(args: argparse.Namespace) -> None:
    """One process: two covers back to back, reported as `CHILD <json>`."""
    began = float(args.started)  # the parent's clock when it started this process
    t0 = time.time()
    import torch

    from gpu_worker import convert as vc
    from gpu_worker import loads
    from gpu_worker import separate as sep
    from gpu_worker.audio import decode
    from gpu_worker.remix import MixOptions, remix

    imported = time.time()
    if args.device.startswith("cuda"):
        torch.cuda.init()
        torch.zeros(1, device=args.device)  # the context exists from here on
        torch.cuda.synchronize()
    cuda_ready = time.time()
    model_dir, assets = Path(args.model_dir), Path(args.assets)
    work = Path(args.work)
    sep_options = sep.SeparationOptions(model="htdemucs", device=args.device, precision="auto")
    params = vc.VoiceParams(f0_method=args.f0)

    def cover(song: Path, name: str) -> dict:
        out = work / name
        out.mkdir()
        before = loads.total()
        steps = {}
        start = time.perf_counter()
        audio = decode(song, SR, 2)
        steps["decode"] = time.perf_counter() - start
        start = time.perf_counter()
        stems = sep.separate(audio, out / "stems", model_dir=model_dir, options=sep_options)
        _sync(torch, args.device)
        steps["separate"] = time.perf_counter() - start
        start = time.perf_counter()
        vocal = vc.convert(
            stems["vocals"],
            out / "converted.wav",
            voice_pth=Path(args.voice),
            index_path=Path(args.index),
            assets_dir=assets,
            device=args.device,
            params=params,
        )
        _sync(torch, args.device)
        steps["convert"] = time.perf_counter() - start
        start = time.perf_counter()
        remix(vocal, stems["instrumental"], out / "cover.mp3", MixOptions())
        steps["remix"] = time.perf_counter() - start
        return {"steps_s": steps, "models_loaded": loads.total() - before}

    cold = cover(Path(args.songs.split(",")[0]), "cold")
    cold_done = time.time()
    warm = cover(Path(args.songs.split(",")[1]), "warm")
    info = {
        "process_start_s": t0 - began,
        "import_s": imported - t0,
        "cuda_init_s": cuda_ready - imported,
        "cold": {**cold, "from_process_start_s": cold_done - began},
        "warm": warm,
        "torch": torch.__version__,
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(args.device)
        info["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(args.device) / 2**20
    print("CHILD " + json.dumps(info), flush=True)


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tiny_models(root: Path) -> tuple[Path, Path, Path, Path, str]:
    """The tests' tiny models: (Demucs folder, RVC assets, voice, index, description)."""
    from tests.conftest import build_model_folder
    from tests.tiny_rvc import build_index, build_voice

    folder = build_model_folder(root / "models")
    voices = root / "voice"
    voices.mkdir()
    voice = build_voice(voices / "tiny.pth", seed=1, name="tiny")
    index = build_index(voices, "tiny", 1)
    return folder / "demucs", folder / "rvc", voice, index, "tiny random-weight models (tests)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=210.0)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--f0", default="rmvpe", help="pitch method")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models")
    parser.add_argument("--model-dir", type=Path, help="Demucs weights (default: random)")
    parser.add_argument("--rvc-dir", type=Path, help="holds assets/ and voices/ (default: random)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("songs", "work", "assets", "voice", "index", "started"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from bench.cover import ensure_rvc
    from bench.separation import ensure_model, run_child
    from flows.demo import synth_song
    from gpu_worker.audio import write_wav

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("No CUDA device here; run with --device cpu for a smoke check.")
    work = Path(tempfile.mkdtemp(prefix="encore-bench-gpu-"))
    try:
        if args.tiny:
            model_dir, assets, voice, index, weights = tiny_models(work)
        else:
            model_dir, demucs_weights = ensure_model(args.model_dir, "htdemucs")
            assets, voice, index, rvc_weights = ensure_rvc(args.rvc_dir)
            weights = f"demucs: {demucs_weights}; rvc: {rvc_weights}"
        songs = [
            write_wav(work / f"song{i}.wav", synth_song(args.seconds, seed=i), SR) for i in (1, 2)
        ]
        (work / "run").mkdir()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
        cmd += ["--songs", ",".join(map(str, songs)), "--work", str(work / "run")]
        cmd += ["--model-dir", str(model_dir), "--assets", str(assets)]
        cmd += ["--voice", str(voice), "--index", str(index), "--f0", args.f0]
        cmd += ["--device", args.device, "--started", repr(time.time())]
        run = run_child(cmd, dict(os.environ), work / "child.log")
        lines = [x for x in (work / "child.log").read_text().splitlines() if x.startswith("CHILD ")]
        info = json.loads(lines[-1][6:])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rounded(d: dict) -> dict:
        return {k: round(v, 2) for k, v in d.items()}

    cold, warm = info["cold"], info["warm"]
    cold_steps, warm_steps = sum(cold["steps_s"].values()), sum(warm["steps_s"].values())
    cold_total = cold["from_process_start_s"]
    result = {
        "bench": "gpu",
        "device": args.device,
        "gpu": info.get("gpu"),
        "song_seconds": args.seconds,
        "weights": weights,
        "f0_method": args.f0,
        "torch": info["torch"],
        "cold": {
            "total_s": round(cold_total, 2),
            "process_start_s": round(info["process_start_s"], 2),
            "import_s": round(info["import_s"], 2),
            "cuda_init_s": round(info["cuda_init_s"], 2),
            "steps_s": rounded(cold["steps_s"]),
            "models_loaded": cold["models_loaded"],
            "rtf": round(cold_total / args.seconds, 3),
        },
        "warm": {
            "total_s": round(warm_steps, 2),
            "steps_s": rounded(warm["steps_s"]),
            "models_loaded": warm["models_loaded"],
            "rtf": round(warm_steps / args.seconds, 3),
        },
        "warm_saves_s": round(cold_total - warm_steps, 2),
        "speedup_warm_vs_cold": round(cold_total / max(warm_steps, 1e-3), 2),
        "cold_steps_only_s": round(cold_steps, 2),
        "peak_rss_mb": round(run["peak_rss_mb"]),
        "peak_gpu_memory_mb": round(info["peak_gpu_memory_mb"]) if "gpu" in info else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
