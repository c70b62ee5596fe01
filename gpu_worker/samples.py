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

How a recording is measured (30 ms frames, silence, clipping, voiced seconds) is
`gpu_worker.sample_analysis`'s.
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
from gpu_worker.sample_analysis import ANALYSIS_RATE, DB_FLOOR, Analysis, analyse, db

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

LENGTH_SLACK_S = 0.5  # encoder padding: a 30-minute recording may decode a little longer


TARGET_RMS_DBFS = -20.0  # prepare_samples: voiced level of the written samples
PEAK_CEILING_DBFS = -1.0  # prepare_samples: written samples never peak above this
MAX_PAUSE_S = 0.4  # prepare_samples: longer silences are shortened to this
KEEP_AROUND_VOICE_S = 0.09  # prepare_samples: quiet edges kept around voiced frames
FADE_S = 0.010  # prepare_samples: fade at each cut
_VOICED, _SILENT, _CLIPPED = 0, 1, 2


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
    analysis = Analysis(ANALYSIS_RATE, min(info.channels, 2))
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
        rms_dbfs=float(db(loud_power.mean())),
        peak_dbfs=float(db(frames.peak**2)),
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
    frames = analyse(mono[None, :], sample_rate)
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
    gain = 10 ** ((TARGET_RMS_DBFS - float(db(voiced_power))) / 20)
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
