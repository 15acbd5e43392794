"""A run stopped by Ctrl-C (or SIGTERM) is 'interrupted': resumable, and not mistaken for running.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Before this revision an interrupted run stayed 'running' forever, indistinguishable from one
that is still generating. `foldem run JOB --run-id ID` resumes an interrupted run like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WITH = "status IN ('running', 'completed', 'failed', 'quarantined', 'interrupted')"
_WITHOUT = "status IN ('running', 'completed', 'failed', 'quarantined')"


def upgrade() -> None:
    op.drop_constraint("ck_runs_status", "runs", type_="check")
    op.create_check_constraint("ck_runs_status", "runs", _WITH)


def downgrade() -> None:
    op.execute("UPDATE runs SET status = 'failed' WHERE status = 'interrupted'")
    op.drop_constraint("ck_runs_status", "runs", type_="check")
    op.create_check_constraint("ck_runs_status", "runs", _WITHOUT)
