"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from flows.db import Base, migrate
from flows.db import __file__ as db_file


def _alembic(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_file).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


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
    from sqlalchemy import text

    from flows.db import engine_for
    from flows.jobs import get_job, reply_target
    from flows.settings import Settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = _alembic(url)
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


def test_lookalike_voice_names_get_one_key_and_the_database_refuses_a_third(tmp_path):
    import pytest
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from flows.db import Voice, session
    from flows.names import name_key

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = _alembic(url)
    command.upgrade(cfg, "0009")
    with create_engine(url).begin() as conn:
        # Stored before keys existed: "alice" and a Cyrillic-a "аlice", both bob's.
        for voice_id, name in (("v1", "alice"), ("v2", "\u0430lice")):
            conn.execute(
                text(
                    "INSERT INTO voices (id, owner, name, pth_uri, version, sample_rate, f0,"
                    " public, source, created_at) VALUES (:id, 'telegram:2', :name, 'x', 'v2',"
                    " 40000, 1, 0, 'imported', '2026-01-01')"
                ),
                {"id": voice_id, "name": name},
            )
    command.upgrade(cfg, "head")

    with session(url) as db:
        keys = {v.id: v.name_key for v in db.query(Voice)}
    key = name_key("alice")
    assert keys["v1"] == key and keys["v2"].startswith(key) and keys["v2"] != key
    with pytest.raises(IntegrityError), session(url) as db:  # a fullwidth "Ａlice": refused
        db.add(
            Voice(
                owner="telegram:2", name="\uff21lice", pth_uri="y", version="v2", sample_rate=40000
            )
        )
    with session(url) as db:  # another owner may use the name
        db.add(
            Voice(
                owner="telegram:3", name="\uff21lice", pth_uri="y", version="v2", sample_rate=40000
            )
        )
