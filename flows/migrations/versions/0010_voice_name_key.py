"""voice name keys: lookalike names are one name, held by a unique constraint per owner

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

from flows.names import name_key

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.add_column(sa.Column("name_key", sa.String(length=200), nullable=True))
    bind = op.get_bind()
    voices = sa.table(
        "voices", sa.column("id"), sa.column("owner"), sa.column("name"), sa.column("name_key")
    )
    taken: set[tuple[str, str]] = set()
    rows = bind.execute(sa.select(voices.c.id, voices.c.owner, voices.c.name).order_by("id"))
    for voice_id, owner, name in list(rows):
        key = name_key(name)
        if (owner, key) in taken:
            # Two lookalike names stored before keys existed: the later keeps its own key, so
            # both stay usable by their exact spelling and no new lookalike can be added.
            key = f"{key}\x1f{voice_id}"
        taken.add((owner, key))
        bind.execute(voices.update().where(voices.c.id == voice_id).values(name_key=key))
    with op.batch_alter_table("voices") as batch:
        batch.alter_column("name_key", existing_type=sa.String(length=200), nullable=False)
        batch.create_unique_constraint("uq_voices_owner_name_key", ["owner", "name_key"])
        batch.create_index("ix_voices_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.drop_index("ix_voices_name_key")
        batch.drop_constraint("uq_voices_owner_name_key", type_="unique")
        batch.drop_column("name_key")
