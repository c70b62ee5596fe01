"""Bad input is refused with one sentence a user can act on; good input decodes exactly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpu_worker.audio import Limits, decode, probe, write_wav
from gpu_worker.errors import BadAudio
from tests.wording import refused, said

SR = 44100


def _tone(seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels).astype(np.float32)


def _one_sentence(message: str) -> None:
    assert message.endswith(".")
    assert "Traceback" not in message and "\n" not in message
    assert len(message) < 200


def test_decode_keeps_every_sample_and_resamples(tmp_path):
    src = write_wav(tmp_path / "a.wav", _tone(2.0), SR)
    audio = decode(src, SR, 2)
    assert audio.shape == (2, 2 * SR)
    assert np.allclose(audio, _tone(2.0), atol=1e-6)
    assert decode(src, 16000, 1).shape == (1, 32000)


def test_mp3_round_trip_keeps_duration(tmp_path):
    src = write_wav(tmp_path / "a.wav", _tone(3.0), SR)
    mp3 = tmp_path / "a.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), str(mp3)], check=True)
    assert abs(decode(mp3, SR, 2).shape[1] - 3 * SR) <= SR * 0.010


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, I am not a song\n" * 50), "could not be read as audio"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(50_000)), "could not be read"),
    ],
    ids=["empty", "text", "noise-bytes"],
)
def test_not_audio_is_refused(tmp_path, make, words):
    path = tmp_path / "song.mp3"
    make(path)
    with pytest.raises(BadAudio) as err:
        decode(path)
    assert words in said(err.value)
    _one_sentence(said(err.value))


def test_truncated_file_is_refused(tmp_path):
    src = write_wav(tmp_path / "a.wav", _tone(2.0), SR)
    mp3 = tmp_path / "a.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), str(mp3)], check=True)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[:300])  # the header and a sliver of one frame
    with pytest.raises(BadAudio) as err:
        decode(cut)
    _one_sentence(said(err.value))


def test_limits_on_length_size_and_channels(tmp_path):
    path = write_wav(tmp_path / "long.wav", _tone(3.0), SR)
    with refused(BadAudio, match="over the 0-minute limit|limit; send a shorter file"):
        probe(path, Limits(max_seconds=2.0))
    with refused(BadAudio, match="send a shorter or more compressed file"):
        probe(path, Limits(max_bytes=1000))
    many = write_wav(tmp_path / "many.wav", _tone(1.0, channels=10), SR)
    with refused(BadAudio, match="10 channels"):
        probe(many, Limits())
    info = probe(path, Limits())
    assert info.channels == 2 and info.sample_rate == SR and abs(info.duration - 3.0) < 1e-3


def test_missing_file(tmp_path):
    with refused(BadAudio, match="not found"):
        probe(Path(tmp_path / "nope.wav"))
