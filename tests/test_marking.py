"""A cover says what it is: tags, a signed Content Credentials manifest, and `encore verify`.

End to end through the real flows (tiny real models, real ffmpeg, c2pa-python), then the
command line on the delivered file and on a re-encoded copy of it.
"""

from __future__ import annotations

import logging
import subprocess

import pytest

from flows.catalog import add_song
from flows.storage import open_storage
from flows.submit import follow, submit_cover, submit_karaoke
from flows.voices import import_voice
from gpu_worker import provenance
from gpu_worker.audio import decode, measure_loudness, probe
from gpu_worker.tags import AI_GENERATED, SOURCE_SONG, VOICE, read_tags
from tests.conftest import run_cli
from tests.test_tags import ffprobe_tags

SR = 44100

pytestmark = pytest.mark.skipif(not provenance.available(), reason="c2pa-python not installed")


def _result(settings, job):
    return open_storage(settings.storage).fetch(job.result["uri"], settings.work_dir)


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_cover_is_tagged_signed_and_verified(settings, song_wav, voice_files, tmp_path):
    pth, index = voice_files["alice"]
    voice = import_voice(settings, "u1", "alice", [pth, index])
    song = add_song(settings, song_wav, title="Test Song", artist="Tester")
    kept = Kept()
    logging.getLogger("encore.mark").addHandler(kept)
    try:
        job = follow(submit_cover("u1", song.id, voice.id, {"format": "m4a"}, s=settings))
    finally:
        logging.getLogger("encore.mark").removeHandler(kept)
    assert job.state == "succeeded", job.reason
    cover = tmp_path / "cover.m4a"
    cover.write_bytes(_result(settings, job).read_bytes())

    # The output contract holds with the tags and the manifest in the file.
    assert abs(probe(cover).duration - probe(song_wav).duration) <= 0.010
    loud = measure_loudness(cover)
    assert abs(loud.integrated_lufs - settings.loudness_lufs) <= 0.5
    assert loud.true_peak_dbtp <= settings.true_peak_dbtp

    seen = ffprobe_tags(cover)
    assert seen["title"] == "Test Song"
    assert seen["artist"] == "Tester (alice AI cover)"
    assert seen[VOICE.lower()] == "alice" and seen[AI_GENERATED.lower()] == "yes"
    assert seen[SOURCE_SONG.lower()] == "Tester - Test Song"

    # Signed with a certificate made on first use, with a warning saying it is not trusted.
    assert settings.signing_cert.is_file() and settings.signing_key.is_file()
    assert any("will not trust" in line for line in kept.lines)
    found = provenance.read(cover)
    assert found.valid and found.ai_generated
    assert "Tester - Test Song" in found.ingredients

    said = run_cli(settings, "verify", str(cover))
    assert said.returncode == 0, said.stderr
    out = " ".join(said.stdout.split())
    assert "the signature holds" in out
    assert "declares itself AI-generated" in out
    assert "AI-generated cover of Tester - Test Song, sung by the voice alice" in out

    copy = tmp_path / "reencoded.m4a"
    reencode = ["ffmpeg", "-v", "error", "-i", str(cover), "-c:a", "aac", str(copy)]
    subprocess.run(reencode, check=True)
    said = run_cli(settings, "verify", str(copy))
    assert said.returncode == 0, said.stderr
    assert " ".join(said.stdout.split()).startswith("Unmarked")


def test_karaoke_is_tagged_but_not_declared_a_voice_cover(settings, song_wav):
    song = add_song(settings, song_wav, title="Sing Along", artist="Band")
    job = follow(submit_karaoke("u1", song.id, {"format": "mp3"}, s=settings))
    assert job.state == "succeeded", job.reason
    track = _result(settings, job)
    tags = read_tags(track)
    assert tags["title"] == "Sing Along (karaoke)" and tags["artist"] == "Band"
    assert tags[SOURCE_SONG] == "Band - Sing Along" and VOICE not in tags
    assert provenance.read(track).marked is False
    assert decode(track, SR, 2).shape[1] == pytest.approx(decode(song_wav, SR, 2).shape[1], abs=441)


def test_verify_on_an_untagged_file_and_a_missing_one(settings, song_wav, tmp_path):
    said = run_cli(settings, "verify", str(song_wav))
    assert said.returncode == 0, said.stderr
    out = " ".join(said.stdout.split())
    assert out.startswith("Unmarked") and "no tags" in out
    missing = run_cli(settings, "verify", str(tmp_path / "nope.mp3"))
    assert missing.returncode == 1 and "No file at" in missing.stderr
