"""What a run's audit page shows, as pydantic models (tasks/reports/audit.py reads them from
Postgres; tasks/reports/audit_page.py renders them as one HTML file).

Every text a model wrote stays a plain string here; the page escapes it when it renders.
Money is None where no price is known, never 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tasks.records.models import RunSummary
from tasks.reports.rows import AnalyticsReport

PieceKind = Literal["text", "span", "omitted"]
TAIL_CHARS = 140  # of a sample's streamed text, shown in its row of the list


class TextPiece(BaseModel):
    """A run of a stage text: plain text, the span that triggered the rejection, or a note
    standing for characters left out of a long text."""

    kind: PieceKind
    text: str


class AuditCall(BaseModel):
    """One endpoint call of a sample, as the ledger has it."""

    stage: str
    call_kind: str
    endpoint: str
    model: str
    completion_tokens: int
    expected_tokens: int | None
    tokens_saved: int
    aborted: bool
    abort_reason: str | None
    finish_reason: str | None
    error: str | None
    cost_usd: float | None  # None: no price known for the call


class StageView(BaseModel):
    """One stage text of a sample as the page shows it: what was streamed, in pieces, and
    where and why the stream ended."""

    stage: str
    pieces: list[TextPiece]
    chars: int  # length of the stored text
    cut: bool  # the stream was closed before it ended: the text stops at the cut point
    end_note: str  # what happened at the end of the text, in words
    rejected_here: bool = False


class AuditRejection(BaseModel):
    stage: str
    checkpoint: int
    validator: str
    reason_code: str
    detail: str
    step_index: int | None
    tokens_at_fire: int
    fraction_at_fire: float | None
    span_start: int | None
    span_end: int | None
    span_text: str | None
    span_note: str  # why the text shows a highlight, or why it does not


class AuditSample(BaseModel):
    prompt_id: str
    sample_index: int
    status: str
    problem: str
    reference_answer: str | None
    final_answer: str | None
    early_exit: bool
    error: str | None
    stages: list[StageView]
    rejection: AuditRejection | None
    calls: list[AuditCall]
    completion_tokens: int
    tokens_saved: int
    cost_usd: float | None  # None: no call of the sample had a price
    cost_partial: bool  # some calls were priced, some not

    @property
    def stage_names(self) -> list[str]:
        return list(dict.fromkeys(s.stage for s in self.stages))

    @property
    def tail(self) -> str:
        """The last characters streamed in the sample's last stage: the list shows them next
        to the cut mark."""
        if not self.stages:
            return ""
        last = self.stages[-1]
        text = "".join(p.text for p in last.pieces if p.kind != "omitted")
        return text[-TAIL_CHARS:].replace("\n", " ⏎ ")


class StatusCount(BaseModel):
    status: str
    total: int  # samples of the run with this status
    listed: int  # of them, on the page


class CostLine(BaseModel):
    """Calls and money per endpoint and model."""

    endpoint: str
    model: str
    calls: int
    priced_calls: int
    prompt_tokens: int
    cached_prompt_tokens: int | None  # None: no call reported cached tokens
    completion_tokens: int
    cost_usd: float | None  # over the priced calls; None when none was priced
    price_sources: str  # e.g. "job_spec"; "" when none


class AuditCost(BaseModel):
    calls: int = 0
    priced_calls: int = 0
    cost_usd: float | None = None
    lines: list[CostLine] = Field(default_factory=list)


class AuditPage(BaseModel):
    """Everything one run's audit page shows."""

    run_id: str
    job_name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    generated_at: datetime
    summary: RunSummary
    analytics: AnalyticsReport
    cost: AuditCost
    counts: list[StatusCount]
    samples: list[AuditSample]
    text_limit: int  # a stage text longer than this shows its head, the span and its end

    @property
    def omitted(self) -> int:
        return sum(c.total - c.listed for c in self.counts)

    @property
    def validators(self) -> list[str]:
        return sorted({s.rejection.validator for s in self.samples if s.rejection})

    @property
    def stage_names(self) -> list[str]:
        return list(dict.fromkeys(n for s in self.samples for n in s.stage_names))
