"""Measuring a voice recording frame by frame: level, silence, clipping, voiced seconds.

`Analysis` takes a recording block by block as it decodes (memory stays at one block however long
the file is) and `result()` gives its `Frames`; `analyse` does the same for an array in memory.
`gpu_worker.samples` decides from these numbers whether a sample is usable and how to clean it.

How the measurements work: every file is opened as untrusted audio (`gpu_worker.audio.inspect`:
allowed formats and codecs only, for its original rate and channels) and decoded once at
`ANALYSIS_RATE`, within `decode_limits` (what decodes, not what headers claim), and measured
block by block as it decodes (`Analysis`), so checking a 30-minute sample in the bot process
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

from dataclasses import dataclass

import numpy as np

ANALYSIS_RATE = 16000  # Hz; enough for level, silence and clipping, cheap for 30-minute files
FRAME_S = 0.030  # analysis frame length
DB_FLOOR = -120.0  # what the dBFS fields read for digital silence or an unreadable file
SILENCE_FLOOR_DBFS = -55.0  # a frame quieter than this is silence in any recording
SILENCE_BELOW_LOUD_DB = 35.0  # ... and so is one this far below the loud part (95th percentile)
NOISE_MARGIN_DB = 6.0  # ... or one within this of the background noise (10th percentile)
NOISE_GATE_MAX_BELOW_LOUD_DB = 20.0  # the noise rule never drops frames closer than this to loud
CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped
CLIPPED_FRAME = 0.01  # a frame with more than this fraction of clipped samples is dropped
FLAT_RUN = 4  # this many equal samples in a row ...
FLAT_LEVEL = 0.25  # ... at or above this level is a flat top (clipped before a gain change)
FLAT_TOLERANCE = 1e-5  # exact in 16-bit audio; natural peaks move more than this per sample
_BLOCK = 1 << 20  # samples per block of the analysis (frames are summed in groups this size)


@dataclass(frozen=True)
class Frames:
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


def db(power: float | np.ndarray) -> np.ndarray:
    """Mean square to dBFS, floored at DB_FLOOR."""
    return np.maximum(10.0 * np.log10(np.asarray(power, dtype=np.float64) + 1e-13), DB_FLOOR)


def _silence_threshold(frame_db: np.ndarray) -> float:
    loud = float(np.percentile(frame_db, 95))
    noise = float(np.percentile(frame_db, 10))
    noise_gate = min(noise + NOISE_MARGIN_DB, loud - NOISE_GATE_MAX_BELOW_LOUD_DB)
    return max(SILENCE_FLOOR_DBFS, loud - SILENCE_BELOW_LOUD_DB, noise_gate)


class Analysis:
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

    def result(self) -> Frames:
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
        frame_db = db(power)
        silent = frame_db < _silence_threshold(frame_db)
        per_frame = np.concatenate(self._per_frame)
        return Frames(
            frame=frame,
            sample_rate=self.sample_rate,
            dc=dc,
            power=power,
            silent=silent,
            clipped=per_frame > CLIPPED_FRAME * frame,
            clipped_samples=self._clipped,
            peak=self._peak,
        )


def analyse(audio: np.ndarray, sample_rate: int) -> Frames:
    """Frame `audio` (channels, samples) and mark silent and clipped frames."""
    analysis = Analysis(sample_rate, audio.shape[0])
    for start in range(0, audio.shape[1], _BLOCK):
        analysis.add(audio[:, start : start + _BLOCK].T)
    return analysis.result()
