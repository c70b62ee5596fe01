"""Audio in and out: probe, decode, resample, write and encode through ffmpeg.

Everything that touches a user's file passes `probe` first. It opens the file with an
allowlist of demuxers (`DEMUXERS`) and the `file` protocol only, so a playlist, a concat
script or anything else that names other files is refused before it is read; it checks the
codec (`CODECS`), the sample rate, the channels and the declared length against `Limits`, and
turns ffmpeg's complaints into one sentence a user can act on. Headers can lie, so `decode`
and `scan` also enforce the limits on what is decoded: ffmpeg stops at the length limit
(`-t`), its output is read in chunks and cut off past a byte cap, and a file that decodes to
invalid samples (NaN, infinity) or with decoding errors (a damaged or cut-off tail) is
refused. `scan` checks a whole upload in constant memory, without keeping what it decodes.
Arrays are float32, shaped (channels, samples).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from gpu_worker import cancel
from gpu_worker.errors import BadAudio, BadOptions, EngineError, TooLong

# ffmpeg runs as a subprocess with its own timeout: a thread-level timeout cannot stop it.
FFMPEG_TIMEOUT_S = 600
PROBE_TIMEOUT_S = 60

# The demuxers an untrusted file may be opened with: ffprobe's format_name -> the name given
# to ffmpeg with -f. None of them reads another file (no playlists such as hls, no concat
# scripts, no SDP, no image sequences); mov's external data references stay off (its default).
DEMUXERS: dict[str, str] = {
    "mp3": "mp3",
    "wav": "wav",
    "w64": "w64",
    "ogg": "ogg",
    "flac": "flac",
    "aiff": "aiff",
    "mov,mp4,m4a,3gp,3g2,mj2": "mov",
    "matroska,webm": "matroska",
    "aac": "aac",
}
# The audio codecs decoded from them (plus every plain PCM variant, `pcm_*`).
CODECS = frozenset({"mp3", "mp2", "aac", "vorbis", "opus", "flac", "alac"})
# Only local files: ffmpeg's other protocols (http, concat:, subfile:, data:...) stay closed.
PROTOCOLS = "file"
LENGTH_SLACK_S = 0.5  # encoder padding: a song of exactly the limit may decode a little longer
# A decoded sample beyond this (about +36 dBFS) is invalid, as are NaN and infinity: float
# files may go a little over full scale, but 1e30 only overflows the steps after.
MAX_SAMPLE = 64.0
CHUNK_BYTES = 1 << 20  # decoded audio is read from ffmpeg in pieces of about this size
MAX_ERROR_LINES = 20  # of ffmpeg's error output kept while decoding
# A file that decodes shorter than it declares by more than both of these is cut off.
CUT_OFF_SLACK_S = 2.0
CUT_OFF_SHARE = 0.1


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
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000


# For Encore's own intermediate files (stems, converted vocals): no size or length limits,
# but still opened through the allowlist.
NO_LIMITS = Limits(
    max_bytes=2**62, max_seconds=float("inf"), max_channels=64, min_seconds=0.0,
    min_sample_rate=1, max_sample_rate=2**31,
)  # fmt: skip


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    sample_rate: int
    channels: int
    codec: str
    size: int
    demuxer: str = ""  # the name to open it with (-f), from `DEMUXERS`


def _too_long(limits: Limits) -> TooLong:
    return TooLong("decoded", max_seconds=limits.max_seconds)


def _url(path: Path) -> str:
    """The path as a `file:` URL, so that no name is read as another protocol (`pipe:1`)."""
    return "file:" + str(Path(path).absolute())


def _input_args(demuxer: str | None) -> list[str]:
    """ffmpeg/ffprobe options that come before `-i`: protocols and demuxers allowed."""
    args = ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(DEMUXERS.values())]
    if demuxer:
        args += ["-f", demuxer]
    return args


def _codec_allowed(codec: str) -> bool:
    return codec in CODECS or codec.startswith("pcm_")


def inspect(path: Path, max_bytes: int = Limits.max_bytes) -> AudioInfo:
    """Open `path` as untrusted audio and describe its first audio stream; no length limits.

    Refuses what is not a plain audio file of an allowed format and codec (one sentence)."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio("not_found", name=path.name)
    size = path.stat().st_size
    if size == 0:
        raise BadAudio("empty_file")
    if size > max_bytes:
        raise BadAudio("too_large", size=size, max_bytes=max_bytes)
    cmd = [
        "ffprobe", "-v", "error", "-hide_banner", *_input_args(None),
        "-show_format", "-show_streams", "-of", "json", _url(path),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
        meta = json.loads(proc.stdout or b"{}") if proc.returncode == 0 else {}
    except (subprocess.TimeoutExpired, ValueError):
        meta = {}
    demuxer = DEMUXERS.get(str(meta.get("format", {}).get("format_name", "")))
    if demuxer is None:
        raise BadAudio("not_audio")
    streams = [s for s in meta.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise BadAudio("no_audio_stream")
    stream = streams[0]
    codec = str(stream.get("codec_name") or "?")
    if not _codec_allowed(codec):
        raise BadAudio("codec", codec=codec[:20])
    try:
        duration = float(stream.get("duration") or meta["format"].get("duration") or 0.0)
        channels = int(stream.get("channels") or 0)
        sample_rate = int(stream.get("sample_rate") or 0)
    except (TypeError, ValueError):
        duration, channels, sample_rate = 0.0, 0, 0
    if channels < 1 or sample_rate < 1 or not duration >= 0:
        raise BadAudio("damaged_stream")
    return AudioInfo(duration, sample_rate, channels, codec, size, demuxer)


def check_limits(info: AudioInfo, limits: Limits) -> None:
    """Refuse a file whose rate, channels or declared length is outside `limits`."""
    if not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        raise BadAudio(
            "sample_rate",
            sample_rate=info.sample_rate,
            min_rate=limits.min_sample_rate,
            max_rate=limits.max_sample_rate,
        )
    if info.channels > limits.max_channels:
        raise BadAudio("channels", channels=info.channels, max_channels=limits.max_channels)
    if info.duration > limits.max_seconds + LENGTH_SLACK_S:
        raise TooLong("declared", seconds=info.duration, max_seconds=limits.max_seconds)


def probe(path: Path, limits: Limits = Limits()) -> AudioInfo:
    """Check that `path` is audio within `limits` and describe its first audio stream.

    What the headers declare is checked here; `decode` and `scan` check what is decoded."""
    info = inspect(path, limits.max_bytes)
    check_limits(info, limits)
    return info


def _frame_cap(limits: Limits, rate: int) -> int | None:
    """The most frames ffmpeg may write: the length limit, -t's slack and a second more."""
    if limits.max_seconds == float("inf"):
        return None
    return int((limits.max_seconds + LENGTH_SLACK_S + 1) * rate)


def _cut_off(info: AudioInfo, decoded_s: float) -> bool:
    """Whether far less decodes than the file declares: the rest of it is missing or broken."""
    return decoded_s < info.duration - max(CUT_OFF_SLACK_S, CUT_OFF_SHARE * info.duration)


class _Watchdog:
    """Kills a process that runs past its time; says whether it did."""

    def __init__(self, proc: subprocess.Popen, seconds: float):
        self.fired = False
        self._proc = proc
        self._timer = threading.Timer(seconds, self._kill)
        self._timer.daemon = True
        self._timer.start()

    def _kill(self) -> None:
        self.fired = True
        self._proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


def _pcm_chunks(
    path: Path,
    info: AudioInfo,
    sample_rate: int | None,
    channels: int,
    limits: Limits,
    timeout: float,
) -> Iterator[np.ndarray]:
    """Decode `path` to float32 frames (n, channels), in chunks, enforcing `limits`.

    ffmpeg stops a little past the length limit (`-t`); more than that is refused, and so is
    output beyond a byte cap (ffmpeg is killed), decoding errors, invalid samples, and a
    decode that runs past `timeout` seconds."""
    rate = sample_rate or info.sample_rate
    frame_bytes = 4 * channels
    max_frames: float = float("inf")
    most = _frame_cap(limits, rate)
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        *_input_args(info.demuxer), "-i", _url(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", str(channels),
    ]  # fmt: skip
    if sample_rate:
        cmd += ["-ar", str(sample_rate)]
    if limits.max_seconds != float("inf"):
        allowed = limits.max_seconds + LENGTH_SLACK_S
        max_frames = allowed * rate
        cmd += ["-t", f"{allowed + 0.25:.3f}"]  # a little past it, to see that it is longer
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    byte_cap = float("inf") if most is None else most * frame_bytes  # past it: kill ffmpeg
    chunk = max(frame_bytes, CHUNK_BYTES // frame_bytes * frame_bytes)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    errors: list[bytes] = []

    def drain_errors() -> None:  # ffmpeg must never block on a full stderr pipe
        for line in proc.stderr:
            if len(errors) < MAX_ERROR_LINES:
                errors.append(line)

    reader = threading.Thread(target=drain_errors, daemon=True)
    reader.start()
    watchdog = _Watchdog(proc, timeout)
    frames = 0
    carry = b""
    try:
        while True:
            cancel.checkpoint()  # a cancel or a shutdown stops the decode (ffmpeg is killed)
            block = proc.stdout.read(chunk)
            if not block:
                break
            block = carry + block
            usable = len(block) - len(block) % frame_bytes
            carry = block[usable:]
            if frames * frame_bytes + usable > byte_cap:
                raise _too_long(limits)
            data = np.frombuffer(block[:usable], dtype="<f4").reshape(-1, channels)
            if not (np.abs(data) <= MAX_SAMPLE).all():  # (false for NaN too)
                raise BadAudio("invalid_samples")
            frames += len(data)
            yield data
        proc.wait(timeout=max(1.0, timeout))
        reader.join(timeout=5)
        if watchdog.fired:
            raise BadAudio("decode_timeout")
        if frames > max_frames:
            raise _too_long(limits)
        if proc.returncode != 0 or errors or frames == 0 or _cut_off(info, frames / rate):
            raise BadAudio("damaged")
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        reader.join(timeout=5)
        proc.stderr.close()


def decode(
    path: Path,
    sample_rate: int = 44100,
    channels: int = 2,
    limits: Limits | None = Limits(),
    timeout: float = FFMPEG_TIMEOUT_S,
) -> np.ndarray:
    """Decode an untrusted file to float32 (channels, samples) at `sample_rate`.

    The file is probed against `limits` (None: `NO_LIMITS`, for Encore's own files) and the
    limits hold for what is decoded, whatever its headers say."""
    limits = NO_LIMITS if limits is None else limits
    chunks = decode_chunks(path, sample_rate, channels, limits, timeout)
    most = _frame_cap(limits, sample_rate)
    if most is None:  # no length limit (Encore's own files): gather, then copy once
        pieces = list(chunks)
        audio = np.empty((channels, sum(len(p) for p in pieces)), dtype=np.float32)
        at = 0
        for piece in pieces:
            audio[:, at : at + len(piece)] = piece.T
            at += len(piece)
        del pieces
    else:
        # Room for the most the limits let through; only the pages written become memory, so
        # the peak is one copy of what decodes. Each channel's row is contiguous.
        audio = np.empty((channels, most), dtype=np.float32)
        at = 0
        for piece in chunks:
            audio[:, at : at + len(piece)] = piece.T
            at += len(piece)
        audio = audio[:, :at]
    if audio.shape[1] < limits.min_seconds * sample_rate:
        seconds = round(audio.shape[1] / sample_rate, 2)
        raise BadAudio("too_short", seconds=seconds, min_seconds=limits.min_seconds)
    return audio


def decode_chunks(
    path: Path,
    sample_rate: int,
    channels: int,
    limits: Limits = Limits(),
    timeout: float = FFMPEG_TIMEOUT_S,
) -> Iterator[np.ndarray]:
    """`decode` a piece at a time: float32 frames (n, channels) of about `CHUNK_BYTES` each.

    The same checks as `decode` (they raise while iterating), with memory bounded by one
    chunk, so a long file can be measured without holding it."""
    info = probe(path, limits)
    yield from _pcm_chunks(Path(path), info, sample_rate, channels, limits, timeout)


def scan(path: Path, limits: Limits = Limits(), timeout: float = 120.0) -> AudioInfo:
    """Check an upload all the way through: `probe`, then decode it without keeping it.

    Memory stays at a few chunks whatever the file holds. Returns the probe's description
    with the decoded duration."""
    info = probe(path, limits)
    frames = 0
    for data in _pcm_chunks(Path(path), info, None, 1, limits, timeout):
        frames += len(data)
    duration = frames / info.sample_rate
    if duration < limits.min_seconds:
        raise BadAudio("too_short", seconds=round(duration, 2), min_seconds=limits.min_seconds)
    return AudioInfo(duration, info.sample_rate, info.channels, info.codec, info.size,
                     info.demuxer)  # fmt: skip


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
    """Run ffmpeg with `args`; return its stderr. Failures raise EngineError naming the step
    `what` (encoding, mixing, loudness): `ffmpeg_timeout` or `ffmpeg_failed` with its output."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-y", *args]
    try:
        proc = cancel.run(cmd, timeout=FFMPEG_TIMEOUT_S, text=True)
    except subprocess.TimeoutExpired:
        raise EngineError("ffmpeg_timeout", step=what) from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise EngineError("ffmpeg_failed", step=what, output=" ".join(tail)[:300])
    return proc.stderr


def encode_args(fmt: str) -> list[str]:
    """ffmpeg output arguments for one of the supported formats."""
    try:
        enc = ENCODINGS[fmt]
    except KeyError:
        raise BadOptions("output_format", value=fmt, allowed=list(ENCODINGS)) from None
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
        run_ffmpeg(["-i", str(src), "-map", "0:a:0", *encode_args(fmt), str(tmp)], "encoding")
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
        "loudness",
    )
    return parse_ebur128(err)


def parse_ebur128(stderr: str) -> Loudness:
    """Read the summary that ffmpeg's ebur128 filter (with peak=true) prints at the end."""
    summary = stderr[stderr.rfind("Summary:") :]
    i_match, tp_match = _EBU_I.search(summary), _EBU_TP.search(summary)
    if not i_match:
        raise EngineError("ffmpeg_failed", step="loudness", output=stderr[-300:])

    def num(match: re.Match | None) -> float:
        text = match.group(1) if match else "-inf"
        return float("-inf") if text == "-inf" else float(text)

    return Loudness(num(i_match), num(tp_match))
