"""Alembic environment: runs Encore's migrations against the URL that `flows.db` passes."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from flows.db import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
MIGRATION_LOCK = 0x656E636F7265  # "encore": one advisory lock key for schema changes


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=Base.metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if conn.dialect.name == "postgresql":
                # Workers starting together on a fresh database migrate one at a time; the
                # lock ends with the transaction, and the next one finds the schema current.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


run()
