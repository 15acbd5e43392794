"""Two more ledger values: a count from llama.cpp's per-token timings, and a call cut because the
run was interrupted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

`count_source = 'server_timings'`: llama.cpp sends no usage for a stream cut short, but asked for
`timings_per_token` it puts its running count of decoded tokens (`timings.predicted_n`) and the
prompt's tokens in every chunk: the server's own count, in the model's tokenizer, of what
reached the client.

`abort_reason = 'interrupted'`: Ctrl-C cancels the samples in flight. They are not written (a
resume generates them again), but the calls they sent cost tokens, so their rows are written,
cut short, with this reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECKS = {  # constraint: (column, values before, values added)
    "ck_ledger_count_source": ("count_source", ("server_usage", "tokenizer_estimate"),
                               ("server_timings",)),
    "ck_ledger_abort_reason": ("abort_reason", ("rejected", "early_exit"), ("interrupted",)),
}


def _recreate(name: str, column: str, values: Sequence[str]) -> None:
    allowed = ", ".join(f"'{v}'" for v in values)
    nullable = f"{column} IS NULL OR " if column == "abort_reason" else ""
    op.drop_constraint(name, "ledger", type_="check")
    op.create_check_constraint(name, "ledger", f"{nullable}{column} IN ({allowed})")


def upgrade() -> None:
    for name, (column, before, added) in _CHECKS.items():
        _recreate(name, column, (*before, *added))


def downgrade() -> None:
    # Counted by the server either way: the closest of the old values.
    op.execute("UPDATE ledger SET count_source = 'server_usage' "
               "WHERE count_source = 'server_timings'")
    # The old schema has no place for them; their samples were generated again on resume.
    op.execute("DELETE FROM ledger WHERE abort_reason = 'interrupted'")
    for name, (column, before, _added) in _CHECKS.items():
        _recreate(name, column, before)
