"""Warm heavy steps, all real: the session's Prefect server, `prefect worker start` process
workers, and a warm host (`python -m flows.warm host`) that runs the GPU pool's flow runs in
its own process, one after another.

- Two covers go through the host: both heavy runs are Prefect flow runs that completed, the
  first loads the models (Demucs, HuBERT, the pitch model, the voice and its index) and the
  second loads none, since they stayed resident; the host is the same process throughout.
- A heavy step that hangs on the host is stopped by its timeout, its job fails with a
  sentence, and the host goes on: the next job runs on it, still warm.
- A user's cancel stops a step running on the host, and the host goes on.
- A host with no run for `ENCORE_WARM_IDLE_EXIT_S` exits (scale to zero) and leaves nothing
  behind that would make a run wait for it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows.catalog import add_song
from flows.db import Job, StemSet, StepRun, session
from flows.demo import synth_song
from gpu_worker.audio import write_wav
from tests.test_cluster import Worker

SR = 44100
OWNER = "telegram:555"
STEP_S = 40  # step_timeout_s, compressed (the default is 30 minutes; a cover fits)


@pytest.fixture(scope="module")
def warm(tmp_path_factory, models_dir):
    """Cluster settings (SQLite and files on one machine), deployments whose GPU runs go to a
    warm host, a cpu and a gpu worker, and the host."""
    from flows.deployments import PRELOAD, deploy
    from flows.settings import get_settings

    root = tmp_path_factory.mktemp("warm")
    tag = uuid.uuid4().hex[:6]
    values = {
        "ENCORE_RUN_MODE": "cluster",
        "ENCORE_DATA_DIR": str(root / "data"),
        "ENCORE_MODEL_DIR": str(models_dir),
        "ENCORE_DEVICE": "cpu",
        "ENCORE_F0_METHOD": "pm",
        "ENCORE_CPU_POOL": f"cpu-{tag}",
        "ENCORE_GPU_POOL": f"gpu-{tag}",
        "ENCORE_GPU_COUNT": "1",
        "ENCORE_STEP_TIMEOUT_S": str(STEP_S),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    patch = pytest.MonkeyPatch()
    for key, value in values.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    s = get_settings()
    sock = str(Path("/tmp") / f"encore-test-{tag}.sock")
    command = shlex.join([sys.executable, "-m", "flows.warm", "run", sock])
    deploy(s, schedules=False, commands={"gpu": command})
    env = {**os.environ}
    host_log = root / "host.log"
    with open(host_log, "a") as out:
        host = subprocess.Popen(
            [sys.executable, "-m", "flows.warm", "host", sock, *PRELOAD["gpu"]],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers = [
        Worker(s.cpu_pool, env, root / "cpu-worker.log").start(),
        Worker(s.gpu_pool, env, root / "gpu-worker.log").start(),
    ]
    try:
        deadline = time.monotonic() + 120
        while "ready at" not in host_log.read_text():
            assert host.poll() is None, host_log.read_text()
            assert time.monotonic() < deadline, "the warm host did not start"
            time.sleep(0.2)
        yield s, host, host_log
    finally:
        for worker in workers:
            worker.stop()
        host.terminate()
        host.wait(20)
        for log in sorted(root.glob("*.log")):
            sys.stderr.write(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}\n")
        patch.undo()
        get_settings.cache_clear()


def _song(s, tmp_path: Path, seed: int, title: str):
    path = write_wav(tmp_path / f"{title}.wav", synth_song(4.0, seed=seed), SR)
    return add_song(s, path, title=title, artist="Tester")


def _ended(s, job_id: str, within: float) -> Job:
    deadline = time.monotonic() + within
    while True:
        with session(s.database) as db:
            job = db.get(Job, job_id)
        if job.state in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} ({job.step})"
        time.sleep(0.3)


def _loaded(s, job_id: str) -> dict[str, int]:
    with session(s.database) as db:
        rows = list(db.query(StepRun).filter(StepRun.job_id == job_id))
    return {r.step: r.detail.get("models_loaded") for r in rows}


def _heavy_runs(names: list[str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        named = FlowRunFilter(name=FlowRunFilterName(any_=names))
        return client.read_flow_runs(flow_run_filter=named)


def test_the_second_cover_on_a_warm_host_loads_no_model(warm, tmp_path):
    from flows.submit import submit_cover
    from flows.voices import import_voice
    from tests.tiny_rvc import build_index, build_voice

    s, host, host_log = warm
    folder = tmp_path / "voice"
    folder.mkdir()
    files = [build_voice(folder / "w.pth", seed=5, name="w"), build_index(folder, "w", 5)]
    voice = import_voice(s, OWNER, "warmvoice", files)
    jobs = []
    for i in range(2):
        song = _song(s, tmp_path, seed=40 + i, title=f"Warm {i}")
        job_id = submit_cover(OWNER, song.id, voice.id, s=s)
        job = _ended(s, job_id, 180)
        assert job.state == "succeeded", job.reason
        jobs.append(job_id)
    first, second = (_loaded(s, job_id) for job_id in jobs)
    # Separation loads Demucs; conversion HuBERT, the pitch model, the voice and its index.
    assert first["separating"] >= 1 and first["converting"] >= 3, first
    assert second["separating"] == 0 and second["converting"] == 0, second
    runs = _heavy_runs([f"sing-{job_id}" for job_id in jobs])
    assert sorted(r.state.type.value for r in runs) == ["COMPLETED", "COMPLETED"]
    assert host.poll() is None  # one process ran both
    assert "run 2 ended (0)" in host_log.read_text()


def _last_end(host_log) -> str:
    ended = [line for line in host_log.read_text().splitlines() if " ended (" in line]
    return ended[-1] if ended else ""


def test_a_hung_step_on_a_warm_host_is_stopped_by_its_timeout_and_the_host_goes_on(warm, tmp_path):
    from flows.steps.separate import options
    from flows.submit import submit_stems

    s, host, host_log = warm
    song = _song(s, tmp_path, seed=43, title="Never Ends Warm")
    # Another run claims the song's stems and never finishes: the step waits for it.
    with session(s.database) as db:
        db.add(StemSet(content_hash=song.content_hash, model=options(s).model, job_id="other"))
    began = time.monotonic()
    job_id = submit_stems(OWNER, song.id, s=s)
    job = _ended(s, job_id, STEP_S + 90)
    assert job.state == "failed"
    assert job.reason == (
        f"Separating the song took longer than {STEP_S} seconds and was stopped; "
        "please try again later."
    )
    assert time.monotonic() - began < STEP_S + 75
    [step] = _heavy_runs([f"separate-{job_id}"])
    assert step.state.type.value == "FAILED" and step.state.name == "TimedOut"

    # The host stops the step (its run ends with an error) and goes on: the next job runs on
    # it. (Wait for the host to say so: a job sent while it still cleans up runs cold.)
    deadline = time.monotonic() + 60
    while " ended (1)" not in _last_end(host_log):
        assert time.monotonic() < deadline, host_log.read_text()[-2000:]
        time.sleep(0.2)
    other = _song(s, tmp_path, seed=44, title="Ends Warm")
    next_id = submit_stems(OWNER, other.id, s=s)
    job = _ended(s, next_id, 120)
    assert job.state == "succeeded", job.reason
    assert host.poll() is None  # the same process: it stopped the step and went on
    # (the host logs a run's end after handing back its result: wait for the line)
    deadline = time.monotonic() + 30
    while " ended (0)" not in _last_end(host_log):
        assert time.monotonic() < deadline, host_log.read_text()[-2000:]
        time.sleep(0.2)
    ended = [line for line in host_log.read_text().splitlines() if " ended (" in line]
    assert "ended (1)" in ended[-2] and "ended (0)" in ended[-1], ended


def test_a_cancelled_step_on_a_warm_host_stops_and_the_host_goes_on(warm, tmp_path):
    from flows.jobs import cancel_job
    from flows.steps.separate import options
    from flows.submit import submit_stems

    s, host, host_log = warm
    song = _song(s, tmp_path, seed=45, title="Cancel Me Warm")
    with session(s.database) as db:  # the step waits on another run's claim until cancelled
        db.add(StemSet(content_hash=song.content_hash, model=options(s).model, job_id="other"))
    job_id = submit_stems(OWNER, song.id, s=s)
    deadline = time.monotonic() + 120
    while not [r for r in _heavy_runs([f"separate-{job_id}"]) if r.state.type.value == "RUNNING"]:
        assert time.monotonic() < deadline, "the step did not start on the host"
        time.sleep(0.3)
    ended_before = host_log.read_text().count(" ended (")
    assert cancel_job(s, job_id)
    began = time.monotonic()
    job = _ended(s, job_id, 60)
    assert job.state == "cancelled"
    deadline = time.monotonic() + 60
    while True:  # the step's run ends too, well before its timeout
        [step] = _heavy_runs([f"separate-{job_id}"])
        if step.state.is_final():
            break
        assert time.monotonic() < deadline, f"the step is still {step.state.type.value}"
        time.sleep(0.3)
    assert time.monotonic() - began < STEP_S
    deadline = time.monotonic() + 30
    while host_log.read_text().count(" ended (") == ended_before:
        assert time.monotonic() < deadline, "the host did not end the run"
        time.sleep(0.2)
    assert host.poll() is None  # the host goes on


def test_an_idle_host_exits_and_runs_go_cold_without_it(tmp_path):
    """Scale to zero: a host with no run for `ENCORE_WARM_IDLE_EXIT_S` exits and leaves no
    socket behind, so the next run's client starts the engine itself at once."""
    from flows import warm

    sock = str(Path("/tmp") / f"encore-idle-{uuid.uuid4().hex[:6]}.sock")
    env = {**os.environ, "ENCORE_WARM_IDLE_EXIT_S": "2", "ENCORE_DATA_DIR": str(tmp_path)}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flows.warm", "host", sock],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "idle for 2 s; exiting" in done.stderr
    assert time.monotonic() - began >= 2
    assert not Path(sock).exists() and not Path(sock + ".lock").exists()
    assert warm._connect([sock]) is None  # no host: the client goes cold, without waiting


def test_serve_starts_one_warm_host_per_gpu(monkeypatch, settings):
    """Each host sees one GPU; one host where there is a single GPU or none."""
    from flows.serve import _devices

    settings = settings.model_copy(update={"gpu_count": None})  # (not the module's warm host's)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _devices(settings) == ["2", "3"]
    assert _devices(settings.model_copy(update={"gpu_count": 1})) == [None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _devices(settings) == [None]
