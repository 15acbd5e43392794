"""A ledger row may be a call cut because the run was interrupted: `abort_reason =
'interrupted'`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Ctrl-C cancels the samples in flight: they are not written (a resume generates them again), but
the calls they sent cost tokens, so their rows are written, cut short, with this reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("ck_ledger_abort_reason", "ledger", type_="check")
    op.create_check_constraint(
        "ck_ledger_abort_reason", "ledger",
        "abort_reason IS NULL OR abort_reason IN ('rejected', 'early_exit', 'interrupted')")


def downgrade() -> None:
    # The old schema has no place for them; their samples were generated again on resume.
    op.execute("DELETE FROM ledger WHERE abort_reason = 'interrupted'")
    op.drop_constraint("ck_ledger_abort_reason", "ledger", type_="check")
    op.create_check_constraint("ck_ledger_abort_reason", "ledger",
                               "abort_reason IS NULL OR abort_reason IN ('rejected', 'early_exit')")
