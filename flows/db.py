"""The database: tables for songs, voices, stems, jobs and their steps, and sessions on them.

The schema is owned by the Alembic migrations in `flows/migrations`; `connect` brings a database
up to date before first use. SQLite embedded, PostgreSQL in production: the same code.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from flows.names import name_key


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Song(Base):
    """A song in the catalog (owner None) or one a user sent (theirs alone): one row per
    owner and content hash. Stems are cached by content hash, so identical files share them."""

    __tablename__ = "songs"
    __table_args__ = (
        UniqueConstraint("owner", "content_hash", name="uq_songs_owner_content_hash"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(300))
    artist: Mapped[str] = mapped_column(String(300), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(Text)
    duration: Mapped[float] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None: catalog
    # The link it was fetched from (`flows.links`); None for a file added or sent.
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Voice(Base):
    """An RVC voice model owned by one user."""

    __tablename__ = "voices"
    __table_args__ = (
        UniqueConstraint("owner", "name"),
        UniqueConstraint("owner", "name_key", name="uq_voices_owner_name_key"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    # `flows.names.name_key(name)`, kept by `_keep_name_key`: lookalike names are one name.
    name_key: Mapped[str] = mapped_column(String(200), index=True)
    pth_uri: Mapped[str] = mapped_column(Text)
    index_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[str] = mapped_column(String(8))
    sample_rate: Mapped[int] = mapped_column(Integer)
    f0: Mapped[bool] = mapped_column(default=True)
    public: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(16), default="imported")  # imported|trained
    consent: Mapped[str | None] = mapped_column(Text, nullable=True)  # what the owner affirmed
    consent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    preview_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


@event.listens_for(Voice.name, "set", retval=False)
def _keep_name_key(voice: Voice, value: str, _old, _initiator) -> None:
    voice.name_key = name_key(value)


class StemSet(Base):
    """Separated stems of one song content by one model: computed once, reused."""

    __tablename__ = "stem_sets"
    __table_args__ = (UniqueConstraint("content_hash", "model"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    content_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="computing")  # computing|ready
    stems: Mapped[dict] = mapped_column(JSON, default=dict)  # stem name -> URI
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # who computes
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Job(Base):
    """One user-visible piece of work; it always ends in succeeded, failed or cancelled."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    step: Mapped[str] = mapped_column(String(32), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The process running it in-process (embedded mode; `flows.jobs.this_runner`), or
    # "released" when that process shut down and left it for the next one to resume.
    runner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class StepRun(Base):
    """What one step of a job did: how long it took and whether a cache served it."""

    __tablename__ = "step_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(32))
    cached: Mapped[bool] = mapped_column(default=False)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


# Chat users and what the bots keep for them (see `flows.users` and `flows.chat`).


class User(Base):
    """A chat user ("telegram:<id>"): their default voice and preferences."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    default_voice_id: Mapped[str | None] = mapped_column(
        ForeignKey("voices.id", ondelete="SET NULL"), nullable=True
    )
    prefs: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class UploadSession(Base):
    """Files a user is sending for one voice: samples to train on, or a model to import."""

    __tablename__ = "upload_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # train|import
    name: Mapped[str] = mapped_column(String(100))
    # open (collecting) | submitting | submitted (to job_id) | cancelled
    state: Mapped[str] = mapped_column(String(16), default="open")
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class UploadFile(Base):
    """One file of an upload session, staged in storage until its job takes it."""

    __tablename__ = "upload_files"
    __table_args__ = (UniqueConstraint("session_id", "source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("upload_sessions.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(200))  # the chat message it came from
    uri: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    voiced_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ChatSubscription(Base):
    """A chat that asked for scheduled posts (`kind` "trending": the chart drops)."""

    __tablename__ = "chat_subscriptions"
    __table_args__ = (UniqueConstraint("platform", "chat_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    voice_id: Mapped[str | None] = mapped_column(
        ForeignKey("voices.id", ondelete="SET NULL"), nullable=True
    )
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Delivery(Base):
    """The delivery of a job's outcome to its chat: who holds it, what was sent, what is next."""

    __tablename__ = "deliveries"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # sending (held by `holder` until `lease_until`) | waiting (until `next_at`) | sent |
    # failed (refused for good) | gave_up (still refused at `give_up_at`); see flows.chat.ledger
    state: Mapped[str] = mapped_column(String(16), default="sending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)  # the parts sent, the last error
    holder: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    give_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Usage(Base):
    """One job a user (or the trending drops) started, counted against their quotas.

    Keyed by an HMAC of the user id (`flows.users.subject`), it names nobody, so `/forget`
    keeps it and cannot reset the counters; rows older than two days are swept away. While
    the job exists its row says whether it counts (`flows.users`); `/forget` copies that
    into `excused` and drops the link.
    """

    __tablename__ = "usage_ledger"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    excused: Mapped[str | None] = mapped_column(String(16), nullable=True)  # ours|cancelled
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ReplyTarget(Base):
    """Where a job reports to: the chat, its status message, a Discord interaction token.

    Kept apart from the job's parameters, which go to Prefect as run parameters: these
    never leave the database, and `/forget` deletes them with the job.
    """

    __tablename__ = "reply_targets"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    target: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class PendingDeletion(Base):
    """A stored file (`kind` "uri") or prefix ("prefix") that must go but could not be
    deleted yet; a sweeper retries it until it is gone (`flows.erase`)."""

    __tablename__ = "pending_deletions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # uri|prefix
    target: Mapped[str] = mapped_column(Text)
    batch: Mapped[str | None] = mapped_column(String(32), nullable=True)  # one /forget
    notify: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # who to tell when done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


TERMINAL = ("succeeded", "failed", "cancelled")


def untouched_s(job: Job) -> float:
    """Seconds since anything touched the job's row."""
    touched = job.updated_at
    if touched.tzinfo is None:  # SQLite hands back naive UTC
        touched = touched.replace(tzinfo=UTC)
    return (now() - touched).total_seconds()


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_lock_for_update(conn, cursor, _statement, _params, context, _many) -> None:
    """SQLite has no `SELECT ... FOR UPDATE`: a read meant to lock the row takes the database's
    write lock instead (`BEGIN IMMEDIATE`, until the transaction ends), so a read-modify-write
    such as `update_job` or `cancel_job` cannot lose another thread's write in between."""
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    if getattr(statement, "_for_update_arg", None) is None:
        return
    if not conn.connection.dbapi_connection.in_transaction:
        cursor.execute("BEGIN IMMEDIATE")


def _postgres_utc(dbapi_conn, _record) -> None:
    """Timestamps come back in UTC, as they were written (SQLite gives them back naive)."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    dbapi_conn.commit()  # a rolled-back SET would be undone when the pool resets the connection


def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema with Alembic."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def engine_for(url: str) -> Engine:
    """One engine per URL per process, migrated on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            migrate(url)
            # A bot runs many short transactions at once (commands, job watchers, couriers);
            # SQLite connections are cheap, so a larger pool keeps them from queueing.
            pool = {"pool_size": 8, "max_overflow": 56} if url.startswith("sqlite") else {}
            engine = create_engine(url, pool_pre_ping=True, **pool)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _sqlite_pragmas)
                event.listen(engine, "before_cursor_execute", _sqlite_lock_for_update)
            elif engine.dialect.name == "postgresql":
                event.listen(engine, "connect", _postgres_utc)
            _engines[url] = engine
        return engine


@contextmanager
def session(url: str) -> Iterator[Session]:
    """A transaction: committed when the block ends, rolled back on an error."""
    maker = sessionmaker(engine_for(url), expire_on_commit=False)
    with maker() as s, s.begin():
        yield s
