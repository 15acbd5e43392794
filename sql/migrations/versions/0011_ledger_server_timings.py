"""A ledger count may come from llama.cpp's per-token timings: `count_source = 'server_timings'`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

llama.cpp sends no usage for a stream cut short, but asked for `timings_per_token` it puts its
running count of decoded tokens (`timings.predicted_n`) and the prompt's tokens in every chunk:
the server's own count, in the model's tokenizer, of what reached the client.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("ck_ledger_count_source", "ledger", type_="check")
    op.create_check_constraint(
        "ck_ledger_count_source", "ledger",
        "count_source IN ('server_usage', 'server_timings', 'tokenizer_estimate')")


def downgrade() -> None:
    # Counted by the server either way: the closest of the old values.
    op.execute("UPDATE ledger SET count_source = 'server_usage' "
               "WHERE count_source = 'server_timings'")
    op.drop_constraint("ck_ledger_count_source", "ledger", type_="check")
    op.create_check_constraint("ck_ledger_count_source", "ledger",
                               "count_source IN ('server_usage', 'tokenizer_estimate')")
