"""usage ledger: jobs counted against quotas, keyed by a hash of the user that /forget keeps

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("excused", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_usage_ledger_subject", "usage_ledger", ["subject"])
    op.create_index("ix_usage_ledger_job_id", "usage_ledger", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_ledger_job_id", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_subject", table_name="usage_ledger")
    op.drop_table("usage_ledger")
