"""delivery leases: who holds a delivery and until when, when to retry, when to give up

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("holder", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("give_up_at", sa.DateTime(timezone=True), nullable=True))
    # A claim made before leases existed has no holder to renew it: the sweeper takes it over.
    op.execute("UPDATE deliveries SET lease_until = updated_at WHERE state = 'sending'")


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("give_up_at")
        batch.drop_column("next_at")
        batch.drop_column("lease_until")
        batch.drop_column("holder")
