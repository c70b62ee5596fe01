"""The janitor and jobs whose run no worker starts, against the session's Prefect server.

A job's run that waits for a worker (SCHEDULED) is queued, not lost, so the janitor leaves it
alone, but only for `job_start_timeout_s`: past that, its run is cancelled in Prefect (it can
never start later) and the job fails with a sentence that costs the user no quota.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from flows.catalog import add_song
from flows.db import Job, now, session
from flows.demo import synth_song
from gpu_worker.audio import write_wav

START_S = 30  # job_start_timeout_s, compressed (the default is 15 minutes)


@pytest.fixture
def unserved(tmp_path, models_dir, monkeypatch):
    """Cluster settings whose deployments go to pools that no worker serves."""
    from flows.deployments import deploy
    from flows.settings import get_settings

    tag = uuid.uuid4().hex[:6]
    values = {
        "ENCORE_RUN_MODE": "cluster",
        "ENCORE_DATA_DIR": str(tmp_path / "data"),
        "ENCORE_MODEL_DIR": str(models_dir),
        "ENCORE_CPU_POOL": f"nobody-cpu-{tag}",
        "ENCORE_GPU_POOL": f"nobody-gpu-{tag}",
        "ENCORE_GPU_COUNT": "1",
        "ENCORE_REAP_AFTER_SECONDS": "5",
        "ENCORE_JOB_START_TIMEOUT_S": str(START_S),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    s = get_settings()
    deploy(s, schedules=False)
    yield s
    get_settings.cache_clear()


def _untouched_for(s, job_id: str, seconds: float) -> None:
    with session(s.database) as db:
        db.get(Job, job_id).updated_at = now() - timedelta(seconds=seconds)


def _run_state(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id)).state.type.value


def test_a_job_no_worker_starts_is_queued_for_a_bound_then_fails_with_a_sentence(
    unserved, tmp_path: Path
):
    from flows.jobs import failed_on_our_side
    from flows.recovery import recover_lost_jobs
    from flows.submit import submit_stems

    s = unserved
    path = write_wav(tmp_path / "song.wav", synth_song(2.0, seed=3), 44100)
    song = add_song(s, path, title="Nobody Plays", artist="Tester")
    job_id = submit_stems("telegram:9", song.id, s=s)
    with session(s.database) as db:
        run_id = db.get(Job, job_id).flow_run_id
    assert _run_state(run_id) == "SCHEDULED"

    _untouched_for(s, job_id, START_S - 10)  # quiet, but still within the bound: queued
    counts = recover_lost_jobs(s)
    assert counts == {"rerun": 0, "failed": 0, "cancelled": 0}
    with session(s.database) as db:
        assert db.get(Job, job_id).state == "queued"
    assert _run_state(run_id) == "SCHEDULED"

    _untouched_for(s, job_id, START_S + 10)  # past the bound: no worker will take it
    assert recover_lost_jobs(s)["failed"] == 1
    with session(s.database) as db:
        job = db.get(Job, job_id)
    assert job.state == "failed"
    assert job.reason == "No worker took the job within 30 seconds; please try again later."
    assert failed_on_our_side(job)
    assert _run_state(run_id) == "CANCELLED"  # a late worker will not run it
    assert job.attempts <= 1 and job.flow_run_id == run_id  # and no new run was started
