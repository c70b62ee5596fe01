"""Sample intake: the checks run on a user's voice samples before any GPU time is spent.

This module owns the first step of training a voice. `check_samples` looks at every file a
user sent (wav, mp3, ogg/opus voice notes, m4a: anything ffmpeg decodes) and measures how many
seconds of clean speech or singing it holds, its level, clipping, silence, sample rate and
channels. Each unusable sample gets a `SampleProblem` (a reason and its facts, which
`flows.errors` turns into one sentence naming the sample by number); one bad file never makes
the whole check fail. The report's `ok` says whether there is enough voice to train (at least
1 min; 5-10 min is best), and its numbers are what the user's summary is made from.

`prepare_samples` then writes the accepted samples as clean mono float wavs at the training
rate: long silences shortened, clipped stretches cut out, level brought to a steady speech
level with headroom.

How the measurements work: every file is opened as untrusted audio (`gpu_worker.audio.inspect`:
allowed formats and codecs only, for its original rate and channels) and decoded once at
`ANALYSIS_RATE`, within `decode_limits` (what decodes, not what headers claim), and measured
block by block as it decodes (`_Analysis`), so checking a 30-minute sample in the bot process
never holds it whole. The audio is cut into 30 ms frames; a frame is silence when its RMS is
below a threshold that is the highest of a fixed floor (`SILENCE_FLOOR_DBFS`), a fixed distance
below the loud part of the recording, and (when the recording has quiet gaps) just above its
background noise. A sample counts as clipped at full scale (`CLIP_LEVEL`) or where it holds one
value for several samples at a high level (a flat top: clipped, then turned down). A frame with
more than `CLIPPED_FRAME` of its samples clipped is dropped, so a single full-scale peak in
normalised audio costs nothing. Voiced seconds are the frames that are neither silent nor
dropped. Known blind spot: a lossy encoder (AAC above all) can blur a flat top below full scale
enough that it passes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpu_worker.audio import Limits, decode, decode_chunks, inspect, write_wav
from gpu_worker.errors import BadAudio, TooLong
from gpu_worker.hashing import file_sha256

__all__ = [
    "IntakeLimits",
    "IntakeReport",
    "SampleCheck",
    "check_samples",
    "decode_limits",
    "format_duration",
    "prepare_samples",
]

log = logging.getLogger(__name__)

ANALYSIS_RATE = 16000  # Hz; enough for level, silence and clipping, cheap for 30-minute files
FRAME_S = 0.030  # analysis frame length
DB_FLOOR = -120.0  # what the dBFS fields read for digital silence or an unreadable file
LENGTH_SLACK_S = 0.5  # encoder padding: a 30-minute recording may decode a little longer

SILENCE_FLOOR_DBFS = -55.0  # a frame quieter than this is silence in any recording
SILENCE_BELOW_LOUD_DB = 35.0  # ... and so is one this far below the loud part (95th percentile)
NOISE_MARGIN_DB = 6.0  # ... or one within this of the background noise (10th percentile)
NOISE_GATE_MAX_BELOW_LOUD_DB = 20.0  # the noise rule never drops frames closer than this to loud

CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped
CLIPPED_FRAME = 0.01  # a frame with more than this fraction of clipped samples is dropped
FLAT_RUN = 4  # this many equal samples in a row ...
FLAT_LEVEL = 0.25  # ... at or above this level is a flat top (clipped before a gain change)
FLAT_TOLERANCE = 1e-5  # exact in 16-bit audio; natural peaks move more than this per sample

TARGET_RMS_DBFS = -20.0  # prepare_samples: voiced level of the written samples
PEAK_CEILING_DBFS = -1.0  # prepare_samples: written samples never peak above this
MAX_PAUSE_S = 0.4  # prepare_samples: longer silences are shortened to this
KEEP_AROUND_VOICE_S = 0.09  # prepare_samples: quiet edges kept around voiced frames
FADE_S = 0.010  # prepare_samples: fade at each cut
_VOICED, _SILENT, _CLIPPED = 0, 1, 2
_BLOCK = 1 << 20  # samples per block of the analysis (frames are summed in groups this size)


@dataclass(frozen=True)
class IntakeLimits:
    """What intake accepts. The last three fields tune the per-sample quality checks."""

    min_total_s: float = 60.0
    recommended_s: tuple[float, float] = (300.0, 600.0)
    max_total_s: float = 3600.0  # more is refused with a reason (cost)
    max_samples: int = 100
    min_sample_s: float = 1.0
    max_sample_s: float = 1800.0
    min_sample_rate: int = 16000
    max_sample_rate: int = 192000  # more is no recording a phone or microphone makes
    max_channels: int = 2
    max_bytes: int = 100 * 2**20  # per file
    max_silent_fraction: float = 0.8  # more silence than this: "mostly silence"
    max_clipped_fraction: float = 0.01  # of the non-silent samples
    min_voice_dbfs: float = -45.0  # RMS of the voiced part; below: "too quiet"


@dataclass(frozen=True)
class SampleProblem:
    """Why one sample is refused: `reason` names the case, `data` its facts (sizes, limits)."""

    reason: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SampleCheck:
    """What intake found in one sample. Levels are dBFS; `DB_FLOOR` stands for silence."""

    number: int  # 1-based, as the user sent them
    name: str  # file name as given
    duration_s: float
    voiced_s: float  # clean speech/singing seconds after dropping silence and clipped parts
    sample_rate: int  # of the original file (0 if it could not be read)
    channels: int  # of the original file (0 if it could not be read)
    rms_dbfs: float  # RMS of the non-silent part (of the whole sample if all of it is silent)
    peak_dbfs: float
    clipped_fraction: float  # of the non-silent samples
    silent_fraction: float  # of the sample's duration
    problem: SampleProblem | None  # None if accepted; else why not (`flows.errors` words it)


@dataclass(frozen=True)
class IntakeReport:
    samples: list[SampleCheck]
    voiced_s: float  # total of accepted samples
    ok: bool  # enough accepted audio to train
    limits: IntakeLimits = IntakeLimits()  # what the samples were checked against

    @property
    def accepted(self) -> list[SampleCheck]:
        return [s for s in self.samples if s.problem is None]

    @property
    def rejected(self) -> list[SampleCheck]:
        return [s for s in self.samples if s.problem is not None]


def format_duration(seconds: float) -> str:
    """A duration for a user, rounded down: "0.4 s", "42 s", "4 min 10 s", "1 h 5 min"."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0 s"
    if seconds < 1:
        return f"{math.floor(seconds * 10) / 10:.1f} s"
    total = math.floor(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class _Frames:
    """Per-frame view of one decoded sample."""

    frame: int  # samples per frame
    sample_rate: int
    dc: float  # the mono mix's DC offset
    power: np.ndarray  # mean square per frame (mono, DC removed)
    silent: np.ndarray  # bool per frame
    clipped: np.ndarray  # bool per frame: more than CLIPPED_FRAME of it is clipped
    clipped_samples: int
    peak: float

    @property
    def voiced(self) -> np.ndarray:
        return ~self.silent & ~self.clipped

    def seconds(self, frames: int) -> float:
        return frames * self.frame / self.sample_rate


def _db(power: float | np.ndarray) -> np.ndarray:
    """Mean square to dBFS, floored at DB_FLOOR."""
    return np.maximum(10.0 * np.log10(np.asarray(power, dtype=np.float64) + 1e-13), DB_FLOOR)


def _silence_threshold(frame_db: np.ndarray) -> float:
    loud = float(np.percentile(frame_db, 95))
    noise = float(np.percentile(frame_db, 10))
    noise_gate = min(noise + NOISE_MARGIN_DB, loud - NOISE_GATE_MAX_BELOW_LOUD_DB)
    return max(SILENCE_FLOOR_DBFS, loud - SILENCE_BELOW_LOUD_DB, noise_gate)


class _Analysis:
    """Frames audio fed a block at a time and marks silent and clipped frames.

    Memory is bounded by the block size whatever the length: what is kept between blocks is
    per-frame sums, a block of samples whose frames are not yet summed, and the last few
    samples of the block before (a flat top may straddle the edge; a sample's clipping mark is
    final once `FLAT_RUN - 1` samples after it are known). Frames are summed in the same
    groups of `_BLOCK // frame` frames however the audio arrives, so results do not depend on
    how it is cut.
    """

    def __init__(self, sample_rate: int, channels: int):
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame = max(1, round(FRAME_S * sample_rate))
        size = max(1, _BLOCK // self.frame) * self.frame
        self.samples = 0  # fed so far
        self._buf = np.empty((channels, size), dtype=np.float32)  # marked, frames not summed
        self._clip = np.zeros(size, dtype=bool)
        self._filled = 0
        self._carry = np.empty((channels, 0), dtype=np.float32)  # the last samples fed ...
        self._unsure = 0  # ... of which these last ones are not yet marked for good
        self._sums: list[np.ndarray] = []
        self._squares: list[np.ndarray] = []
        self._per_frame: list[np.ndarray] = []
        self._clipped = 0
        self._peak = 0.0

    def add(self, block: np.ndarray) -> None:
        """Feed audio shaped (samples, channels), as `decode_chunks` yields it."""
        if len(block):
            self.samples += len(block)
            self._mark(np.concatenate((self._carry, block.T), axis=1), final=False)

    def _mark(self, x: np.ndarray, final: bool) -> None:
        """Mark clipping in `x` (the carry, then new samples) and pass on what is final."""
        pairs = FLAT_RUN - 1
        n = x.shape[1]
        if n == 0:
            return
        clip = np.zeros(n, dtype=bool)
        for channel in x:
            level = np.abs(channel)
            self._peak = max(self._peak, float(level.max()))
            clip |= level >= CLIP_LEVEL
            same = (np.abs(np.diff(channel)) <= FLAT_TOLERANCE) & (level[1:] >= FLAT_LEVEL)
            if len(same) < pairs or not same.any():
                continue
            runs = np.lib.stride_tricks.sliding_window_view(same, pairs).all(axis=1)
            for offset in range(pairs + 1):
                clip[offset : offset + len(runs)] |= runs
        start = self._carry.shape[1] - self._unsure  # the first sample not yet passed on
        end = n if final else max(start, n - pairs)
        self._keep(x[:, start:end], clip[start:end])
        self._carry = x[:, max(0, end - pairs) :].copy()
        self._unsure = n - end

    def _keep(self, x: np.ndarray, clip: np.ndarray) -> None:
        at = 0
        while at < x.shape[1]:
            take = min(x.shape[1] - at, self._buf.shape[1] - self._filled)
            self._buf[:, self._filled : self._filled + take] = x[:, at : at + take]
            self._clip[self._filled : self._filled + take] = clip[at : at + take]
            self._filled += take
            at += take
            if self._filled == self._buf.shape[1]:
                self._sum_frames()

    def _sum_frames(self) -> None:
        """Sum the whole frames in the buffer (the mono mix); empty it."""
        frame = self.frame
        count = self._filled // frame
        part = self._buf[:, : count * frame]
        mono = part.mean(axis=0, dtype=np.float32) if self.channels > 1 else part[0]
        frames = mono.reshape(count, frame)
        self._sums.append(frames.sum(axis=1, dtype=np.float64))
        self._squares.append(np.einsum("ij,ij->i", frames, frames, dtype=np.float64))
        self._per_frame.append(self._clip[: count * frame].reshape(count, frame).sum(axis=1))
        self._clipped += int(self._clip[: self._filled].sum())
        self._filled = 0

    def result(self) -> _Frames:
        """What the audio fed holds; a recording shorter than a frame is one padded frame."""
        self._mark(self._carry, final=True)
        if self.samples < self.frame:
            self._keep(
                np.zeros((self.channels, self.frame - self.samples), dtype=np.float32),
                np.zeros(self.frame - self.samples, dtype=bool),
            )
        self._sum_frames()
        frame = self.frame
        sums = np.concatenate(self._sums)
        squares = np.concatenate(self._squares)
        count = len(sums)
        # Mean square per frame with the recording's DC offset taken out.
        dc = float(sums.sum()) / (count * frame)
        power = np.maximum(squares / frame - 2 * dc * sums / frame + dc * dc, 0.0)
        frame_db = _db(power)
        silent = frame_db < _silence_threshold(frame_db)
        per_frame = np.concatenate(self._per_frame)
        return _Frames(
            frame=frame,
            sample_rate=self.sample_rate,
            dc=dc,
            power=power,
            silent=silent,
            clipped=per_frame > CLIPPED_FRAME * frame,
            clipped_samples=self._clipped,
            peak=self._peak,
        )


def _analyse(audio: np.ndarray, sample_rate: int) -> _Frames:
    """Frame `audio` (channels, samples) and mark silent and clipped frames."""
    analysis = _Analysis(sample_rate, audio.shape[0])
    for start in range(0, audio.shape[1], _BLOCK):
        analysis.add(audio[:, start : start + _BLOCK].T)
    return analysis.result()


# ---------------------------------------------------------------------------------------------
# Checking


class _Reject(Exception):
    """A sample is refused; carries why, and what was measured before the refusal."""

    def __init__(self, problem: SampleProblem, **measured):
        super().__init__(problem.reason)
        self.problem = problem
        self.measured = measured


def _refuse(reason: str, measured: dict | None = None, **facts) -> _Reject:
    return _Reject(SampleProblem(reason, facts), **(measured or {}))


def _blank(number: int, name: str, problem: SampleProblem, **measured) -> SampleCheck:
    fields = dict(
        duration_s=0.0,
        voiced_s=0.0,
        sample_rate=0,
        channels=0,
        rms_dbfs=DB_FLOOR,
        peak_dbfs=DB_FLOOR,
        clipped_fraction=0.0,
        silent_fraction=0.0,
    )
    fields.update(measured)
    return SampleCheck(number=number, name=name, problem=problem, **fields)


def _check_one(
    number: int, name: str, path: Path, limits: IntakeLimits, seen: dict[str, int], room_s: float
) -> SampleCheck:
    """Measure one sample; a refusal raises _Reject with the problem."""
    if not path.is_file():
        raise _refuse("missing")
    size = path.stat().st_size
    if size == 0:
        raise _refuse("empty")
    if size > limits.max_bytes:
        raise _refuse("too_large", size=size, max_bytes=limits.max_bytes)
    digest = file_sha256(path)
    if digest in seen:
        raise _refuse("duplicate", of=seen[digest])
    seen[digest] = number

    try:
        info = inspect(path, limits.max_bytes)
    except BadAudio:
        raise _refuse("not_audio") from None
    known = dict(sample_rate=info.sample_rate, channels=info.channels, duration_s=info.duration)
    if info.channels > limits.max_channels:
        raise _refuse("channels", known, channels=info.channels, most=limits.max_channels)
    if info.sample_rate < limits.min_sample_rate:
        raise _refuse("low_rate", known, rate=info.sample_rate, least=limits.min_sample_rate)
    if info.sample_rate > limits.max_sample_rate:
        raise _refuse("high_rate", known, rate=info.sample_rate, most=limits.max_sample_rate)
    too_long = SampleProblem("too_long", {"most_s": limits.max_sample_s})
    if info.duration > limits.max_sample_s + LENGTH_SLACK_S:
        raise _Reject(too_long, **known)
    if room_s <= 0:
        raise _Reject(_over_total(limits), **known)

    # Measured while it decodes, a block at a time: memory stays bounded however long it is.
    analysis = _Analysis(ANALYSIS_RATE, min(info.channels, 2))
    try:
        for block in decode_chunks(path, ANALYSIS_RATE, analysis.channels, decode_limits(limits)):
            analysis.add(block)
    except TooLong:
        raise _Reject(too_long, **known) from None
    except BadAudio:
        raise _refuse("damaged", known) from None
    duration = analysis.samples / ANALYSIS_RATE
    known["duration_s"] = duration
    if duration > limits.max_sample_s + LENGTH_SLACK_S:
        raise _Reject(too_long, **known)
    if duration < limits.min_sample_s:
        raise _refuse("too_short", known, seconds=duration, least_s=limits.min_sample_s)

    frames = analysis.result()
    count = len(frames.silent)
    loud = ~frames.silent
    loud_power = frames.power[loud] if loud.any() else frames.power
    measured = dict(
        known,
        voiced_s=frames.seconds(int(frames.voiced.sum())),
        rms_dbfs=float(_db(loud_power.mean())),
        peak_dbfs=float(_db(frames.peak**2)),
        clipped_fraction=min(1.0, frames.clipped_samples / max(1, int(loud.sum()) * frames.frame)),
        silent_fraction=float(frames.silent.sum() / count),
    )
    problem = None
    if measured["silent_fraction"] > limits.max_silent_fraction:
        problem = SampleProblem("mostly_silence", {"fraction": measured["silent_fraction"]})
    elif measured["rms_dbfs"] < limits.min_voice_dbfs:
        problem = SampleProblem("too_quiet", {"rms_dbfs": measured["rms_dbfs"]})
    elif measured["clipped_fraction"] > limits.max_clipped_fraction:
        problem = SampleProblem("clipped", {"fraction": measured["clipped_fraction"]})
    elif measured["voiced_s"] < limits.min_sample_s:
        problem = SampleProblem("little_voice", {"least_s": limits.min_sample_s})
    elif measured["voiced_s"] > room_s:
        problem = _over_total(limits)
    return SampleCheck(number=number, name=name, problem=problem, **measured)


def decode_limits(limits: IntakeLimits) -> Limits:
    """What decoding one sample may produce: the intake limits, enforced on decoded audio."""
    return Limits(
        max_bytes=limits.max_bytes,
        max_seconds=limits.max_sample_s,
        max_channels=limits.max_channels,
        min_seconds=0.0,
        min_sample_rate=limits.min_sample_rate,
        max_sample_rate=limits.max_sample_rate,
    )


def _over_total(limits: IntakeLimits) -> SampleProblem:
    return SampleProblem("over_total", {"most_s": limits.max_total_s})


def check_samples(
    paths: Sequence[Path],
    limits: IntakeLimits = IntakeLimits(),
    names: Sequence[str] | None = None,
) -> IntakeReport:
    """Check every sample; never raises for a bad sample, each gets its own `problem`."""
    paths = [Path(p) for p in paths]
    if names is None:
        names = [p.name for p in paths]
    elif len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} samples")
    checks: list[SampleCheck] = []
    seen: dict[str, int] = {}
    total = 0.0
    for number, (path, name) in enumerate(zip(paths, names, strict=True), start=1):
        if number > limits.max_samples:
            checks.append(
                _blank(number, name, SampleProblem("too_many", {"most": limits.max_samples}))
            )
            continue
        try:
            check = _check_one(number, name, path, limits, seen, limits.max_total_s - total)
        except _Reject as refusal:
            check = _blank(number, name, refusal.problem, **refusal.measured)
        except Exception:  # one odd file must not sink the others
            log.exception("checking sample %d (%s) failed", number, name)
            check = _blank(number, name, SampleProblem("unchecked"))
        if check.problem is None:
            total += check.voiced_s
        checks.append(check)
    accepted = [c for c in checks if c.problem is None]
    ok = bool(accepted) and total >= limits.min_total_s
    return IntakeReport(samples=checks, voiced_s=total, ok=ok, limits=limits)


# ---------------------------------------------------------------------------------------------
# Preparing


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(label, start, end) for each run of equal values."""
    if len(labels) == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(labels)]))
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _fade(piece: np.ndarray, fade: int) -> None:
    """Fade `piece` in and out, in place."""
    fade = min(fade, len(piece) // 2)
    if fade <= 0:
        return
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
    piece[:fade] *= ramp
    piece[-fade:] *= ramp[::-1]


def _clean(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut clipped stretches, shorten long silences, trim the ends; set the level."""
    frames = _analyse(mono[None, :], sample_rate)
    f = frames.frame
    if not frames.voiced.any():
        return np.zeros(0, dtype=np.float32)
    labels = np.where(frames.clipped, _CLIPPED, np.where(frames.silent, _SILENT, _VOICED))
    margin = max(1, round(KEEP_AROUND_VOICE_S * sample_rate / f))
    pause = max(2, round(MAX_PAUSE_S * sample_rate / f))
    fade = round(FADE_S * sample_rate)

    pieces: list[tuple[int, int]] = []  # frame ranges; a cut lies between two that don't touch
    runs = _runs(labels.astype(np.int8))
    for i, (label, start, end) in enumerate(runs):
        if label == _VOICED:
            pieces.append((start, end))
        elif label == _SILENT:
            after_voice = i > 0 and runs[i - 1][0] == _VOICED
            before_voice = i + 1 < len(runs) and runs[i + 1][0] == _VOICED
            if after_voice and before_voice and end - start <= pause:
                pieces.append((start, end))  # a short pause between words stays as it is
                continue
            keep = pause // 2 if after_voice and before_voice else margin
            if after_voice:
                pieces.append((start, min(end, start + keep)))
            if before_voice:
                pieces.append((max(start, end - keep), end))
        # clipped stretches and silence away from the voice go
    merged: list[tuple[int, int]] = []
    for start, end in pieces:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    spans = [(s * f, min(e * f, len(mono))) for s, e in merged]
    out = np.empty(sum(e - s for s, e in spans), dtype=np.float32)
    at = 0
    for start, end in spans:
        piece = out[at : at + end - start]
        np.subtract(mono[start:end], np.float32(frames.dc), out=piece)
        _fade(piece, fade)
        at += end - start

    voiced_power = float(frames.power[frames.voiced].mean())
    gain = 10 ** ((TARGET_RMS_DBFS - float(_db(voiced_power))) / 20)
    peak = max(float(out.max()), -float(out.min())) if len(out) else 0.0
    if peak > 0:
        gain = min(gain, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
    out *= np.float32(gain)
    return out


def prepare_samples(
    report: IntakeReport,
    paths: Sequence[Path],
    out_dir: Path,
    sample_rate: int = 40000,
    limits: IntakeLimits = IntakeLimits(),
) -> list[Path]:
    """Write each accepted sample as clean mono float wav at `sample_rate`; return the paths.

    `paths` are the files `report` was made from, in the same order. Files are named
    `sample-NNN.wav` after the sample's number and written atomically. A sample that holds no
    voice at this rate (it cannot happen to a file that passed `check_samples` unchanged) is
    left out.
    """
    paths = [Path(p) for p in paths]
    if len(paths) != len(report.samples):
        raise ValueError(f"{len(paths)} paths for a report of {len(report.samples)} samples")
    out_dir = Path(out_dir)
    written: list[Path] = []
    for check in report.accepted:
        try:
            audio = decode(paths[check.number - 1], sample_rate, 1, decode_limits(limits))
        except BadAudio:
            raise BadAudio("sample_changed", number=check.number) from None
        clean = _clean(audio[0], sample_rate)
        del audio
        if len(clean) == 0:
            continue
        target = out_dir / f"sample-{check.number:03d}.wav"
        written.append(write_wav(target, clean[None, :], sample_rate))
    return written
