"""Voice training and import as users run them: through the real flows and the `encore` CLI.

Tiny random-weight base models in rvc-next's real formats, a few seconds of synthetic speech
(espeak-ng), real Prefect runs against the session's server, real ffmpeg.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flows.catalog import add_song
from flows.db import Job, session
from flows.errors import UserError
from flows.jobs import step_runs
from flows.storage import open_storage
from flows.submit import follow, stage_upload, submit_cover, submit_import, submit_training
from flows.voices import delete_voice, get_voice, list_voices
from gpu_worker.audio import decode, measure_loudness, write_wav
from gpu_worker.convert import inspect_voice
from tests.conftest import cli_env, run_cli
from tests.hostile import code_running_pth
from tests.privacy import assert_runs_name_nobody
from tests.tiny_rvc import TINY_TRAIN_CONFIG

SR = 44100
TINY = {"epochs": 2, "batch_size": 2, "save_every": 1}


@pytest.fixture
def train_settings(settings, monkeypatch):
    """Settings that train the tiny model shapes and accept a few seconds of voice."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_TRAIN_CONFIG", json.dumps(TINY_TRAIN_CONFIG))
    monkeypatch.setenv("ENCORE_TRAIN_MIN_SECONDS", "3")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _uploads(settings, files: list[Path]) -> list[str]:
    return [stage_upload("u1", f, f.name, s=settings) for f in files]


def _uploaded_files(settings) -> list[Path]:
    root = settings.data_dir / "files" / "tmp" / "uploads"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _trainer_pids(data_dir: Path | None = None) -> list[int]:
    """The training child processes running now (`python -m gpu_worker.train_child JOB`),
    those training under `data_dir` when given (another test's trainers are not ours)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not proc.name.isdigit() or b"gpu_worker.train_child" not in cmd:
            continue
        if data_dir is None or any(str(data_dir).encode() in part for part in cmd):
            pids.append(int(proc.name))
    return pids


def test_train_a_voice_then_cover_with_it(train_settings, speech, song_wav):
    s = train_settings
    job_id = submit_training("u1", "Me", _uploads(s, speech), consent=True, options=TINY, s=s)
    # The trainer dies after its first checkpoint: the flow retries, and the retry resumes.
    deadline = time.monotonic() + 300
    while not _checkpoints(s.data_dir):
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    for pid in _trainer_pids(s.data_dir):
        os.kill(pid, signal.SIGKILL)
    job = follow(job_id)
    assert job.state == "succeeded", job.reason
    assert job.result["voice"] == "Me" and job.result["epochs"] == TINY["epochs"]
    assert job.result["resumed_from_epoch"] >= 1
    assert job.result["voiced_seconds"] > 5
    # Prefect keeps the runs' parameters: ids and options, not the owner, name or samples.
    assert_runs_name_nobody(job_id, '"u1"', '"Me"', "uploads/")

    voice = get_voice(s, "u1", "me", include_public=False)
    assert voice is not None and voice.source == "trained" and voice.consent and voice.consent_at
    assert get_voice(s, "u2", "me") is None  # private to its owner
    storage = open_storage(s.storage)
    pth = storage.fetch(voice.pth_uri, s.work_dir)
    info = inspect_voice(pth)  # a standard RVC v2 checkpoint, loaded with weights_only
    assert (info.version, info.sample_rate, info.f0) == ("v2", 40000, True)
    assert voice.index_uri and storage.fetch(voice.index_uri, s.work_dir).stat().st_size > 0

    # The preview: the demo tune sung by the new voice, at the loudness target.
    preview = storage.fetch(job.result["preview_uri"], s.work_dir)
    assert decode(preview, SR, 2).shape[1] == pytest.approx(6 * SR, abs=0.01 * SR)
    assert abs(measure_loudness(preview).integrated_lufs - s.loudness_lufs) <= 0.5
    # ... marked as AI-generated: tags naming the voice, and a signed manifest.
    from gpu_worker import provenance
    from gpu_worker.tags import read_tags

    assert read_tags(preview)["VOICE"] == "Me"
    assert provenance.read(preview).ai_generated and provenance.read(preview).valid

    # Nothing of the user's samples or the training folder is left behind.
    assert _uploaded_files(s) == []
    assert not any((s.data_dir / "training").iterdir())

    song = add_song(s, song_wav, title="Trained")
    cover = follow(submit_cover("u1", song.id, voice.id, {}, s=s))
    assert cover.state == "succeeded", cover.reason
    audio = decode(storage.fetch(cover.result["uri"], s.work_dir), SR, 2)
    assert abs(audio.shape[1] - decode(song_wav, SR, 2).shape[1]) <= 0.010 * SR


def test_bad_samples_are_refused_before_training(train_settings, speech, tmp_path):
    s = train_settings
    silent = write_wav(tmp_path / "quiet.wav", np.zeros((1, SR * 5), np.float32), SR)
    job = follow(submit_training("u1", "x", _uploads(s, [silent]), consent=True, s=s))
    assert job.state == "failed"
    assert "Sample 1" in job.reason and "silence" in job.reason
    assert [r.step for r in step_runs(s, job.id)] == []  # no training step ever started
    assert list_voices(s, "u1") == [] and _uploaded_files(s) == []


def test_training_needs_consent_and_a_free_name(train_settings, speech, voice_files):
    s = train_settings
    with pytest.raises(UserError, match="consent"):
        submit_training("u1", "me", _uploads(s, speech[:1]), consent=False, s=s)
    with session(s.database) as db:
        assert db.query(Job).count() == 0
    pth, index = voice_files["alice"]
    assert follow(submit_import("u1", "taken", _uploads(s, [pth, index]), s=s)).state == (
        "succeeded"
    )
    job = follow(submit_training("u1", "Taken", _uploads(s, speech), consent=True, s=s))
    assert job.state == "failed" and "already have a voice" in job.reason


def test_import_flow_registers_good_models_and_refuses_hostile_ones(
    train_settings, voice_files, tmp_path
):
    s = train_settings
    pth, index = voice_files["bob"]
    archive = tmp_path / "bob.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pth, "bob/model.pth")
        zf.write(index, "bob/added_IVF5_Flat_nprobe_1_bob_v2.index")
    good = follow(submit_import("u1", "Bob", _uploads(s, [archive]), s=s))
    assert good.state == "succeeded", good.reason
    assert_runs_name_nobody(good.id, '"u1"', '"Bob"', "uploads/")
    assert (good.result["version"], good.result["sample_rate"], good.result["index"]) == (
        "v2",
        40000,
        True,
    )

    marker = tmp_path / "pwned"
    evil = code_running_pth(tmp_path / "evil.pth", marker)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    foreign = tmp_path / "resnet.pth"
    import torch

    torch.save({"state_dict": {"conv.weight": torch.zeros(2, 2)}}, foreign)
    for bad in (evil, empty, foreign):
        job = follow(submit_import("u1", bad.stem, _uploads(s, [bad]), s=s))
        assert job.state == "failed" and job.reason and len(job.reason) < 200
        assert get_voice(s, "u1", bad.stem) is None
    assert not marker.exists()
    assert [v.name for v in list_voices(s, "u1")] == ["Bob"]
    assert _uploaded_files(s) == []

    # Deleting a voice removes its files, too.
    voices_root = s.data_dir / "files" / "voices"
    assert any(p.is_file() for p in voices_root.rglob("*"))
    assert delete_voice(s, "u1", "bob")
    assert get_voice(s, "u1", "bob") is None
    assert not any(p.is_file() for p in voices_root.rglob("*"))


def test_cli_refuses_training_without_consent_or_with_bad_samples(train_settings, tmp_path):
    s = train_settings
    noise = tmp_path / "notes.wav"
    noise.write_text("these are my lyrics, not audio")
    refused = run_cli(s, "voices", "train", "me", str(noise))
    assert refused.returncode == 1 and "consent" in refused.stderr
    bad = run_cli(s, "voices", "train", "me", str(noise), "--consent")
    assert bad.returncode == 1
    message = bad.stderr.strip().removeprefix("Error:").strip()
    assert message.startswith("Sample 1") and "Traceback" not in bad.stderr
    assert list_voices(s, "local") == [] and _uploaded_files(s) == []


def _checkpoints(data_dir: Path) -> list[Path]:
    """The finished checkpoint pair (the generator and the discriminator), once both exist."""
    found = [sorted((data_dir / "training").rglob(f"{net}_*.pth")) for net in "GD"]
    return found[0] + found[1] if all(found) else []


def _wait_for_trainer_to_let_go(data_dir: Path, timeout: float = 120) -> None:
    import fcntl

    deadline = time.monotonic() + timeout
    for lock in (data_dir / "training").rglob(".encore-train.lock"):
        with open(lock, "ab") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the orphaned trainer never stopped"
                    time.sleep(0.5)


def test_cli_training_resumes_after_the_process_is_killed(train_settings, speech, tmp_path):
    s = train_settings
    env = {**cli_env(s), "ENCORE_TRAIN_CONFIG": json.dumps(TINY_TRAIN_CONFIG)}
    env["ENCORE_TRAIN_MIN_SECONDS"] = "3"
    encore = str(Path(sys.executable).with_name("encore"))
    args = [encore, "voices", "train", "Me", *map(str, speech), "--consent"]
    args += ["--epochs", "2", "--save-every", "1", "--batch-size", "2"]
    args += ["--preview", str(tmp_path / "me.mp3")]

    first = subprocess.Popen(args, env=env, cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _checkpoints(s.data_dir) and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert list_voices(s, "u1") == [] and not get_voice(s, "local", "me", include_public=False)

    # The trainer runs in its own process; with its parent gone it stops at its next step.
    _wait_for_trainer_to_let_go(s.data_dir)
    env["ENCORE_REAP_AFTER_SECONDS"] = "0"
    second = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "resumed from epoch" in second.stdout, second.stdout
    assert (tmp_path / "me.mp3").stat().st_size > 0
    voice = get_voice(s, "local", "me", include_public=False)
    assert voice is not None and voice.source == "trained"
    with session(s.database) as db:
        states = sorted(j.state for j in db.query(Job).filter(Job.kind == "train"))
    assert states == ["failed", "succeeded"]  # the killed run ended visibly, too
