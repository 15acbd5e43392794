"""Shards of a run and who claimed them, so several workers can share one run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

A run's work list (every prompt x sample index, in prompt order) is cut into fixed shards of the
job's `shard_size`; the first flow run of a run id records them here, later ones (peers, resumes)
find them. A shard is claimed with a session-level Postgres advisory lock held on its worker's
own connection (tasks/run/claims.py): the lock is the claim, and it dies with the connection, so a
worker killed with SIGKILL frees its shards at once. This table records what the locks cannot:
which shards are done, and who worked on each, how often.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_shards",
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("shard_no", sa.Integer, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False,
                  comment="work items in the shard (the last shard may be short)"),
        sa.Column("first_item", sa.Text, nullable=False,
                  comment="prompt_id/sample_index of the shard's first item: every participant "
                  "must cut the work list the same way"),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("claimed_by", sa.Text, nullable=True,
                  comment="Prefect flow run id of the last claimant (host:pid without one)"),
        sa.Column("claimed_on", sa.Text, nullable=True, comment="host:pid of the last claimant"),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0",
                  comment="how many times the shard was claimed"),
        sa.PrimaryKeyConstraint("run_id", "shard_no", name="pk_run_shards"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_run_shards_run",
                                ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('pending', 'done')", name="ck_run_shards_status"),
        sa.CheckConstraint("samples > 0 AND shard_no >= 0 AND attempts >= 0",
                           name="ck_run_shards_counts"),
        comment="Fixed shards of a run's work list; claims are advisory locks "
                "(tasks/run/claims.py).",
    )


def downgrade() -> None:
    op.drop_table("run_shards")
