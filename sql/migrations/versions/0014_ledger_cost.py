"""Money in the ledger: cached prompt tokens, the prices a call was charged at, its cost.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

`cached_prompt_tokens` is the server's `usage.prompt_tokens_details.cached_tokens` (OpenAI,
vLLM and llama.cpp send it; NULL when it sent none). The three prices are USD per million
tokens as they applied to the call (from the job spec, or from genai-prices' data for a hosted
model it knows: `price_source`); `cost_usd` is the call's cost at those prices. A call with no
known price has NULL prices, NULL `price_source` and NULL cost — never a silent 0. Prices are
kept per row so a later price change does not rewrite what a past run cost, and so the cost of
tokens a call did not generate (`tokens_saved`) can be priced in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRICE = sa.Numeric(18, 9)
_COLUMNS = (
    ("cached_prompt_tokens", sa.Integer, "prompt tokens the server served from its cache"),
    ("price_input_per_mtok", _PRICE, "USD per million uncached prompt tokens"),
    ("price_cached_input_per_mtok", _PRICE, "USD per million cached prompt tokens"),
    ("price_output_per_mtok", _PRICE, "USD per million completion tokens"),
    ("price_source", sa.Text, "where the prices came from: job_spec or genai_prices"),
    ("cost_usd", _PRICE, "the call's cost at its prices; NULL when no price is known"),
)


def upgrade() -> None:
    for name, type_, comment in _COLUMNS:
        op.add_column("ledger", sa.Column(name, type_, nullable=True, comment=comment))
    op.create_check_constraint(
        "ck_ledger_price_source", "ledger",
        "price_source IS NULL OR price_source IN ('job_spec', 'genai_prices')")
    op.create_check_constraint(
        "ck_ledger_cached_tokens", "ledger",
        "cached_prompt_tokens IS NULL OR cached_prompt_tokens >= 0")


def downgrade() -> None:
    op.drop_constraint("ck_ledger_cached_tokens", "ledger", type_="check")
    op.drop_constraint("ck_ledger_price_source", "ledger", type_="check")
    for name, _type, _comment in reversed(_COLUMNS):
        op.drop_column("ledger", name)
