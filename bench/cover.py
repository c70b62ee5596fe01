"""Benchmark: one cover, end to end through the engine, against the libraries' own paths.

    python bench/cover.py [--seconds 60] [--f0 rmvpe] [--model-dir DIR] [--rvc-dir DIR]
                          [--device cpu|cuda]

Prints one JSON object. The input is `flows.demo.synth_song(seconds)` encoded as an mp3.

- ours: one process (started with the allocator the engine's entry points use, tcmalloc when
  installed) that loads the models, as a warm worker holds them, then runs the engine steps
  decode -> separate (Demucs, `precision="auto"`) -> convert (RVC, `precision="auto"`) ->
  remix, timing each. A new song runs every step; a cached song (stems already stored) runs
  convert and remix only.
- baseline: the libraries' own paths one after the other, each as a user runs it: the
  `demucs` CLI on the same model and input (its defaults, `--two-stems vocals`), rvc-next's plain
  `OfflineConverter` on the whole vocal at its default settings (a process of its own), and the
  same remix. Every process starts with the default allocator.

Wall times of processes include interpreter start, imports and model loading; `steps_s` of
ours excludes them (a warm worker). Peak RSS is each process's own (`os.wait4`). After the
timed steps, ours also converts the first `--snr-seconds` of the vocal in fp32 and in the
precision it used, with the same seed, and reports the SNR between them.

Without `--model-dir` / `--rvc-dir`, full-size models with random weights are generated once
under ~/.cache/encore/bench: htdemucs (bench/separation.py's builder), and a v2 40 kHz voice with
rvc-next's real generator config, a faiss index, HuBERT base (12 layers, 94 M parameters) and
RMVPE. Timings are those of the real architectures; what they sing is noise.
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

from bench.separation import CACHE, ensure_model, run_child, snr_db  # noqa: E402

SR = 44100
GOAL_NEW_SONG_RTF = 1.0
GOAL_CACHED_SONG_RTF = 0.5


def ensure_rvc(rvc_dir: Path | None) -> tuple[Path, Path, Path, str]:
    """(assets folder, voice .pth, index) of the RVC models, generating full-size random ones."""
    if rvc_dir is not None:
        voices = sorted((rvc_dir / "voices").glob("*.pth"))
        indexes = sorted((rvc_dir / "voices").glob("*.index"))
        if not voices or not indexes:
            raise SystemExit(f"{rvc_dir}/voices needs a voice .pth and its .index")
        return rvc_dir / "assets", voices[0], indexes[0], f"from {rvc_dir}"
    from tests.tiny_rvc import FULL_MODEL, build_hubert, build_index, build_rmvpe, build_voice

    root = CACHE / "rvc-random-full"
    assets, voices = root / "assets", root / "voices"
    if not (assets / "hubert_base" / "pytorch_model.bin").is_file():
        build_hubert(assets, full=True)
    if not (assets / "rmvpe" / "rmvpe.pt").is_file():
        build_rmvpe(assets)
    voice = voices / "full.pth"
    if not voice.is_file():
        build_voice(voice, model=FULL_MODEL)
    index = next(iter(sorted(voices.glob("added_*_full_v2.index"))), None)
    if index is None:
        index = build_index(voices, name="full", vectors=20000)
    return assets, voice, index, "random weights, full-size v2 40k voice, HuBERT base, RMVPE"


def make_input(work: Path, seconds: float) -> Path:
    from flows.demo import synth_song
    from gpu_worker.audio import encode, write_wav

    wav = write_wav(work / "song.wav", synth_song(seconds), SR)
    mp3 = encode(wav, work / "song.mp3", "mp3")
    wav.unlink()
    return mp3


def child_result(log: Path) -> dict:
    lines = [x for x in log.read_text().splitlines() if x.startswith("CHILD ")]
    return json.loads(lines[-1][6:])


# -- ours: the engine's steps in one warm process ---------------------------------------------


def child_ours(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from gpu_worker import convert as vc
    from gpu_worker import cpu
    from gpu_worker import rvc_synthesis as syn
    from gpu_worker import separate as sep
    from gpu_worker.audio import decode
    from gpu_worker.remix import MixOptions, remix

    t1 = time.perf_counter()
    work, model_dir, assets = Path(args.work), Path(args.model_dir), Path(args.assets)
    sep_options = sep.SeparationOptions(precision="auto", device=args.device)
    params = vc.VoiceParams(f0_method=args.f0)
    # A warm worker holds the models: load them first, outside the timed steps.
    sep.load_model(model_dir, sep_options.model, sep_options.device)
    runtime = vc.engine_runtime(assets, args.device)
    runtime.voice(args.voice)
    runtime.index(args.index)
    runtime.hubert()
    runtime.f0(params.engine_f0_method)
    t2 = time.perf_counter()

    steps = {}
    start = time.perf_counter()
    audio = decode(Path(args.input), SR, 2)
    steps["decode"] = time.perf_counter() - start

    start = time.perf_counter()
    stems = sep.separate(audio, work / "stems", model_dir=model_dir, options=sep_options)
    _sync(args.device)
    steps["separate"] = time.perf_counter() - start

    start = time.perf_counter()
    vocal = vc.convert(
        stems["vocals"],
        work / "converted.wav",
        voice_pth=Path(args.voice),
        index_path=Path(args.index),
        assets_dir=assets,
        device=args.device,
        params=params,
        precision=args.precision,
    )
    _sync(args.device)
    steps["convert"] = time.perf_counter() - start

    start = time.perf_counter()
    mixed = remix(vocal, stems["instrumental"], work / "cover.mp3", MixOptions())
    steps["remix"] = time.perf_counter() - start

    info: dict = {"import_s": t1 - t0, "load_s": t2 - t1, "steps": steps}
    loud = mixed.loudness
    info["mix"] = {"lufs": loud.integrated_lufs, "true_peak_dbtp": loud.true_peak_dbtp}
    info["separation_precision"] = sep.default_precision(args.device)
    net_g = runtime.voice(args.voice).net_g
    info["conversion_precision"] = syn._resolve_precision(args.precision, args.device, net_g)
    info["tcmalloc"] = cpu.fast_allocator_active()
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if args.snr_seconds > 0:
        info["precision_check"] = precision_check(args, runtime, stems["vocals"], params)
    print("CHILD " + json.dumps(info))


def _sync(device: str) -> None:
    """Wait for the GPU's queued work, so a step's time is its own."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def precision_check(args: argparse.Namespace, runtime, vocal: Path, params) -> dict:
    """Convert the first seconds of the vocal in fp32 and in the chosen precision; SNR, times."""
    from gpu_worker import convert as vc
    from gpu_worker import rvc_synthesis as syn
    from gpu_worker.audio import read_wav

    audio, rate = read_wav(vocal)
    x16 = syn.resample(audio.mean(axis=0)[: int(args.snr_seconds * rate)], rate, syn.SR_16K)
    voice, index = runtime.voice(args.voice), runtime.index(args.index)
    out, secs = {}, {}
    for precision in ("fp32", syn._resolve_precision(args.precision, args.device, voice.net_g)):
        start = time.perf_counter()
        out[precision] = vc.convert_16k(x16, runtime, voice, index, params, precision=precision)[0]
        secs[precision] = round(time.perf_counter() - start, 2)
    result = {"seconds": args.snr_seconds, "convert_s": secs}
    if len(out) > 1:
        result["snr_db_vs_fp32"] = snr_db(out["fp32"], out["bf16"])
    return result


# -- baseline: rvc-next's own offline converter on the whole vocal ----------------------------


def child_rvc(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from rvc_next.engine.audio.io import decode, encode
    from rvc_next.engine.convert.offline import OfflineConverter
    from rvc_next.engine.convert.params import VoiceParams
    from rvc_next.engine.runtime import Runtime

    runtime = Runtime(Path(args.assets), device=args.device)
    voice = runtime.voice(args.voice)
    index = runtime.index(args.index)
    t1 = time.perf_counter()
    audio, _ = decode(args.input, 16000, mono=True)
    y, rate = OfflineConverter(runtime).convert(
        audio, voice, VoiceParams(f0_method=args.f0), index=index
    )
    encode(args.out, y, rate)
    t2 = time.perf_counter()
    info = {"load_s": t1 - t0, "convert_s": t2 - t1, "output_s": len(y) / rate}
    print("CHILD " + json.dumps(info))


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--f0", default="rmvpe", help="pitch method (both sides)")
    parser.add_argument("--precision", default="auto", help="ours: auto, fp32 or bf16")
    parser.add_argument("--allocator", choices=["tcmalloc", "glibc"], default="tcmalloc")
    parser.add_argument("--model-dir", type=Path, help="Demucs weights (default: random)")
    parser.add_argument("--rvc-dir", type=Path, help="holds assets/ and voices/ (default: random)")
    parser.add_argument("--snr-seconds", type=float, default=20.0, help="0 skips the check")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    parser.add_argument("--child", choices=["ours", "rvc"], help=argparse.SUPPRESS)
    for hidden in ("input", "work", "assets", "voice", "index", "out"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "ours":
        return child_ours(args)
    if args.child == "rvc":
        return child_rvc(args)

    import torch

    from gpu_worker import cpu
    from gpu_worker.remix import MixOptions, remix

    model = "htdemucs"
    model_dir, demucs_weights = ensure_model(args.model_dir, model)
    assets, voice, index, rvc_weights = ensure_rvc(args.rvc_dir)
    work = Path(tempfile.mkdtemp(prefix="encore-bench-cover-"))
    song = make_input(work, args.seconds)
    plain_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    ours_env = cpu.fast_allocator_env(plain_env) if args.allocator == "tcmalloc" else plain_env
    common = ["--assets", str(assets), "--voice", str(voice), "--index", str(index)]
    common += ["--f0", args.f0, "--device", args.device]
    me = [sys.executable, str(Path(__file__).resolve())]

    load_before = os.getloadavg()
    (work / "ours").mkdir()
    ours_cmd = [*me, "--child", "ours", "--input", str(song), "--work", str(work / "ours")]
    ours_cmd += ["--model-dir", str(model_dir), "--precision", args.precision]
    ours_cmd += ["--snr-seconds", str(args.snr_seconds), *common]
    ours_run = run_child(ours_cmd, ours_env, work / "ours.log")
    ours = child_result(work / "ours.log")

    baseline = None
    if not args.no_baseline:
        cli_cmd = [
            sys.executable, "-m", "demucs", "-n", model, "--repo", str(model_dir),
            "--two-stems", "vocals", "-d", args.device, "-o", str(work / "cli"), str(song),
        ]  # fmt: skip
        cli = run_child(cli_cmd, plain_env, work / "cli.log")
        stems = work / "cli" / model / song.stem
        rvc_cmd = [*me, "--child", "rvc", "--input", str(stems / "vocals.wav")]
        rvc_cmd += ["--out", str(work / "rvc.wav"), *common]
        rvc = run_child(rvc_cmd, plain_env, work / "rvc.log")
        rvc.update(child_result(work / "rvc.log"))
        start = time.perf_counter()
        remix(work / "rvc.wav", stems / "no_vocals.wav", work / "baseline.mp3", MixOptions())
        mix_s = time.perf_counter() - start
        total = cli["wall_s"] + rvc["wall_s"] + mix_s
        baseline = {
            "demucs_cli": {
                "wall_s": round(cli["wall_s"], 2),
                "peak_rss_mb": round(cli["peak_rss_mb"]),
            },
            "rvc_next_offline_converter": {
                "wall_s": round(rvc["wall_s"], 2),
                "load_s": round(rvc["load_s"], 2),
                "convert_s": round(rvc["convert_s"], 2),
                "output_seconds": round(rvc["output_s"], 3),
                "peak_rss_mb": round(rvc["peak_rss_mb"]),
            },
            "remix_s": round(mix_s, 2),
            "total_s": round(total, 2),
            "rtf": round(total / args.seconds, 3),
            "command": " ".join(["python", *cli_cmd[1:]]),
        }
    load_after = os.getloadavg()

    steps = {k: round(v, 2) for k, v in ours["steps"].items()}
    total = sum(ours["steps"].values())
    cached = ours["steps"]["convert"] + ours["steps"]["remix"]
    result = {
        "input": {"seconds": args.seconds, "source": "flows.demo.synth_song, mp3"},
        "weights": {"demucs": demucs_weights, "rvc": rvc_weights},
        "machine": {
            "cpus": cpu.available_cpus(),
            "torch": torch.__version__,
            "native_bf16": cpu.cpu_has_native_bf16(),
            "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
            "loadavg_1_5_15_after": [round(x, 2) for x in load_after],
        },
        "ours": {
            "steps_s": steps,
            "total_s": round(total, 2),
            "rtf_new_song": round(total / args.seconds, 3),
            "rtf_cached_song": round(cached / args.seconds, 3),
            "model_load_s": round(ours["load_s"], 2),
            "import_s": round(ours["import_s"], 2),
            "process_wall_s": round(ours_run["wall_s"], 2),
            "peak_rss_mb": round(ours_run["peak_rss_mb"]),
            "separation_precision": ours["separation_precision"],
            "conversion_precision": ours["conversion_precision"],
            "allocator": "tcmalloc" if ours["tcmalloc"] else "glibc",
            "torch_threads": ours["torch_threads"],
            "f0_method": args.f0,
            "mix": {k: round(v, 2) for k, v in ours["mix"].items()},
        },
        "precision_check": ours.get("precision_check"),
        "baseline": baseline,
        "goal": {
            "rtf_new_song_max": GOAL_NEW_SONG_RTF,
            "rtf_cached_song_max": GOAL_CACHED_SONG_RTF,
            "new_song_met": total / args.seconds <= GOAL_NEW_SONG_RTF,
            "cached_song_met": cached / args.seconds <= GOAL_CACHED_SONG_RTF,
        },
    }
    if baseline is not None:
        # Process walls on both sides: interpreter start, imports, model loads and the work.
        # Ours' process also ran the precision check after the steps: not counted.
        ours_cold = ours_run["wall_s"] - ours_check_s(ours)
        rvc_convert = baseline["rvc_next_offline_converter"]["convert_s"]
        result["speedup_vs_baseline"] = {
            "all_processes": round(baseline["total_s"] / ours_cold, 2),
            "conversion_only": round(rvc_convert / ours["steps"]["convert"], 2),
        }
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def ours_check_s(ours: dict) -> float:
    check = ours.get("precision_check") or {}
    return float(sum(check.get("convert_s", {}).values()))


if __name__ == "__main__":
    main()
