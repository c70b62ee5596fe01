"""Remix: the converted vocal over the instrumental, in one ffmpeg filter graph.

The graph applies the gains, an optional reverb on the vocal, a 20 Hz high-pass, the loudness
gain and a true-peak limiter (4x oversampled), then encodes. Loudness is measured on the encoded
result and the gain corrected until it sits within `tolerance_lu` of the target, because the
limiter and lossy codecs both move it. The output has exactly the instrumental's sample count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from gpu_worker.audio import Loudness, encode_args, measure_loudness, parse_ebur128, run_ffmpeg
from gpu_worker.errors import BadAudio

MAX_GAIN_DB = 60.0  # enough for a very quiet mix; more would only raise noise
OVERSAMPLE = 4
MAX_RENDERS = 6
HIGHPASS_HZ = 20  # DC and subsonic rumble eat headroom without adding loudness


@dataclass(frozen=True)
class MixOptions:
    vocal_gain_db: float = 0.0
    instrumental_gain_db: float = 0.0
    reverb: float = 0.0  # 0 (dry) .. 1 (a large hall)
    loudness_lufs: float = -14.0
    true_peak_dbtp: float = -1.0
    format: str = "mp3"
    tolerance_lu: float = 0.3


@dataclass(frozen=True)
class MixResult:
    path: Path
    loudness: Loudness
    samples: int
    sample_rate: int


def _reverb(amount: float) -> str:
    """A small multi-tap echo that reads as room reverb; `amount` scales the wet part."""
    amount = min(max(amount, 0.0), 1.0)
    decays = "|".join(f"{d * amount:.3f}" for d in (0.45, 0.32, 0.22, 0.15))
    return f",aecho=1.0:1.0:43|71|97|131:{decays}"


def mix_graph(samples: int, rate: int, opts: MixOptions, gain_db: float, ceiling_db: float) -> str:
    """The filter graph: two inputs ([0] vocal, [1] instrumental) to [out]."""
    fmt = f"aformat=sample_fmts=fltp:sample_rates={rate}:channel_layouts=stereo"
    vocal = f"[0:a]{fmt},volume={opts.vocal_gain_db:.3f}dB"
    if opts.reverb > 0:
        vocal += _reverb(opts.reverb)
    limit = 10 ** (ceiling_db / 20)
    fit = f"apad=whole_len={samples},atrim=end_sample={samples}"
    return ";".join(
        [
            vocal + "[v]",
            f"[1:a]{fmt},volume={opts.instrumental_gain_db:.3f}dB[i]",
            f"[v][i]amix=inputs=2:duration=longest:normalize=0,{fit},"
            f"highpass=f={HIGHPASS_HZ}:poles=2,volume={gain_db:.3f}dB,"
            f"aresample={rate * OVERSAMPLE},"
            f"alimiter=limit={limit:.5f}:level=false:latency=true:attack=1:release=60,"
            f"aresample={rate},{fit}[out]",
        ]
    )


def _render(vocal: Path, inst: Path, dst: Path, graph: str, fmt: str) -> None:
    run_ffmpeg(
        ["-i", str(vocal), "-i", str(inst), "-filter_complex", graph, "-map", "[out]",
         *encode_args(fmt), str(dst)],
        "mixing",
    )  # fmt: skip


def remix(vocal: Path, instrumental: Path, out: Path, opts: MixOptions = MixOptions()) -> MixResult:
    """Mix `vocal` over `instrumental` into `out`, at the loudness target, atomically."""
    info = sf.info(str(instrumental))
    samples, rate = int(info.frames), int(info.samplerate)
    if samples == 0:
        raise BadAudio("empty_instrumental")
    out = Path(out)
    tmp = out.with_name(f".part-{out.name}")
    try:
        # Loudness of the plain mix: the first gain estimate.
        probe_graph = mix_graph(samples, rate, opts, 0.0, 0.0).replace("[out]", "[m]")
        probe_graph += ";[m]ebur128=peak=true:framelog=verbose[out]"
        err = run_ffmpeg(
            ["-i", str(vocal), "-i", str(instrumental), "-filter_complex", probe_graph,
             "-map", "[out]", "-f", "null", "-"],
            "loudness",
        )  # fmt: skip
        first = parse_ebur128(err).integrated_lufs
        gain = 0.0 if math.isinf(first) else min(opts.loudness_lufs - first, MAX_GAIN_DB)
        lossy = opts.format not in ("wav", "flac")
        ceiling = opts.true_peak_dbtp - (0.5 if lossy else 0.2)
        loud = Loudness(first, float("-inf"))
        previous: tuple[float, float] | None = None  # (gain, loudness) of the last render
        for _ in range(MAX_RENDERS):
            graph = mix_graph(samples, rate, opts, gain, ceiling)
            _render(vocal, instrumental, tmp, graph, opts.format)
            loud = measure_loudness(tmp)
            if math.isinf(loud.integrated_lufs):
                break  # silence: nothing to normalise
            off = opts.loudness_lufs - loud.integrated_lufs
            # ffmpeg reports true peak to 0.1 dB: keep one step below the target.
            over = loud.true_peak_dbtp - (opts.true_peak_dbtp - 0.1)
            if abs(off) <= opts.tolerance_lu and over <= 0:
                break
            # The limiter flattens the response to gain; follow the measured slope (secant).
            slope = 1.0
            if previous is not None and abs(gain - previous[0]) > 1e-3:
                slope = (loud.integrated_lufs - previous[1]) / (gain - previous[0])
                slope = min(max(slope, 0.2), 1.0)
            previous = (gain, loud.integrated_lufs)
            gain = min(gain + off / slope, MAX_GAIN_DB)
            if over > 0:
                ceiling -= over + 0.1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return MixResult(out, loud, samples, rate)
