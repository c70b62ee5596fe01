"""reply targets out of job parameters, and deletions still to do

A job's reply target (chat ids, message ids, a Discord interaction token) moves from
`jobs.params["reply_to"]` to its own table, which never goes to Prefect. Deletions that
failed wait in `pending_deletions` for the sweeper.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_targets",
        sa.Column(
            "job_id",
            sa.String(length=32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pending_deletions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("batch", sa.String(length=32), nullable=True),
        sa.Column("notify", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Existing jobs: their reply targets move out of the parameters.
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("params", sa.JSON))
    targets = sa.table(
        "reply_targets",
        sa.column("job_id", sa.String),
        sa.column("target", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    moment = sa.func.now()
    for job_id, params in conn.execute(sa.select(jobs.c.id, jobs.c.params)).all():
        if not isinstance(params, dict) or "reply_to" not in params:
            continue
        target = params.pop("reply_to")
        if isinstance(target, dict):
            conn.execute(sa.insert(targets).values(job_id=job_id, target=target, created_at=moment))
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(params=params))


def downgrade() -> None:
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("params", sa.JSON))
    targets = sa.table(
        "reply_targets", sa.column("job_id", sa.String), sa.column("target", sa.JSON)
    )
    conn = op.get_bind()
    query = sa.select(jobs.c.id, jobs.c.params, targets.c.target).join(
        targets, targets.c.job_id == jobs.c.id
    )
    for job_id, params, target in conn.execute(query).all():
        params = {**(params or {}), "reply_to": target}
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(params=params))
    op.drop_table("pending_deletions")
    op.drop_table("reply_targets")
