"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from flows.db import Base, migrate
from flows.db import __file__ as db_file


def test_migrations_match_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    migrate(url)  # idempotent: a second upgrade is a no-op


def test_reply_targets_move_out_of_job_parameters(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from flows.db import engine_for
    from flows.jobs import get_job, reply_target
    from flows.settings import Settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_file).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0004")
    target = {"platform": "discord", "interaction_token": "tok1", "channel_id": "9"}
    with create_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, owner, state, step, progress, params, result,"
                " attempts, created_at, updated_at) VALUES ('j1', 'cover', 'discord:1', 'queued',"
                " 'queued', 0, :params, '{}', 1, '2026-01-01', '2026-01-01')"
            ),
            {"params": json.dumps({"song_id": "s1", "reply_to": target})},
        )
    engine_for(url)  # brings it to the newest schema
    s = Settings(database_url=url, data_dir=tmp_path)
    assert get_job(s, "j1").params == {"song_id": "s1"}
    assert reply_target(s, "j1") == target
