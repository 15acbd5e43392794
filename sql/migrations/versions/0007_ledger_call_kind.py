"""What a ledger row's call was for: generating a stage's text, or judging a partial solution.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

A solve stage with a `step_judge` makes calls of two kinds under the same stage: the stream that
generates the solution ('generate') and the judge model's verdicts on its prefixes
('step_judge'). Cost analyses want them apart (a judgement is mostly prompt tokens), so the
ledger says which is which. Rows written before this revision were all generation calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column(
        "call_kind", sa.Text, nullable=False, server_default="generate",
        comment="generate: the stage's own stream; step_judge: a judge model scoring a prefix"))
    op.create_check_constraint("ck_ledger_call_kind", "ledger",
                               "call_kind IN ('generate', 'step_judge')")


def downgrade() -> None:
    op.drop_constraint("ck_ledger_call_kind", "ledger", type_="check")
    op.drop_column("ledger", "call_kind")
