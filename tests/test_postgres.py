"""PostgreSQL: the same migrations and flows as SQLite, on the real server at 127.0.0.1:5432.

Each test session makes its own uniquely named databases and drops them at the end, so runs
never collide. Job rows are raced from threads and from processes: one job per idempotency
key, and a job that ended (finished or cancelled) is never changed again. The thread races
run on SQLite as well, the embedded mode's bot and job threads being just such a race.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import uuid
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.pool import NullPool

from flows import db
from flows.db import Base, Job, migrate
from flows.settings import Settings


@pytest.fixture(scope="session")
def pg_url(pg_databases) -> str:
    """One database shared by this session's tests that need no empty one."""
    return pg_databases()


@pytest.fixture
def fresh_pg_url(pg_databases):
    url = pg_databases()
    yield url
    pg_databases.drop(url)


@pytest.fixture
def pg_settings(settings, fresh_pg_url, monkeypatch):
    """The embedded settings with the database moved to a fresh PostgreSQL database."""
    from flows.settings import get_settings

    monkeypatch.setenv("ENCORE_DATABASE_URL", fresh_pg_url)
    get_settings.cache_clear()
    return get_settings()


def _alembic(url: str) -> Config:
    from pathlib import Path

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _diff(url: str) -> list:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def _schema(url: str) -> tuple[list[str], str | None]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        version = MigrationContext.configure(conn).get_current_revision()
    return tables, version


def test_migrations_on_postgres_match_the_models(fresh_pg_url):
    migrate(fresh_pg_url)
    assert _diff(fresh_pg_url) == []
    tables, version = _schema(fresh_pg_url)
    assert set(Base.metadata.tables) | {"alembic_version"} == set(tables)
    migrate(fresh_pg_url)  # a second upgrade is a no-op
    assert _schema(fresh_pg_url) == (tables, version)
    # Every downgrade runs on PostgreSQL too (batch_alter_table included), and back up again.
    command.downgrade(_alembic(fresh_pg_url), "base")
    assert _schema(fresh_pg_url) == (["alembic_version"], None)
    migrate(fresh_pg_url)
    assert _diff(fresh_pg_url) == []


def test_cover_flow_on_postgres(pg_settings, song_wav, voice_files):
    from flows.catalog import add_song
    from flows.jobs import get_job, reap_interrupted, step_runs
    from flows.storage import open_storage
    from flows.submit import follow, submit_cover, submit_karaoke
    from flows.voices import import_voice
    from gpu_worker.audio import decode

    s = pg_settings
    assert db.engine_for(s.database).dialect.name == "postgresql"
    pth, index = voice_files["bob"]
    voice = import_voice(s, "u1", "bob", [pth, index])
    song = add_song(s, song_wav, title="Server Song", artist="Tester")

    job = follow(submit_cover("u1", song.id, voice.id, {"pitch": -1}, s=s), s=s)
    assert job.state == "succeeded", job.reason
    cover = open_storage(s.storage).fetch(job.result["uri"], s.work_dir)
    source = decode(song_wav, 44100, 2).shape[1]
    assert abs(decode(cover, 44100, 2).shape[1] - source) <= 0.010 * 44100

    kara = follow(submit_karaoke("u1", song.id, {"format": "wav"}, s=s), s=s)
    assert kara.state == "succeeded", kara.reason
    # The stems row (a JSON column) written by the cover serves the karaoke job.
    assert [r.cached for r in step_runs(s, kara.id) if r.step == "separating"] == [True]
    assert [r.detail for r in step_runs(s, job.id) if r.step == "converting"][0]["voice"] == "bob"

    row = get_job(s, job.id)
    assert row.created_at.utcoffset() == timedelta(0)  # aware, in UTC
    assert row.updated_at >= row.created_at
    assert row.result["filename"].endswith("(bob cover, -1).mp3")
    assert reap_interrupted(s, idle_seconds=0) == 0  # nothing open is left to reap
    with db.session(s.database) as conn:
        assert conn.scalar(select(func.count()).select_from(Job)) == 2


def _settings(url: str, tmp_path) -> Settings:
    return Settings(database_url=url, data_dir=tmp_path / "data")


@pytest.fixture(params=["postgresql", "sqlite"])
def race_url(request, tmp_path) -> str:
    """The races run on both backends: row locks on PostgreSQL, the write lock on SQLite."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    return request.getfixturevalue("pg_url")


def _race(n: int, target) -> list:
    """Run `target(i)` in n threads released together; their results, or the first error."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_racing_threads_make_one_job_per_key(race_url, tmp_path):
    from flows.jobs import create_job

    s = _settings(race_url, tmp_path)
    for round_ in range(5):
        key = f"chat:1:msg:{uuid.uuid4().hex}"
        ids = _race(8, lambda i, key=key: create_job(s, "cover", "u1", {"n": i}, key))
        assert len(set(ids)) == 1, (round_, ids)
        with db.session(s.database) as conn:
            count = conn.scalar(select(func.count()).where(Job.idempotency_key == key))
        assert count == 1


def _worker(url: str, data_dir: str, key: str, barrier, out) -> None:
    """A worker process starting up: it brings the database up to date, then takes a job."""
    import alembic.command  # noqa: F401 - imported before the start, so the race is tight
    import psycopg  # noqa: F401

    from flows.jobs import create_job

    s = Settings(database_url=url, data_dir=data_dir)
    barrier.wait(timeout=60)
    try:
        db.engine_for(s.database)  # migrates on first use
        out.put(create_job(s, "cover", "worker", {"pid": os.getpid()}, idempotency_key=key))
    except Exception as exc:  # reported to the test, not lost in a child's stderr
        out.put(f"error: {exc!r}"[:300])


def test_worker_processes_starting_together_migrate_once_and_share_a_key(fresh_pg_url, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    key = f"trending:{uuid.uuid4().hex}"
    procs = [
        ctx.Process(target=_worker, args=(fresh_pg_url, str(tmp_path), key, barrier, out))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    ids = [out.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * n
    assert not [i for i in ids if i.startswith("error")], ids
    assert len(set(ids)) == 1
    assert _diff(fresh_pg_url) == []  # the fresh database was migrated exactly to head
    engine = create_engine(fresh_pg_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM jobs")) == 1
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1


def _snapshot(s: Settings, job_id: str) -> tuple:
    with db.session(s.database) as conn:
        job = conn.get(Job, job_id)
        return job.state, job.step, job.progress, job.reason, job.result, job.updated_at


def test_finish_and_cancel_race_no_lost_update_and_no_reopening(race_url, tmp_path):
    """A job's end is decided once: whoever of finish and cancel comes second sees the
    first's write and backs off; progress reports racing them never reopen the job."""
    from flows.jobs import cancel_job, create_job, get_job, update_job

    s = _settings(race_url, tmp_path)
    outcomes = set()
    for round_ in range(25):
        job_id = create_job(s, "cover", "u1", {})
        update_job(s, job_id, state="running", step="converting", progress=0.5)
        stop = threading.Event()

        def report(job_id=job_id, stop=stop) -> None:
            while not stop.is_set():
                update_job(s, job_id, state="running", step="mixing", progress=random.random())

        reporters = [threading.Thread(target=report) for _ in range(3)]
        for t in reporters:
            t.start()

        def end(i: int, job_id=job_id):
            if i == 0:
                return update_job(
                    s, job_id, state="succeeded", step="done", progress=1.0, result={"uri": "x"}
                )
            return cancel_job(s, job_id)

        _, cancelled = _race(2, end)
        ended = _snapshot(s, job_id)
        for _ in range(20):  # the reporters go on a while after the end
            update_job(s, job_id, state="running", step="mixing", progress=0.1)
        stop.set()
        for t in reporters:
            t.join(30)
        assert _snapshot(s, job_id) == ended, round_  # nothing touched the ended job
        job = get_job(s, job_id)
        if cancelled:
            assert (job.state, job.step, job.reason, job.result) == (
                "cancelled",
                "done",
                "Cancelled.",
                {},
            )
        else:
            assert (job.state, job.step, job.progress, job.result) == (
                "succeeded",
                "done",
                1.0,
                {"uri": "x"},
            )
        assert not cancel_job(s, job_id)
        outcomes.add(job.state)
    assert outcomes <= {"cancelled", "succeeded"}


def test_identical_uploads_at_once_make_one_song_on_postgres(pg_settings, song_wav):
    from tests.test_chat_safety import race_identical_uploads

    race_identical_uploads(pg_settings, song_wav)
