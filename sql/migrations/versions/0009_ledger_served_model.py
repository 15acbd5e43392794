"""The model an endpoint says generated a call's text, beside the model the job asked for.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

`ledger.model` is the model the job's endpoint entry names, which can be a wildcard (`*`: the
replay endpoint plays any recorded generator) or an alias a router resolves. The chunks of a
chat-completions stream name the model that actually answered; `served_model` keeps that name
(NULL for rows written before this revision, or when the endpoint named none).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column(
        "served_model", sa.Text, nullable=True,
        comment="the model the endpoint named in its stream chunks (who generated the text)"))


def downgrade() -> None:
    op.drop_column("ledger", "served_model")
