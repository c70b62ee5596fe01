"""Bounded heavy steps and training that resumes anywhere, with real parts only.

In cluster mode (the session's Prefect server, `prefect worker start` process workers,
PostgreSQL, S3 on moto's HTTP server), with the waits compressed by their settings:

- a heavy step that no GPU worker starts fails its job with a sentence in bounded time, its
  run is cancelled in Prefect (it never runs later), and the next job runs once a worker is up;
- a heavy step that hangs (it waits on a stems claim that another run holds and never
  releases) is stopped by its timeout, and its job fails with a sentence.

Embedded: a training killed after its first checkpoint reached storage resumes from that
checkpoint in another data folder (another machine), and the stored checkpoint is gone once
the voice is registered.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows.catalog import add_song
from flows.db import Job, StemSet, session
from flows.demo import synth_song
from gpu_worker.audio import write_wav
from tests.conftest import S3_REGION, s3_client
from tests.test_cluster import Worker
from tests.test_training_flow import _trainer_pids
from tests.tiny_rvc import TINY_TRAIN_CONFIG

SR = 44100
OWNER = "telegram:777"
START_S = 25  # heavy_start_timeout_s, compressed (the default is 15 minutes)
STEP_S = 20  # step_timeout_s, compressed (the default is 30 minutes)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, models_dir, pg_databases, moto_endpoint):
    """Cluster settings with short bounds, deployments, a cpu worker; the gpu worker is made
    but not started (the first test needs a GPU pool that nobody serves)."""
    from flows.deployments import deploy
    from flows.settings import get_settings

    root = tmp_path_factory.mktemp("bounded")
    bucket = f"encore-bounded-{uuid.uuid4().hex[:10]}"
    s3_client(moto_endpoint).create_bucket(Bucket=bucket)
    tag = uuid.uuid4().hex[:6]
    values = {
        "ENCORE_RUN_MODE": "cluster",
        "ENCORE_DATA_DIR": str(root / "data"),
        "ENCORE_MODEL_DIR": str(models_dir),
        "ENCORE_DEVICE": "cpu",
        "ENCORE_F0_METHOD": "pm",
        "ENCORE_DATABASE_URL": pg_databases(),
        "ENCORE_STORAGE_URL": f"s3://{bucket}/files",
        "ENCORE_S3_ENDPOINT_URL": moto_endpoint,
        "ENCORE_S3_REGION": S3_REGION,
        "ENCORE_CPU_POOL": f"cpu-{tag}",
        "ENCORE_GPU_POOL": f"gpu-{tag}",
        "ENCORE_GPU_COUNT": "1",
        "ENCORE_HEAVY_START_TIMEOUT_S": str(START_S),
        "ENCORE_STEP_TIMEOUT_S": str(STEP_S),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    patch = pytest.MonkeyPatch()
    for key, value in values.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    s = get_settings()
    deploy(s, schedules=False)
    env = {**os.environ}
    workers = {
        "cpu": Worker(s.cpu_pool, env, root / "cpu-worker.log").start(),
        "gpu": Worker(s.gpu_pool, env, root / "gpu-worker.log"),
    }
    try:
        yield s, workers
    finally:
        for worker in workers.values():
            worker.stop()
        for log in sorted(root.glob("*.log")):
            print(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}")
        patch.undo()
        get_settings.cache_clear()


def _song(s, tmp_path: Path, seed: int, title: str):
    path = write_wav(tmp_path / f"{title}.wav", synth_song(4.0, seed=seed), SR)
    return add_song(s, path, title=title, artist="Tester")


def _ended(s, job_id: str, within: float) -> Job:
    """The job once it is in a terminal state (fails the test after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        with session(s.database) as db:
            job = db.get(Job, job_id)
        if job.state in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} ({job.step})"
        time.sleep(0.5)


def test_a_step_no_worker_starts_fails_its_job_and_frees_the_pool(bounded, tmp_path):
    from flows.submit import submit_stems

    s, workers = bounded
    song = _song(s, tmp_path, seed=21, title="Nobody Home")
    began = time.monotonic()
    job_id = submit_stems(OWNER, song.id, s=s)
    job = _ended(s, job_id, START_S + 60)
    took = time.monotonic() - began
    assert job.state == "failed"
    assert job.reason == (
        f"No GPU worker took the job within {START_S} seconds; please try again later."
    )
    assert START_S <= took < START_S + 45
    [step] = _separate_runs(job_id)
    assert step.state.type.value == "CANCELLED"  # it holds no slot and will not run later

    workers["gpu"].start()  # a GPU worker comes up: the next job runs
    other = _song(s, tmp_path, seed=22, title="Someone Home")
    next_id = submit_stems(OWNER, other.id, s=s)
    job = _ended(s, next_id, 120)
    assert job.state == "succeeded", job.reason
    assert job.result["uri"].endswith(".zip")
    [step] = _separate_runs(job_id)  # the cancelled run was never picked up meanwhile
    assert step.state.type.value == "CANCELLED" and step.run_count == 0


def test_a_hung_step_is_stopped_by_its_timeout(bounded, tmp_path):
    from flows.steps.separate import options
    from flows.submit import submit_stems

    s, workers = bounded
    if workers["gpu"].process is None:
        workers["gpu"].start()
    song = _song(s, tmp_path, seed=23, title="Never Ends")
    # Another run claims the song's stems and never finishes (its claim is fresh, so the
    # step waits for it, up to stems_wait_seconds: half an hour).
    with session(s.database) as db:
        db.add(StemSet(content_hash=song.content_hash, model=options(s).model, job_id="other"))
    began = time.monotonic()
    job_id = submit_stems(OWNER, song.id, s=s)
    job = _ended(s, job_id, STEP_S + 90)
    took = time.monotonic() - began
    assert job.state == "failed"
    assert job.reason == (
        f"Separating the song took longer than {STEP_S} seconds and was stopped; "
        "please try again later."
    )
    assert took < STEP_S + 75
    [step] = _separate_runs(job_id)
    assert step.state.type.value == "FAILED" and step.state.name == "TimedOut"
    assert step.total_run_time.total_seconds() < STEP_S + 10


def _separate_runs(job_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        name = FlowRunFilterName(any_=[f"separate-{job_id}"])
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=name))


# ------------------------------------------------------------------------------------------
# Training that resumes on another machine


def _machine(monkeypatch, data_dir: Path, shared: Path):
    """Settings of one machine: its own data folder; the storage and database are shared."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_RUN_MODE", "embedded")
    monkeypatch.setenv("ENCORE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ENCORE_STORAGE_URL", (shared / "files").as_uri())
    monkeypatch.setenv("ENCORE_DATABASE_URL", f"sqlite:///{shared / 'encore.db'}")
    get_settings.cache_clear()
    return get_settings()


def _stored_checkpoints(s) -> list[Path]:
    root = Path(s.storage.removeprefix("file://")) / "tmp" / "training"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_training_killed_on_one_machine_resumes_on_another_from_storage(
    settings, monkeypatch, speech, tmp_path
):
    from flows.settings import get_settings
    from flows.submit import follow, stage_upload, submit_training

    monkeypatch.setenv("ENCORE_TRAIN_CONFIG", json.dumps(TINY_TRAIN_CONFIG))
    monkeypatch.setenv("ENCORE_TRAIN_MIN_SECONDS", "3")
    monkeypatch.setenv("ENCORE_TRAIN_RETRIES", "0")  # a crash ends the job: no local retry
    shared = tmp_path / "shared"
    options = {"epochs": 2, "batch_size": 2, "save_every": 1}

    first = _machine(monkeypatch, tmp_path / "machine-a", shared)
    uploads = [stage_upload("u1", f, f.name, s=first) for f in speech]
    job_id = submit_training("u1", "Roamer", uploads, consent=True, options=options, s=first)

    def kill_after_first_upload() -> None:
        while not done.is_set():
            if any(p.name == "latest.json" for p in _stored_checkpoints(first)):
                for pid in _trainer_pids():  # ours only: as if the machine died mid-training
                    with contextlib.suppress(OSError):
                        if str(first.data_dir) in Path(f"/proc/{pid}/cmdline").read_text():
                            os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    done = threading.Event()
    killer = threading.Thread(target=kill_after_first_upload)
    killer.start()
    try:
        job = follow(job_id, timeout=600, s=first)
    finally:
        done.set()
        killer.join()
    assert job.state == "failed", "the training finished before it could be killed"
    assert "run it again to resume" in job.reason
    assert _stored_checkpoints(first)
    shutil.rmtree(first.data_dir)  # the first machine is gone

    second = _machine(monkeypatch, tmp_path / "machine-b", shared)
    assert get_settings().data_dir != first.data_dir
    uploads = [stage_upload("u1", f, f.name, s=second) for f in speech]
    job_id = submit_training("u1", "Roamer", uploads, consent=True, options=options, s=second)
    job = follow(job_id, timeout=600, s=second)
    assert job.state == "succeeded", job.reason
    assert job.result["epochs"] == options["epochs"]
    assert job.result["resumed_from_epoch"] >= 1  # from the stored checkpoint, not epoch 0
    assert _stored_checkpoints(second) == []  # deleted once the voice was registered


def test_sentences_say_durations_as_people_do():
    from flows.heavy import spoken

    assert [spoken(x) for x in (1, 5, 60, 89, 90, 900, 3600, 5400, 6 * 3600)] == [
        "1 second",
        "5 seconds",
        "60 seconds",
        "89 seconds",
        "2 minutes",
        "15 minutes",
        "60 minutes",
        "2 hours",
        "6 hours",
    ]


def test_stored_checkpoints_replace_each_other_and_fill_an_empty_folder_only(monkeypatch, tmp_path):
    from flows.steps.train import Checkpoints, delete_checkpoints, engine_dir

    settings = _machine(monkeypatch, tmp_path / "data", tmp_path / "shared")

    here = tmp_path / "a" / "u1-Me-0123"
    engine_dir(here).mkdir(parents=True)
    files = {"G_2333333.pth": b"g1", "D_2333333.pth": b"d1", "encore-train.json": b"{}"}
    for name, data in files.items():
        (engine_dir(here) / name).write_bytes(data)
    stored = Checkpoints(settings, "telegram:1", here)
    assert stored.prefix == "tmp/training/telegram_1/u1-Me-0123"
    paths = sorted(engine_dir(here).iterdir())
    stored.upload(paths)
    (engine_dir(here) / "G_2333333.pth").write_bytes(b"g2")  # the next save
    stored.upload(paths)
    versions = [p for p in (tmp_path / "shared" / "files" / stored.prefix).iterdir() if p.is_dir()]
    assert len(versions) == 1  # the older version is gone once the new one is whole

    there = tmp_path / "b" / "u1-Me-0123"  # another machine: the same training, no folder
    elsewhere = Checkpoints(settings, "telegram:1", there)
    assert elsewhere.download()
    got = {p.name: p.read_bytes() for p in engine_dir(there).iterdir()}
    assert got == {**files, "G_2333333.pth": b"g2"}
    assert not elsewhere.download()  # a folder with a checkpoint of its own keeps it

    delete_checkpoints(settings, stored.prefix)
    assert not (tmp_path / "shared" / "files" / "tmp" / "training").exists()
    assert not Checkpoints(settings, "telegram:1", tmp_path / "c" / "u1-Me-0123").download()
