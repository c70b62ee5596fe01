"""The remix sits at the loudness target, keeps every sample aligned and the exact length."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from gpu_worker.audio import decode, measure_loudness, write_wav
from gpu_worker.remix import MixOptions, remix

SR = 44100
N = 3 * SR + 777  # not a whole number of codec frames


def _inputs(tmp_path, vocal_level=0.3, inst_level=0.2):
    rng = np.random.default_rng(1)
    t = np.arange(N) / SR
    vocal = vocal_level * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    inst = inst_level * rng.standard_normal((2, N)) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    v = write_wav(tmp_path / "vocal.wav", vocal[None].astype(np.float32), SR)
    i = write_wav(tmp_path / "inst.wav", inst.astype(np.float32), SR)
    return v, i


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "flac", "wav", "m4a"])
def test_loudness_target_true_peak_and_length(tmp_path, fmt):
    v, i = _inputs(tmp_path)
    out = remix(v, i, tmp_path / f"cover.{fmt}", MixOptions(format=fmt, reverb=0.3))
    loud = measure_loudness(out.path)
    assert abs(loud.integrated_lufs - -14.0) <= 0.5
    assert loud.true_peak_dbtp <= -1.0
    if fmt == "m4a":  # ffmpeg's decoder keeps AAC's end padding; the container says the length
        info = sf.info(str(tmp_path / "inst.wav"))
        from gpu_worker.audio import probe

        assert abs(probe(out.path).duration - info.duration) <= 0.010
    else:
        assert abs(decode(out.path, SR, 2).shape[1] - N) <= SR * 0.010


def test_loud_input_is_limited_and_quiet_input_raised(tmp_path):
    v, i = _inputs(tmp_path, vocal_level=0.99, inst_level=0.9)
    loud = remix(v, i, tmp_path / "loud.flac", MixOptions(format="flac", loudness_lufs=-9)).loudness
    assert abs(loud.integrated_lufs - -9.0) <= 0.5 and loud.true_peak_dbtp <= -1.0
    v, i = _inputs(tmp_path, vocal_level=0.003, inst_level=0.002)
    quiet = remix(v, i, tmp_path / "quiet.flac", MixOptions(format="flac")).loudness
    assert abs(quiet.integrated_lufs - -14.0) <= 0.5


def test_vocal_and_instrumental_stay_sample_aligned(tmp_path):
    """A click at the same sample in both inputs lands at one sample in the mix."""
    vocal = np.zeros((1, N), np.float32)
    inst = np.zeros((2, N), np.float32)
    at = SR + 1234
    vocal[0, at] = 0.5
    inst[:, at + 5000] = 0.5
    v = write_wav(tmp_path / "v.wav", vocal, SR)
    i = write_wav(tmp_path / "i.wav", inst, SR)
    out = remix(v, i, tmp_path / "mix.wav", MixOptions(format="wav", loudness_lufs=-30))
    mixed = decode(out.path, SR, 2)[0]
    assert mixed.shape[0] == N
    peaks = np.argsort(np.abs(mixed))[-2:]
    assert sorted(peaks.tolist()) == [at, at + 5000]


def test_silence_stays_silence(tmp_path):
    v = write_wav(tmp_path / "v.wav", np.zeros((1, N), np.float32), SR)
    i = write_wav(tmp_path / "i.wav", np.zeros((2, N), np.float32), SR)
    out = remix(v, i, tmp_path / "s.flac", MixOptions(format="flac"))
    audio = decode(out.path, SR, 2)
    assert audio.shape[1] == N and np.abs(audio).max() == 0


def test_failure_leaves_no_partial_file(tmp_path):
    v, i = _inputs(tmp_path)
    from gpu_worker.errors import EngineError

    with pytest.raises(EngineError):
        remix(v, i, tmp_path / "cover.xyz", MixOptions(format="xyz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst.wav", "vocal.wav"]
