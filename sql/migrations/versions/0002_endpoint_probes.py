"""Endpoint probe results (issue 8).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Placeholder in the chain (no schema change yet); filled in by the work it is named for.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
