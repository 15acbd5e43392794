"""The text that triggered a rejection: offsets into the stage text and the quoted span.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

An analyst checks a rejection by reading what the validator read. `span_start` / `span_end` are
character offsets into the stage's streamed text (`samples.stage_texts ->> stage`), end
exclusive; `span_text` is that slice, stored so a query needs no string arithmetic and the
evidence survives an export that drops the texts. All three are NULL for rows written before
this revision and for a rejection no text span explains (a judge's score, a length budget).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rejections", sa.Column(
        "span_start", sa.Integer, nullable=True,
        comment="offset of the triggering text in the stage text (characters)"))
    op.add_column("rejections", sa.Column(
        "span_end", sa.Integer, nullable=True,
        comment="end of the triggering text in the stage text (characters, exclusive)"))
    op.add_column("rejections", sa.Column(
        "span_text", sa.Text, nullable=True, comment="the triggering text, quoted"))
    op.create_check_constraint(
        "ck_rejections_span", "rejections",
        "(span_start IS NULL AND span_end IS NULL) OR "
        "(span_start >= 0 AND span_end >= span_start)")


def downgrade() -> None:
    op.drop_constraint("ck_rejections_span", "rejections", type_="check")
    for column in ("span_text", "span_end", "span_start"):
        op.drop_column("rejections", column)
