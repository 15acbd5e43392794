"""Early exit by agreement: a sample status and a ledger abort reason.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

With `early_exit: {agreement: k}` a prompt's remaining samples stop once k accepted samples
agree on the final answer. A sample stopped that way is final but neither accepted nor
rejected: `samples.status = 'superseded'` (a resume does not generate it again). A call cut
short for that reason is paid for up to the cut: its ledger row says `abort_reason =
'agreement'`.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SAMPLE_STATUSES = ("accepted", "rejected", "failed")
_ABORT_REASONS = ("rejected", "early_exit", "interrupted")


def _samples_status(values: Sequence[str]) -> None:
    allowed = ", ".join(f"'{v}'" for v in values)
    op.drop_constraint("ck_samples_status", "samples", type_="check")
    op.create_check_constraint("ck_samples_status", "samples", f"status IN ({allowed})")


def _abort_reason(values: Sequence[str]) -> None:
    allowed = ", ".join(f"'{v}'" for v in values)
    op.drop_constraint("ck_ledger_abort_reason", "ledger", type_="check")
    op.create_check_constraint("ck_ledger_abort_reason", "ledger",
                               f"abort_reason IS NULL OR abort_reason IN ({allowed})")


def upgrade() -> None:
    _samples_status((*_SAMPLE_STATUSES, "superseded"))
    _abort_reason((*_ABORT_REASONS, "agreement"))


def downgrade() -> None:
    # The old schema has no such state: a superseded sample was simply never kept.
    op.execute("DELETE FROM samples WHERE status = 'superseded'")
    op.execute("UPDATE ledger SET abort_reason = 'early_exit' WHERE abort_reason = 'agreement'")
    _samples_status(_SAMPLE_STATUSES)
    _abort_reason(_ABORT_REASONS)
