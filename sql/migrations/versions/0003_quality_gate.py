"""Quality-gate results per run (issue 6).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Placeholder in the chain (no schema change yet); filled in by the work it is named for.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
