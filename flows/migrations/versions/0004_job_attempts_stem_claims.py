"""job attempts (a cluster re-runs a job whose worker died) and who claimed a stems row

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("stem_sets", sa.Column("job_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stem_sets") as batch:
        batch.drop_column("job_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attempts")
