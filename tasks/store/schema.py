"""SQLAlchemy Core tables for the code that reads and writes them (tasks/store/storage.py).

The Alembic migrations in sql/migrations are the source of truth for the schema; these
definitions mirror them so Python code can build typed statements. tests/sql/test_migrations.py
reflects a migrated database and fails if the two disagree. Never `metadata.create_all()` outside
that test: the schema changes only through migrations.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

RUN_STATUSES = ("running", "completed", "failed", "quarantined", "interrupted")


def _created_at() -> Column[datetime]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


runs = Table(
    "runs", metadata,
    Column("run_id", Text, primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("spec_hash", Text, nullable=False),
    Column("code_version", Text, nullable=False),
    Column("prefect_flow_run_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("samples_expected", Integer, nullable=False),
)

samples = Table(
    "samples", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", Text, ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("prompt_id", Text, nullable=False),
    Column("sample_index", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("problem", Text, nullable=False),
    Column("reference_answer", Text, nullable=True),
    Column("stage_texts", JSONB, nullable=False),
    Column("final_answer", Text, nullable=True),
    Column("early_exit", Boolean, nullable=False),
    Column("error", Text, nullable=True),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("run_id", "prompt_id", "sample_index", name="uq_samples_key"),
)

rejections = Table(
    "rejections", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),
    Column("prompt_id", Text, nullable=False),
    Column("sample_index", Integer, nullable=False),
    Column("stage", Text, nullable=False),
    Column("checkpoint", Integer, nullable=False),
    Column("validator", Text, nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("step_index", Integer, nullable=True),
    Column("tokens_at_fire", Integer, nullable=False),
    Column("fraction_at_fire", Float, nullable=True),
    _created_at(),
    # The text that triggered it (migration 0012): offsets into the stage text, end exclusive.
    Column("span_start", Integer, nullable=True),
    Column("span_end", Integer, nullable=True),
    Column("span_text", Text, nullable=True),
    UniqueConstraint("run_id", "prompt_id", "sample_index", name="uq_rejections_key"),
    ForeignKeyConstraint(["run_id", "prompt_id", "sample_index"],
                         ["samples.run_id", "samples.prompt_id", "samples.sample_index"],
                         name="fk_rejections_sample", ondelete="CASCADE"),
)

ledger = Table(
    "ledger", metadata,
    Column("call_id", Uuid, primary_key=True),
    Column("run_id", Text, ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("prompt_id", Text, nullable=False),
    Column("sample_index", Integer, nullable=False),
    Column("stage", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=False),
    Column("count_source", Text, nullable=False),
    Column("aborted", Boolean, nullable=False),
    Column("abort_reason", Text, nullable=True),
    Column("expected_tokens", Integer, nullable=True),
    Column("tokens_saved", Integer, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("finish_reason", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("response_id", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    # No server default here: the bulk insert leaves out columns that have one (0007 gives the
    # database column a default only to fill the rows written before it).
    Column("call_kind", Text, nullable=False),
    # The model the endpoint named in its chunks (migration 0009); `model` is the one asked for.
    Column("served_model", Text, nullable=True),
    # Money (migration 0014): prices in USD per million tokens as they applied to the call;
    # all NULL when no price is known (never a silent 0).
    Column("cached_prompt_tokens", Integer, nullable=True),
    Column("price_input_per_mtok", Numeric(18, 9), nullable=True),
    Column("price_cached_input_per_mtok", Numeric(18, 9), nullable=True),
    Column("price_output_per_mtok", Numeric(18, 9), nullable=True),
    Column("price_source", Text, nullable=True),
    Column("cost_usd", Numeric(18, 9), nullable=True),
)

quality_gate_results = Table(
    "quality_gate_results", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", Text, ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("result", JSONB, nullable=False),
    UniqueConstraint("run_id", "checked_at", name="uq_quality_gate_results_run_checked"),
)

sample_signatures = Table(
    "sample_signatures", metadata,
    Column("run_id", Text, primary_key=True), Column("prompt_id", Text, primary_key=True),
    Column("sample_index", Integer, primary_key=True), Column("field", Text, primary_key=True),
    Column("shingle", Integer, primary_key=True), Column("num_perm", Integer, primary_key=True),
    Column("scheme", Text, primary_key=True), Column("hashvalues", LargeBinary, nullable=False),
    _created_at(),
    ForeignKeyConstraint(["run_id", "prompt_id", "sample_index"],
                         ["samples.run_id", "samples.prompt_id", "samples.sample_index"],
                         name="fk_sample_signatures_sample", ondelete="CASCADE"),
)

run_shards = Table(
    "run_shards", metadata,
    Column("run_id", Text, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("shard_no", Integer, primary_key=True),
    Column("samples", Integer, nullable=False),
    Column("first_item", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("claimed_by", Text, nullable=True),
    Column("claimed_on", Text, nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
)

endpoint_probes = Table(
    "endpoint_probes", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("base_url", Text, nullable=False), Column("model", Text, nullable=False),
    Column("probed_at", DateTime(timezone=True), nullable=False),
    Column("abort_honoured", Boolean, nullable=True),  # NULL: the probe was inconclusive
    Column("result", JSONB, nullable=False),
    Index("ix_endpoint_probes_endpoint", "base_url", "model", "probed_at"),
)
