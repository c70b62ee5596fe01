"""End to end through the real Prefect flows, tiny real models and real ffmpeg."""

from __future__ import annotations

import numpy as np
import pytest

from flows.catalog import add_song
from flows.jobs import step_runs
from flows.storage import open_storage
from flows.submit import follow, submit_cover, submit_karaoke, submit_stems
from flows.voices import import_voice
from gpu_worker.audio import decode, measure_loudness, probe

SR = 44100


@pytest.fixture
def voices(settings, voice_files):
    return {
        name: import_voice(settings, "u1", name, [pth, index])
        for name, (pth, index) in voice_files.items()
    }


def _result_path(settings, job):
    return open_storage(settings.storage).fetch(job.result["uri"], settings.work_dir)


def test_cover_meets_the_contract_and_second_voice_reuses_stems(settings, song_wav, voices):
    song = add_song(settings, song_wav, title="Test Song", artist="Tester")
    source_samples = decode(song_wav, SR, 2).shape[1]

    first = follow(submit_cover("u1", song.id, voices["alice"].id, {"pitch": 2}, s=settings))
    assert first.state == "succeeded", first.reason
    from flows.jobs import get_job

    assert get_job(settings, first.id).flow_run_id  # the row links to its Prefect run
    cover = _result_path(settings, first)
    assert cover.name == "Tester - Test Song (alice cover, +2).mp3"  # a +2 cover says so
    audio = decode(cover, SR, 2)
    assert abs(audio.shape[1] - source_samples) <= 0.010 * SR
    loud = measure_loudness(cover)
    assert abs(loud.integrated_lufs - settings.loudness_lufs) <= 0.5
    assert loud.true_peak_dbtp <= settings.true_peak_dbtp

    second = follow(submit_cover("u1", song.id, voices["bob"].id, {}, s=settings))
    assert second.state == "succeeded", second.reason
    sep = {
        j: [r for r in step_runs(settings, j) if r.step == "separating"]
        for j in (first.id, second.id)
    }
    assert [r.cached for r in sep[first.id]] == [False]
    assert [r.cached for r in sep[second.id]] == [True]
    assert not np.allclose(decode(_result_path(settings, second), SR, 2), audio)


def test_stems_and_karaoke_share_the_cache(settings, song_wav):
    song = add_song(settings, song_wav, title="Stem Song")
    stems = follow(submit_stems("u1", song.id, s=settings))
    assert stems.state == "succeeded", stems.reason
    assert {"vocals", "drums", "bass", "other", "instrumental"} <= set(stems.result["stems"])
    kara = follow(submit_karaoke("u1", song.id, {"format": "flac"}, s=settings))
    assert kara.state == "succeeded", kara.reason
    track = _result_path(settings, kara)
    assert abs(probe(track).duration - probe(song_wav).duration) <= 0.010
    assert [r.cached for r in step_runs(settings, kara.id) if r.step == "separating"] == [True]


def test_missing_song_file_fails_cleanly_and_leaves_nothing(settings, song_wav, voices):
    song = add_song(settings, song_wav, title="Vanishing")
    open_storage(settings.storage).delete(song.uri)
    job = follow(submit_cover("u1", song.id, voices["alice"].id, {}, s=settings))
    assert job.state == "failed"
    assert job.reason and "\n" not in job.reason and "Traceback" not in job.reason
    root = settings.data_dir / "files"
    assert not (root / "covers" / job.id).exists()
    assert not (root / "tmp" / "jobs" / job.id).exists()
    assert not (settings.work_dir / job.id).exists()


def test_corrupt_song_fails_with_a_reason(settings, tmp_path, voices):
    """A file that probes as audio but is cut off mid-stream: the job says so and ends."""
    import subprocess

    from flows.demo import synth_song
    from gpu_worker.audio import write_wav

    wav = write_wav(tmp_path / "ok.wav", synth_song(3.0, seed=9), SR)
    mp3 = tmp_path / "ok.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(mp3)], check=True)
    song = add_song(settings, mp3, title="Broken")
    stored = open_storage(settings.storage).fetch(song.uri, tmp_path)
    stored.write_bytes(b"\x00" * 4096)  # storage corrupted after the upload was checked
    job = follow(submit_cover("u1", song.id, voices["alice"].id, {}, s=settings))
    assert job.state == "failed"
    assert "audio" in job.reason.lower()
    assert not list((settings.data_dir / "files").glob("covers/*"))


def test_song_over_the_length_limit_fails_the_job(settings, song_wav, voices, monkeypatch):
    """Limits are checked again when the job runs (the operator may have lowered them)."""
    from flows.settings import get_settings

    song = add_song(settings, song_wav, title="Long One")
    monkeypatch.setenv("ENCORE_MAX_SONG_SECONDS", "2")
    get_settings.cache_clear()
    strict = get_settings()
    job = follow(submit_cover("u1", song.id, voices["alice"].id, {}, s=strict), s=strict)
    assert job.state == "failed"
    assert "limit" in job.reason and job.reason.endswith(".")


def test_simultaneous_covers_of_one_song_separate_once(settings, song_wav, voices):
    song = add_song(settings, song_wav, title="Popular")
    ids = [submit_cover(f"u{n}", song.id, voices[name].id, {}, s=settings)
           for n, name in enumerate(("alice", "bob"))]  # fmt: skip
    jobs = [follow(job_id, s=settings) for job_id in ids]
    assert [j.state for j in jobs] == ["succeeded", "succeeded"], [j.reason for j in jobs]
    cached = sorted(r.cached for j in ids for r in step_runs(settings, j) if r.step == "separating")
    assert cached == [False, True]


def test_same_idempotency_key_gives_one_job(settings, song_wav, voices):
    song = add_song(settings, song_wav, title="Twice")
    a = submit_cover(
        "u1", song.id, voices["alice"].id, {}, idempotency_key="chat:1:msg:7", s=settings
    )
    b = submit_cover(
        "u1", song.id, voices["alice"].id, {}, idempotency_key="chat:1:msg:7", s=settings
    )
    assert a == b
    assert follow(a, s=settings).state == "succeeded"


def test_cancelled_job_stops_and_leaves_nothing(settings, song_wav, voices):
    from flows.jobs import cancel_job

    song = add_song(settings, song_wav, title="Never Mind")
    job_id = submit_cover("u1", song.id, voices["alice"].id, {}, s=settings)
    assert cancel_job(settings, job_id)
    job = follow(job_id, s=settings)
    assert job.state == "cancelled"
    assert not list((settings.data_dir / "files").glob("covers/*"))
    assert not (settings.work_dir / job_id).exists()
    assert not cancel_job(settings, job_id)  # already over


def test_a_job_whose_process_died_ends_failed(settings):
    from datetime import timedelta

    from flows.db import Job, now, session
    from flows.jobs import INTERRUPTED, create_job, get_job, reap_interrupted, update_job

    stuck = create_job(settings, "cover", "u1", {})
    update_job(settings, stuck, state="running", step="converting")
    fresh = create_job(settings, "cover", "u1", {})
    with session(settings.database) as db:
        db.get(Job, stuck).updated_at = now() - timedelta(hours=1)
    assert reap_interrupted(settings) == 1
    assert (get_job(settings, stuck).state, get_job(settings, stuck).reason) == (
        "failed",
        INTERRUPTED,
    )
    assert get_job(settings, fresh).state == "queued"
