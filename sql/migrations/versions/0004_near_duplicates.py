"""MinHash signatures for near-duplicate removal.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

One row per sample that near-duplicate removal kept (tasks/quality/dedup.py), so later runs can be
checked against it without re-reading or re-hashing its text. A signature is only comparable with
another made the same way, so the way is part of the key: which text (`field`), the word n-gram
size (`shingle`), the number of permutations and the hashing scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sample_signatures",
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("field", sa.Text, nullable=False,
                  comment="which text was hashed: solution (the last solve stage) or problem"),
        sa.Column("shingle", sa.Integer, nullable=False, comment="word n-gram size"),
        sa.Column("num_perm", sa.Integer, nullable=False),
        sa.Column("scheme", sa.Text, nullable=False,
                  comment="how the signature was made (permutation scheme, seed, shingle hash, "
                  "normalisation): only signatures with the same scheme are compared"),
        sa.Column("hashvalues", sa.LargeBinary, nullable=False,
                  comment="num_perm unsigned 32-bit hash values, little-endian"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("run_id", "prompt_id", "sample_index", "field", "shingle",
                                "num_perm", "scheme", name="pk_sample_signatures"),
        sa.ForeignKeyConstraint(
            ["run_id", "prompt_id", "sample_index"],
            ["samples.run_id", "samples.prompt_id", "samples.sample_index"],
            name="fk_sample_signatures_sample", ondelete="CASCADE"),
        sa.CheckConstraint("field IN ('solution', 'problem')", name="ck_sample_signatures_field"),
        sa.CheckConstraint("octet_length(hashvalues) = 4 * num_perm",
                           name="ck_sample_signatures_length"),
        comment="MinHash signatures of samples kept by near-duplicate removal.",
    )


def downgrade() -> None:
    op.drop_table("sample_signatures")
