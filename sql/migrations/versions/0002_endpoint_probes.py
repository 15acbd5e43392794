"""Endpoint probes: what `foldem probe` found per endpoint, so a job can refuse an endpoint whose
aborts are not honoured (tokens "saved" there are not saved).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "endpoint_probes",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("probed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("abort_honoured", sa.Boolean, nullable=False,
                  comment="a disconnect was measured to stop generation (false if inconclusive)"),
        sa.Column("result", JSONB, nullable=False,
                  comment="the whole probe result (tasks.probe.models.ProbeResult)"),
        comment="One row per `foldem probe` of an endpoint; the newest row per (base_url, "
        "model) is what a job checks.",
    )
    # The newest probe of an endpoint: equality on (base_url, model), then probed_at read
    # backwards (a btree serves ORDER BY probed_at DESC without a DESC index).
    op.create_index("ix_endpoint_probes_endpoint", "endpoint_probes",
                    ["base_url", "model", "probed_at"])


def downgrade() -> None:
    op.drop_index("ix_endpoint_probes_endpoint", table_name="endpoint_probes")
    op.drop_table("endpoint_probes")
