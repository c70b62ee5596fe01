"""songs fetched from a link remember it: the cache by link, and the mark "fetched"

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 08:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.add_column(sa.Column("source_url", sa.Text(), nullable=True))
    op.create_index("ix_songs_source_url", "songs", ["source_url"])


def downgrade() -> None:
    op.drop_index("ix_songs_source_url", table_name="songs")
    with op.batch_alter_table("songs") as batch:
        batch.drop_column("source_url")
