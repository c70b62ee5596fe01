"""Encore as a cluster, all real: the session's Prefect server, `prefect worker start` process
workers for the cpu and gpu pools, PostgreSQL, S3 (moto's HTTP server) and the fake Telegram.

A cover submitted through the submission API runs as the `make-cover` deployment on the cpu
worker; its heavy step runs as the `sing-vocal` deployment on the gpu worker; the cover lands
in S3 and the flow posts it to the chat. Killing the cpu worker mid-job makes the janitor run
the job again, and the chat still gets the cover once. `encore serve` runs the whole thing,
bots included, from one command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote
from uuid import UUID

import pytest

from flows.catalog import add_song
from flows.db import Delivery, Job, session
from flows.demo import synth_song
from flows.voices import import_voice
from gpu_worker.audio import decode, measure_loudness, write_wav
from tests.conftest import S3_REGION, descendants, s3_client
from tests.fake_telegram import FakeTelegram
from tests.privacy import assert_parameters_name_nobody
from tests.tiny_rvc import TINY_TRAIN_CONFIG

SR = 44100
CHAT = 4242
OWNER = f"telegram:{CHAT}"
REAP_S = 12  # a job untouched this long has lost its worker (the default is 10 minutes)


class Worker:
    """`prefect worker start` for one pool, in its own process group (so it can be killed with
    the flow runs it started, as when its machine dies)."""

    def __init__(self, pool: str, env: dict, log: Path):
        self.pool, self.env, self.log = pool, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        prefect = Path(sys.executable).with_name("prefect")
        out = open(self.log, "a")  # noqa: SIM115 - lives with the worker
        self.process = subprocess.Popen(
            [str(prefect), "worker", "start", "--pool", self.pool, "--type", "process"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and every process under it (flow runs get sessions of their own)."""
        if self.process is not None and self.process.poll() is None:
            for pid in [self.process.pid, *descendants(self.process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def fake():
    server = FakeTelegram().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, models_dir, pg_databases, moto_endpoint, fake):
    """Cluster settings (PostgreSQL, S3, run mode "cluster"), deployments, and two workers."""
    from flows.deployments import deploy
    from flows.settings import get_settings

    root = tmp_path_factory.mktemp("cluster")
    bucket = f"encore-cluster-{uuid.uuid4().hex[:10]}"
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
        "ENCORE_REAP_AFTER_SECONDS": str(REAP_S),
        "ENCORE_TELEGRAM_TOKEN": fake.token,
        "ENCORE_TELEGRAM_API_URL": fake.api_url,
        "ENCORE_TELEGRAM_FILE_URL": fake.file_url,
        "ENCORE_STATUS_EDIT_INTERVAL_S": "0.2",
        "ENCORE_TRAIN_CONFIG": json.dumps(TINY_TRAIN_CONFIG),  # the tiny model's shapes
        "ENCORE_TRAIN_MIN_SECONDS": "3",
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
        "gpu": Worker(s.gpu_pool, env, root / "gpu-worker.log").start(),
    }
    try:
        yield s, workers, bucket, moto_endpoint
    finally:
        for worker in workers.values():
            worker.stop()
        for log in sorted(root.glob("*.log")):  # what the workers said, for a failing test
            sys.stderr.write(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}\n")
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def alice(cluster, voice_files):
    s = cluster[0]
    pth, index = voice_files["alice"]
    return import_voice(s, OWNER, "alice", [pth, index])


def _song(s, tmp_path: Path, seed: int, title: str):
    path = write_wav(tmp_path / f"{title}.wav", synth_song(4.0, seed=seed), SR)
    return add_song(s, path, title=title, artist="Tester"), path


def _reply_to(title: str) -> dict:
    return {"platform": "telegram", "chat_id": CHAT, "user": "Ada", "headline": f"🎤 {title}"}


def _job(s, job_id: str) -> Job:
    with session(s.database) as db:
        return db.get(Job, job_id)


def _deliveries(s, job_id: str) -> int:
    with session(s.database) as db:
        return db.query(Delivery).filter(Delivery.job_id == job_id).count()


def _delivered(s, job_id: str) -> bool:
    """The delivery ledger says the job's outcome was sent: it is never sent again."""
    with session(s.database) as db:
        row = db.get(Delivery, job_id)
        return row is not None and row.state == "sent"


def _audio_for(fake, title: str) -> list:
    return [c for c in fake.calls_of("sendAudio") if c.params.get("title", "").startswith(title)]


def _runs_of(job_id: str, flow_name: str) -> list:
    """Prefect's flow runs of one job's flow, as the UI lists them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    prefix = {
        "make-cover": "cover",
        "sing-vocal": "sing",
        "train-voice": "train",
        "train-model": "train-model",
        "render-preview": "preview",
    }[flow_name]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{prefix}-{job_id}"]))
        )
    return runs


def test_a_cover_runs_on_the_workers_lands_in_s3_and_reaches_the_chat_once(
    cluster, alice, fake, tmp_path
):
    from flows.submit import submit_cover

    s, _workers, bucket, endpoint = cluster
    song, source = _song(s, tmp_path, seed=5, title="Cluster Song")
    job_id = submit_cover(
        OWNER, song.id, alice.id, idempotency_key="cmd-1", s=s, reply_to=_reply_to("Cluster")
    )
    assert _job(s, job_id).state == "queued"  # submitted, not run here
    again = submit_cover(
        OWNER, song.id, alice.id, idempotency_key="cmd-1", s=s, reply_to=_reply_to("Cluster")
    )
    assert again == job_id  # the same command twice is one job

    [call] = fake.wait_for(lambda: _audio_for(fake, "Cluster Song"), 300, "the cover")
    filename, data = call.files["audio"]
    cover = tmp_path / filename
    cover.write_bytes(data)
    assert abs(decode(cover, SR, 2).shape[1] - decode(source, SR, 2).shape[1]) <= 0.010 * SR
    loud = measure_loudness(cover)
    assert abs(loud.integrated_lufs - s.loudness_lufs) <= 0.5
    assert loud.true_peak_dbtp <= s.true_peak_dbtp

    fake.wait_for(lambda: _deliveries(s, job_id) == 1, 30, "the delivery record")
    job = _job(s, job_id)
    assert job.state == "succeeded" and job.attempts == 1
    # The stored cover is in S3, byte for byte what the chat got.
    assert job.result["uri"].startswith(f"s3://{bucket}/files/covers/{job_id}/")
    key = unquote(job.result["uri"].split(f"s3://{bucket}/", 1)[1])
    stored = s3_client(endpoint).get_object(Bucket=bucket, Key=key)
    assert stored["Body"].read() == data
    # Prefect ran one parent on the cpu pool and its heavy step on the gpu pool.
    [parent] = _runs_of(job_id, "make-cover")
    [heavy] = _runs_of(job_id, "sing-vocal")
    assert parent.state.is_completed() and heavy.state.is_completed()
    assert parent.work_pool_name == s.cpu_pool and heavy.work_pool_name == s.gpu_pool
    assert str(parent.id) == job.flow_run_id
    # What run_deployment sent, as the server keeps it: ids and options, no chat, no name.
    assert_parameters_name_nobody(job, "Ada", "Cluster")
    # Nothing of the job is left in temporary storage.
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=f"files/tmp/jobs/{job_id}")
    assert listed.get("KeyCount", 0) == 0
    # The parent run (the one sender) completed and the ledger says sent: nothing more comes.
    fake.wait_for(lambda: _delivered(s, job_id), 30, "the delivery to be recorded as sent")
    assert len(_audio_for(fake, "Cluster Song")) == 1


def test_a_job_whose_worker_dies_runs_again_and_is_delivered_once(cluster, alice, fake, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from flows.submit import submit_cover

    s, workers, _bucket, _endpoint = cluster
    song, source = _song(s, tmp_path, seed=9, title="Phoenix Song")
    job_id = submit_cover(OWNER, song.id, alice.id, s=s, reply_to=_reply_to("Phoenix"))

    def in_heavy_step():
        job = _job(s, job_id)
        return job.step in ("separating", "converting") and job.state == "running"

    fake.wait_for(in_heavy_step, 240, "the job to reach its heavy step")
    first_run = _job(s, job_id).flow_run_id
    workers["cpu"].kill()  # the worker and the parent flow's process, as if the machine died
    workers["cpu"].start()

    def stale():
        job = _job(s, job_id)
        age = time.time() - job.updated_at.timestamp()
        return job.state in ("queued", "running") and age > REAP_S + 1

    fake.wait_for(stale, 240, "the lost job's row to go quiet")
    assert not _audio_for(fake, "Phoenix Song")
    janitor = run_deployment("recover-jobs/encore", timeout=240, poll_interval=1)
    assert janitor.state.is_completed(), janitor.state

    [call] = fake.wait_for(lambda: _audio_for(fake, "Phoenix Song"), 300, "the rerun's cover")
    filename, data = call.files["audio"]
    cover = tmp_path / filename
    cover.write_bytes(data)
    assert abs(decode(cover, SR, 2).shape[1] - decode(source, SR, 2).shape[1]) <= 0.010 * SR
    fake.wait_for(lambda: _deliveries(s, job_id) == 1, 30, "the delivery record")
    job = _job(s, job_id)
    assert job.state == "succeeded" and job.attempts == 2
    assert job.flow_run_id != first_run
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(first_run)).state.type.value == "CRASHED"
    # Every run of the job has ended and the ledger says sent: nothing more can come.
    fake.wait_for(
        lambda: all(r.state.is_final() for r in _runs_of(job_id, "make-cover")),
        60,
        "the job's runs to end",
    )
    fake.wait_for(lambda: _delivered(s, job_id), 30, "the delivery to be recorded as sent")
    assert len(_audio_for(fake, "Phoenix Song")) == 1


def test_training_runs_its_heavy_steps_on_the_gpu_pool_and_posts_the_preview(
    cluster, fake, speech, tmp_path
):
    from flows.db import Voice
    from flows.storage import open_storage
    from flows.submit import stage_upload, submit_training

    s, _workers, bucket, endpoint = cluster
    owner = "telegram:5151"
    uploads = [stage_upload(owner, f, f.name, s=s) for f in speech]
    reply_to = {"platform": "telegram", "chat_id": 5151, "user": "Bo", "headline": "🎙 Bo"}
    options = {"epochs": 2, "batch_size": 2, "save_every": 1}
    job_id = submit_training(
        owner, "Bo", uploads, consent=True, options=options, s=s, reply_to=reply_to
    )

    def preview():
        return [c for c in fake.calls_of("sendAudio") if c.params.get("chat_id") == "5151"]

    [call] = fake.wait_for(preview, 420, "the new voice's preview")
    filename, data = call.files["audio"]
    assert "preview" in filename and len(data) > 1000
    fake.wait_for(lambda: _deliveries(s, job_id) == 1, 30, "the delivery record")
    job = _job(s, job_id)
    assert job.state == "succeeded", job.reason
    assert job.result["epochs"] == 2
    with session(s.database) as db:
        voice = db.get(Voice, job.result["voice_id"])
    assert voice.pth_uri.startswith(f"s3://{bucket}/files/voices/")
    storage = open_storage(s.storage)
    assert storage.exists(voice.pth_uri) and storage.exists(voice.index_uri)
    for flow_name, pool in (("train-voice", s.cpu_pool), ("train-model", s.gpu_pool),
                            ("render-preview", s.gpu_pool)):  # fmt: skip
        # The parent's run ends after the delivery (it cleans up first): wait for its end.
        [run] = fake.wait_for(
            lambda name=flow_name: [r for r in _runs_of(job_id, name) if r.state.is_final()],
            60,
            f"the {flow_name} run to end",
        )
        assert run.state.is_completed() and run.work_pool_name == pool, flow_name
    # The uploads, the trained files' hand-off and the job's scratch space are gone from S3.
    for prefix in ("files/tmp/uploads/telegram_5151", f"files/tmp/jobs/{job_id}"):
        assert s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
