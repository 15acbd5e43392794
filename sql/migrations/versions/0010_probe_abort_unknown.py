"""An inconclusive abort probe stores `abort_honoured` as NULL (unknown), not false.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Before this revision a probe that could not tell whether a disconnect stops generation (the
reply ended before the probe could hang up, or the server's numbers never showed the request)
was stored as `abort_honoured = false`, the same as a server measured to keep generating. Rows
already stored with an inconclusive verdict become NULL, in the column and in the JSON copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INCONCLUSIVE = "result->'abort'->>'verdict' = 'inconclusive'"


def upgrade() -> None:
    op.alter_column(
        "endpoint_probes", "abort_honoured", existing_type=sa.Boolean, nullable=True,
        comment="a disconnect was measured to stop generation (true) or not to (false); NULL "
        "when the probe was inconclusive",
        existing_comment="a disconnect was measured to stop generation (false if inconclusive)")
    op.execute("UPDATE endpoint_probes SET abort_honoured = NULL, "
               "result = jsonb_set(result, '{abort_honoured}', 'null'::jsonb) "
               f"WHERE {_INCONCLUSIVE}")


def downgrade() -> None:
    op.execute("UPDATE endpoint_probes SET abort_honoured = false, "
               "result = jsonb_set(result, '{abort_honoured}', 'false'::jsonb) "
               "WHERE abort_honoured IS NULL")
    op.alter_column(
        "endpoint_probes", "abort_honoured", existing_type=sa.Boolean, nullable=False,
        comment="a disconnect was measured to stop generation (false if inconclusive)",
        existing_comment="a disconnect was measured to stop generation (true) or not to "
        "(false); NULL when the probe was inconclusive")
