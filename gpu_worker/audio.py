"""Audio in and out: probe, decode, resample, write and encode through ffmpeg.

Everything that touches a user's file passes `probe` first, which enforces the limits
(size, duration, channels) and turns ffmpeg's complaints into one sentence a user can act on.
Arrays are float32, shaped (channels, samples).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf

from gpu_worker import cancel
from gpu_worker.errors import BadAudio, EngineError

# ffmpeg runs as a subprocess with its own timeout: a thread-level timeout cannot stop it.
FFMPEG_TIMEOUT_S = 600

ENCODINGS: dict[str, dict] = {
    "mp3": {"acodec": "libmp3lame", "audio_bitrate": "256k"},
    "ogg": {"acodec": "libopus", "audio_bitrate": "160k", "format": "ogg"},
    "opus": {"acodec": "libopus", "audio_bitrate": "160k", "format": "ogg"},
    "m4a": {"acodec": "aac", "audio_bitrate": "256k", "format": "ipod"},
    "wav": {"acodec": "pcm_s16le"},
    "flac": {"acodec": "flac"},
}


@dataclass(frozen=True)
class Limits:
    """What the service accepts. The defaults suit a song; settings override them."""

    max_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 15 * 60
    max_channels: int = 8
    min_seconds: float = 0.5


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: int
    channels: int
    codec: str
    size: int


def _human_size(n: float) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def probe(path: Path, limits: Limits = Limits()) -> AudioInfo:
    """Check that `path` is audio within `limits` and describe its first audio stream."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio(f"The file {path.name} was not found; check the path and try again.")
    size = path.stat().st_size
    if size == 0:
        raise BadAudio("The file is empty; send an audio file (mp3, wav, ogg, m4a, flac).")
    if size > limits.max_bytes:
        raise BadAudio(
            f"The file is {_human_size(size)}, over the {_human_size(limits.max_bytes)} limit; "
            "send a shorter or more compressed file."
        )
    try:
        meta = ffmpeg.probe(str(path), timeout=60)
    except (ffmpeg.Error, subprocess.TimeoutExpired):
        raise BadAudio(
            "This file could not be read as audio; send an mp3, wav, ogg, m4a or flac file."
        ) from None
    streams = [s for s in meta.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise BadAudio("This file has no audio in it; send an mp3, wav, ogg, m4a or flac file.")
    stream = streams[0]
    duration = float(stream.get("duration") or meta.get("format", {}).get("duration") or 0.0)
    channels = int(stream.get("channels") or 0)
    sample_rate = int(stream.get("sample_rate") or 0)
    if channels < 1 or sample_rate < 1:
        raise BadAudio("This audio stream is damaged; export the file again and resend it.")
    if channels > limits.max_channels:
        raise BadAudio(
            f"The file has {channels} channels; send a mono or stereo file "
            f"(at most {limits.max_channels} channels)."
        )
    if duration > limits.max_seconds:
        raise BadAudio(
            f"The audio is {duration / 60:.1f} minutes long, over the "
            f"{limits.max_seconds / 60:.0f}-minute limit; send a shorter file."
        )
    return AudioInfo(duration, sample_rate, channels, stream.get("codec_name", "?"), size)


def decode(
    path: Path,
    sample_rate: int = 44100,
    channels: int = 2,
    limits: Limits | None = Limits(),
) -> np.ndarray:
    """Decode any ffmpeg-readable file to float32 (channels, samples) at `sample_rate`."""
    if limits is not None:
        probe(path, limits)
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
        "-map", "0:a:0", "-vn", "-ac", str(channels), "-ar", str(sample_rate),
        "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]  # fmt: skip
    try:
        proc = cancel.run(cmd, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BadAudio("Decoding this file took too long; send a shorter file.") from None
    if proc.returncode != 0 or not proc.stdout:
        raise BadAudio("This file is damaged or truncated; export it again and resend it.")
    data = np.frombuffer(proc.stdout, dtype="<f4")
    usable = len(data) - len(data) % channels
    audio = data[:usable].reshape(-1, channels).T.copy()
    if limits is not None and audio.shape[1] < limits.min_seconds * sample_rate:
        raise BadAudio("The audio is too short; send at least a few seconds.")
    if not np.isfinite(audio).all():
        raise BadAudio("This file decodes to invalid samples; export it again and resend it.")
    return audio


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float32 (channels, samples) as a float wav, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.ascontiguousarray(audio.T), sample_rate, subtype="FLOAT")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a wav written by `write_wav` as float32 (channels, samples) and its rate."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T.copy(), rate


def run_ffmpeg(args: list[str], what: str) -> str:
    """Run ffmpeg with `args`; return its stderr. Failures raise EngineError naming `what`."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-y", *args]
    try:
        proc = cancel.run(cmd, timeout=FFMPEG_TIMEOUT_S, text=True)
    except subprocess.TimeoutExpired:
        raise EngineError(f"{what} took too long; try a shorter song.") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise EngineError(f"{what} failed; please try again later. ({' '.join(tail)[:300]})")
    return proc.stderr


def encode_args(fmt: str) -> list[str]:
    """ffmpeg output arguments for one of the supported formats."""
    try:
        enc = ENCODINGS[fmt]
    except KeyError:
        raise EngineError(
            f"Unknown output format {fmt!r}; choose one of {', '.join(ENCODINGS)}."
        ) from None
    args = ["-c:a", enc["acodec"]]
    if "audio_bitrate" in enc:
        args += ["-b:a", enc["audio_bitrate"]]
    if fmt == "mp3":
        args += ["-write_xing", "1"]  # keeps the encoder delay so decoders trim it
    if "format" in enc:
        args += ["-f", enc["format"]]
    return args


def encode(src: Path, dst: Path, fmt: str | None = None) -> Path:
    """Encode `src` to `dst` in `fmt` (default: from the suffix), atomically."""
    dst = Path(dst)
    fmt = fmt or dst.suffix.lstrip(".").lower()
    tmp = dst.with_name(f".part-{dst.name}")
    try:
        run_ffmpeg(["-i", str(src), "-map", "0:a:0", *encode_args(fmt), str(tmp)], "Encoding")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float


_EBU_I = re.compile(r"I:\s+(-?[\d.]+|-inf) LUFS")
_EBU_TP = re.compile(r"Peak:\s+(-?[\d.]+|-inf) dBFS")


def measure_loudness(path: Path) -> Loudness:
    """Integrated loudness (EBU R128) and true peak of `path`, measured by ffmpeg."""
    err = run_ffmpeg(
        ["-i", str(path), "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"],
        "Measuring loudness",
    )
    return parse_ebur128(err)


def parse_ebur128(stderr: str) -> Loudness:
    """Read the summary that ffmpeg's ebur128 filter (with peak=true) prints at the end."""
    summary = stderr[stderr.rfind("Summary:") :]
    i_match, tp_match = _EBU_I.search(summary), _EBU_TP.search(summary)
    if not i_match:
        raise EngineError("Measuring loudness failed; please try again later.")

    def num(match: re.Match | None) -> float:
        text = match.group(1) if match else "-inf"
        return float("-inf") if text == "-inf" else float(text)

    return Loudness(num(i_match), num(tp_match))
