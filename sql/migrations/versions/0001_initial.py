"""Initial schema: runs, samples, rejections, the token ledger, and the views in sql/views/.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Views are read from sql/views/<view name>.sql (the file stem is the view's name). If a later
migration changes a table so that the current view files no longer fit this revision's tables,
copy the old view text into this file instead of reading the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS_DIR = Path(__file__).resolve().parents[2] / "views"
TS = sa.DateTime(timezone=True)


def _view_files() -> list[Path]:
    return sorted(VIEWS_DIR.glob("*.sql"))


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", TS, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("job_name", sa.Text, nullable=False),
        sa.Column("spec", JSONB, nullable=False, comment="the job spec as it was run"),
        sa.Column("spec_hash", sa.Text, nullable=False),
        sa.Column("code_version", sa.Text, nullable=False),
        sa.Column("prefect_flow_run_id", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("samples_expected", sa.Integer, nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed', 'quarantined')",
                           name="ck_runs_status"),
        comment="One row per run of a job spec; a resumed run keeps its row.",
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
        sa.Column("reference_answer", sa.Text, nullable=True),
        sa.Column("stage_texts", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb"),
                  comment="list of {stage, text, aborted, final_answer}"),
        sa.Column("final_answer", sa.Text, nullable=True),
        sa.Column("early_exit", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("error", sa.Text, nullable=True),
        _created_at(),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("run_id", "prompt_id", "sample_index", name="uq_samples_key"),
        sa.CheckConstraint("status IN ('accepted', 'rejected', 'failed')",
                           name="ck_samples_status"),
        comment="One row per (run, prompt, sample index) in a final state.",
    )
    op.create_table(
        "rejections",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("checkpoint", sa.Integer, nullable=False),
        sa.Column("validator", sa.Text, nullable=False),
        sa.Column("reason_code", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("step_index", sa.Integer, nullable=True),
        sa.Column("tokens_at_fire", sa.Integer, nullable=False, server_default="0",
                  comment="completion tokens generated in the stage when the validator fired"),
        sa.Column("fraction_at_fire", sa.Float, nullable=True,
                  comment="tokens_at_fire / the stage's expected length"),
        _created_at(),
        sa.UniqueConstraint("run_id", "prompt_id", "sample_index", name="uq_rejections_key"),
        sa.ForeignKeyConstraint(
            ["run_id", "prompt_id", "sample_index"],
            ["samples.run_id", "samples.prompt_id", "samples.sample_index"],
            name="fk_rejections_sample", ondelete="CASCADE"),
        comment="Why and where each rejected sample was rejected (one per rejected sample).",
    )
    op.create_table(
        "ledger",
        sa.Column("call_id", sa.Uuid, primary_key=True),
        sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("prompt_id", sa.Text, nullable=False),
        sa.Column("sample_index", sa.Integer, nullable=False),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("count_source", sa.Text, nullable=False,
                  comment="server_usage: the endpoint reported usage; tokenizer_estimate: "
                  "counted on the client (e.g. an aborted stream)"),
        sa.Column("aborted", sa.Boolean, nullable=False),
        sa.Column("abort_reason", sa.Text, nullable=True),
        sa.Column("expected_tokens", sa.Integer, nullable=True),
        sa.Column("tokens_saved", sa.Integer, nullable=False, server_default="0",
                  comment="expected_tokens - completion_tokens when aborted, else 0"),
        sa.Column("ttft_ms", sa.Float, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("finish_reason", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("response_id", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.CheckConstraint("count_source IN ('server_usage', 'tokenizer_estimate')",
                           name="ck_ledger_count_source"),
        sa.CheckConstraint("abort_reason IS NULL OR abort_reason IN ('rejected', 'early_exit')",
                           name="ck_ledger_abort_reason"),
        comment="One row per endpoint call: what it cost and what aborting it saved.",
    )
    op.create_index("ix_ledger_run_id", "ledger", ["run_id"])
    for path in _view_files():
        # Escaped colons: text() must not read `:name` in the view as a bind parameter.
        op.execute(sa.text(path.read_text(encoding="utf-8").replace(":", "\\:")))


def downgrade() -> None:
    for path in reversed(_view_files()):
        op.execute(f'DROP VIEW IF EXISTS "{path.stem}"')
    op.drop_index("ix_ledger_run_id", table_name="ledger")
    for table in ("ledger", "rejections", "samples", "runs"):
        op.drop_table(table)
