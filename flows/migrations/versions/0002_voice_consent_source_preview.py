"""voices: source, consent and preview

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="imported")
        )
        batch.add_column(sa.Column("consent", sa.Text(), nullable=True))
        batch.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("preview_uri", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.drop_column("preview_uri")
        batch.drop_column("consent_at")
        batch.drop_column("consent")
        batch.drop_column("source")
