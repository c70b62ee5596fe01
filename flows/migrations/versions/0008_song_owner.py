"""uploaded songs belong to their uploader: one song row per owner and content hash

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 04:30:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# 0001 left the unique constraint on content_hash unnamed; this names it for SQLite's batch
# mode (PostgreSQL named it songs_content_hash_key).
NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_name() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "songs_content_hash_key"
    return "uq_songs_content_hash"


def upgrade() -> None:
    with op.batch_alter_table("songs", naming_convention=NAMES) as batch:
        batch.drop_constraint(_old_name(), type_="unique")
        batch.create_unique_constraint("uq_songs_owner_content_hash", ["owner", "content_hash"])


def downgrade() -> None:
    with op.batch_alter_table("songs", naming_convention=NAMES) as batch:
        batch.drop_constraint("uq_songs_owner_content_hash", type_="unique")
        batch.create_unique_constraint(_old_name(), ["content_hash"])
