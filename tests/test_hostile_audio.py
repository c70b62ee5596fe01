"""Hostile audio uploads: each gets its one sentence, leaves nothing behind, and the next
good upload still works.

Files come from the builders in `tests/hostile_audio.py`. They go in through the layer the
bots use (`bots.songs.song_downloaded`, `flows.api.add_sample`), two of them end to
end through the fake Telegram, and the memory that checking a 20 MB upload or a 30-minute voice
sample takes is measured in a fresh process that imports what the bot imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bots.messages import JobPlan, Reply, Who
from bots.songs import song_downloaded
from flows import api
from flows.db import Job, Song, session
from tests.hostile_audio import (
    NOT_AUDIO,
    TOO_LONG,
    Accepted,
    corpus,
    ffconcat_script,
    good_song,
    hls_playlist,
    nan_samples,
    rate_768khz,
    vbr_mp3_without_xing,
)
from tests.wording import refused

ROOT = Path(__file__).resolve().parents[1]
WHO = Who("telegram", "41", "41", "Mallory")
NAMES = [h.name for h in corpus(Path("/elsewhere.mp3"))]
MAX_BOT_RSS_MB = 300


@pytest.fixture
def s(tmp_path, monkeypatch):
    """Embedded settings in a fresh data folder (the bots' layer needs no models here)."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return good_song(tmp_path_factory.mktemp("good") / "good.mp3")


def one_sentence(text: str) -> None:
    assert "Traceback" not in text and "Error" not in text and "\n" not in text
    assert text.endswith(".") and text.count(". ") == 0 and len(text) < 200


def stored_files(s) -> list[Path]:
    """Everything under the storage folder and the work folder."""
    return [p for folder in (s.data_dir / "files", s.work_dir) for p in folder.rglob("*")
            if p.is_file()]  # fmt: skip


def rows(s, model) -> list:
    with session(s.database) as db:
        return list(db.query(model))


def upload(s, path: Path, title: str = "Song"):
    return song_downloaded(s, WHO, "stems", "", path, title)


@pytest.mark.parametrize("name", NAMES)
def test_hostile_song_upload_gets_its_sentence_and_leaves_nothing(name, s, tmp_path, good):
    [hostile] = [h for h in corpus(good) if h.name == name]
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    local = hostile.build(uploads / hostile.filename)

    outcome = upload(s, local)

    if isinstance(hostile.expect, Accepted):
        assert isinstance(outcome, JobPlan), outcome
        [song] = rows(s, Song)
        assert song.id == outcome.song_id
        assert song.duration == pytest.approx(hostile.expect.seconds, abs=0.05)
    else:
        assert isinstance(outcome, Reply), outcome
        assert hostile.expect in outcome.text
        one_sentence(outcome.text)
        assert rows(s, Song) == [] and stored_files(s) == []
    assert rows(s, Job) == []  # refused or not, nothing is queued by the check itself

    after = upload(s, good, "Good Song")
    assert isinstance(after, JobPlan) and after.kind == "stems"
    assert any(song.title == "Good Song" for song in rows(s, Song))


def test_the_corpus_is_hostile_to_a_plain_ffprobe(tmp_path, good):
    """Without the allowlist, ffmpeg follows the playlist and the script to the other file,
    and takes the forged and the bit-rate-changing files at their headers' word."""

    def plain(path: Path) -> dict:
        out = subprocess.run(
            ["ffprobe", "-v", "quiet", "-safe", "0", "-show_format", "-of", "json", str(path)],
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout or "{}").get("format", {})

    assert plain(hls_playlist(tmp_path / "a.mp3", good))["format_name"] == "hls"
    assert plain(ffconcat_script(tmp_path / "b.mp3", good))["format_name"] == "concat"
    vbr = plain(vbr_mp3_without_xing(tmp_path / "c.mp3"))
    assert 19_000_000 < int(vbr["size"]) <= 20_000_000
    assert float(vbr["duration"]) < 10 * 60  # it decodes to more than 80 minutes


def test_corpus_size():
    assert len(NAMES) >= 22 and len(set(NAMES)) == len(NAMES)


# ------------------------------------------------------------------------------------------
# Voice-training samples: the same allowlist and limits, each refusal names the clip


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda p, good: hls_playlist(p.with_suffix(".ogg"), good), "could not be read as audio"),
        (lambda p, good: ffconcat_script(p, good), "could not be read as audio"),
        (lambda p, good: rate_768khz(p.with_suffix(".wav")), "unusual sample rate (768 kHz)"),
        (lambda p, good: nan_samples(p.with_suffix(".wav")), "damaged or cut off"),
        (lambda p, good: vbr_mp3_without_xing(p), "over the 30 min limit for one sample"),
    ],
    ids=["hls", "ffconcat", "768khz", "nan", "vbr-82min"],
)
def test_hostile_training_samples(s, tmp_path, good, build, words):
    owner = WHO.owner
    api.ensure_user(owner, WHO.name, s=s)
    session_ = api.open_upload(owner, "train", "me", s=s)
    clip = build(tmp_path / "clip.mp3", good)

    result = api.add_sample(session_.id, owner, "m1", clip, clip.name, s=s)

    assert not result.accepted and result.problem
    assert result.problem.startswith("This clip ") and words in result.problem
    one_sentence(result.problem)
    assert api.get_upload(session_.id, s=s).files == ()
    assert stored_files(s) == []
    ok = api.add_sample(session_.id, owner, "m2", good, "good.mp3", s=s)
    assert ok.accepted and len(ok.upload.files) == 1


# ------------------------------------------------------------------------------------------
# Memory: checking a 20 MB upload in the bot process

PROBE = """
import json, re, sys, tracemalloc
from pathlib import Path
from flows import api

def high_water_mb():  # this process's peak RSS (ru_maxrss would carry the parent's over exec)
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

api.find_songs("warm up", "telegram:1")  # database migrated, imports done
if sys.argv[2] == "sample":
    api.ensure_user("telegram:1", "Ann")
    upload = api.open_upload("telegram:1", "train", "ann")
before = high_water_mb()
tracemalloc.start()
if sys.argv[2] == "sample":  # a voice sample, as the bot takes one for /train
    result = api.add_sample(upload.id, "telegram:1", "m1", Path(sys.argv[1]), "voice.mp3")
    outcome = f"accepted {result.voiced_s:.1f}" if result.accepted else result.problem
else:
    try:
        song = api.add_uploaded_song("telegram:1", Path(sys.argv[1]), "Big")
        outcome = f"added {song.duration:.1f}"
    except api.UserError as exc:
        outcome = exc.message
_, traced = tracemalloc.get_traced_memory()
print(json.dumps({"before_mb": before, "peak_mb": high_water_mb(),
                  "traced_peak_mb": traced / 2**20, "outcome": outcome}))
"""


def _cbr_mp3(path: Path, size: int, source: str = "sine=f=440:r=44100:d=10",
             bitrate: str = "192k") -> Path:  # fmt: skip
    """An honest stereo mp3 of `size` bytes: 10 s of `source` (an ffmpeg lavfi source) repeated
    (at 192 kb/s, about 14 minutes for 20 MB)."""
    part = path.with_name("part.mp3")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source,
         "-ac", "2", "-c:a", "libmp3lame", "-b:a", bitrate, "-write_xing", "0",
         "-id3v2_version", "0", "-f", "mp3", str(part)],
        check=True,
    )  # fmt: skip
    body = part.read_bytes()
    path.write_bytes(body * (size // len(body)))
    part.unlink()
    return path


@pytest.mark.parametrize("kind", ["vbr-lies-82min", "honest-14min"])
def test_checking_a_20_mb_upload_stays_under_300_mb(kind, s, tmp_path):
    size = 20_000_000
    if kind == "vbr-lies-82min":
        path = vbr_mp3_without_xing(tmp_path / "song.mp3", size)
    else:
        path = _cbr_mp3(tmp_path / "song.mp3", size)
    assert path.stat().st_size > 0.95 * size
    env = {"ENCORE_DATA_DIR": str(s.data_dir), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), "song"], env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    print(kind, found, f"{time.monotonic() - started:.1f} s")
    if kind == "vbr-lies-82min":
        assert TOO_LONG in found["outcome"]
    else:
        assert found["outcome"].startswith("added ")
        assert 830 < float(found["outcome"].split()[1]) < 835
    # Decoded whole, this audio would be about 300 MB of float32 (14 minutes of stereo).
    assert found["peak_mb"] < MAX_BOT_RSS_MB
    assert found["peak_mb"] - found["before_mb"] < 40
    assert found["traced_peak_mb"] < 16


# A voice-like tone: syllables at 3 Hz, a half-second pause every 4 s.
VOICE = "aevalsrc='0.3*sin(2*PI*220*t)*(0.6+0.4*sin(2*PI*3*t))*gt(mod(t,4),0.5)':s=44100:d=10"


def test_checking_a_30_minute_voice_sample_stays_under_300_mb(s, tmp_path):
    # 177 pieces of 10 s at 80 kb/s: about 29.6 minutes and 18 MB, just under the sample limit.
    path = _cbr_mp3(tmp_path / "voice.mp3", 177 * 100_800, VOICE, "80k")
    assert path.stat().st_size > 17_000_000
    env = {"ENCORE_DATA_DIR": str(s.data_dir), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), "sample"], env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    print(found)
    assert found["outcome"].startswith("accepted "), found["outcome"]
    assert 1400 < float(found["outcome"].split()[1]) < 1800  # a pause every 4 s is left out
    # Decoded whole at the analysis rate, this sample would be about 230 MB of float32.
    assert found["peak_mb"] < MAX_BOT_RSS_MB
    assert found["peak_mb"] - found["before_mb"] < 60
    assert found["traced_peak_mb"] < 32


# ------------------------------------------------------------------------------------------
# End to end through the fake Telegram


def _answer(fake, message: dict, timeout: float = 60) -> str:
    return fake.wait_for(lambda: fake.replies_to(message), timeout, "a reply")[-1]["text"]


def test_telegram_refuses_a_playlist_and_a_lying_mp3_then_takes_a_good_song(
    fake, bot, tg_settings, tmp_path, good
):
    from tests.test_telegram import _wait_ended

    user = 5
    elsewhere = good_song(tmp_path / "private.mp3")
    for hostile, expected in (
        (hls_playlist(tmp_path / "song.mp3", elsewhere), NOT_AUDIO),
        (vbr_mp3_without_xing(tmp_path / "long.mp3"), TOO_LONG),
    ):
        sent = fake.send_audio(hostile.read_bytes(), hostile.name, user_id=user)
        fake.wait_for(lambda sent=sent: fake.replies_to(sent), 30, "the hint")
        command = fake.send_text("/stems", user_id=user, reply_to=sent)
        text = _answer(fake, command)
        assert expected in text, text
        one_sentence(text)
    assert rows(tg_settings, Song) == [] and rows(tg_settings, Job) == []
    assert stored_files(tg_settings) == []  # nothing stored, no download left in the bot's scratch

    sent = fake.send_audio(good.read_bytes(), "good.mp3", title="Good", user_id=user)
    fake.wait_for(lambda: fake.replies_to(sent), 30, "the hint")
    command = fake.send_text("/stems", user_id=user, reply_to=sent)
    fake.wait_for(lambda: fake.replies_to(command), 30, "the status message")
    [job] = _wait_ended(tg_settings, fake, owner=f"telegram:{user}")
    assert job.state == "succeeded"
    assert [song.title for song in rows(tg_settings, Song)] == ["Good"]


# ------------------------------------------------------------------------------------------
# The engine's decode (the separate and intake steps): same allowlist, limits on what decodes


def test_decode_stops_at_the_limit_whatever_the_headers_say(tmp_path, good):
    from gpu_worker.audio import Limits, decode
    from gpu_worker.errors import BadAudio, TooLong

    short = Limits(max_seconds=60)
    lying = vbr_mp3_without_xing(tmp_path / "song.mp3", 2_000_000)  # probes 50 s, holds 8 min
    started = time.monotonic()
    with refused(TooLong, match="longer than the 1-minute limit"):
        decode(lying, 8000, 1, short)
    assert time.monotonic() - started < 30  # ffmpeg stopped at the limit, not at 8 minutes
    assert decode(good, 8000, 1, short).shape == (1, pytest.approx(3 * 8000, abs=80))
    for hostile in (
        hls_playlist(tmp_path / "a.mp3", good),
        ffconcat_script(tmp_path / "b.mp3", good),
    ):
        with refused(BadAudio, match=NOT_AUDIO):
            decode(hostile, 8000, 1, None)  # even without limits, only the allowlist opens
