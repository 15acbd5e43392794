"""Quality-gate results per run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

One row per gate check of a run (tasks/quality/gate.py): a re-checked run gets another row, the
newest by checked_at is current. `result` is the whole GateResult as JSON: every expectation's
outcome, what it observed and the SQL that shows its failing rows. (run_id, checked_at) is unique
so a retried save of the same result stays one row; that index also serves lookups by run_id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quality_gate_results",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("result", JSONB, nullable=False,
                  comment="the GateResult: outcomes with observed, unexpected_count and "
                  "failing_rows_sql"),
        sa.UniqueConstraint("run_id", "checked_at", name="uq_quality_gate_results_run_checked"),
        comment="Quality-gate checks of runs (Great Expectations); the newest per run counts.",
    )


def downgrade() -> None:
    op.drop_table("quality_gate_results")
