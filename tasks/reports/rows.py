"""The rows `foldem report` reads from the analytics views (tasks/reports/analytics.py runs the
queries), one pydantic model per query, and `AnalyticsReport`, which holds them all.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from tasks.reports.costs import CostReport


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RunRow(_Row):
    run_id: str
    job_name: str
    status: str
    started_at: datetime
    samples: int
    accepted: int
    rejected: int
    failed: int
    superseded: int = 0  # not generated: k samples of the prompt agreed (early exit)


class StageRow(_Row):
    stage: str
    samples: int
    rejected: int
    rejection_pct: float | None
    aborted_calls: int
    errored_calls: int


class ValidatorRow(_Row):
    stage: str
    validator: str
    rejections: int
    pct_of_stage: float | None  # of the samples that ran the stage
    pct_of_rejections: float
    reasons: str  # "reason_code count, ..." most frequent first


class TokenRow(_Row):
    stage: str
    count_source: str
    calls: int
    aborted_calls: int
    prompt_tokens: int
    completion_tokens: int
    completion_tokens_rejected: int  # spent on samples that ended up rejected
    tokens_saved: int
    completion_tokens_failed: int = 0  # spent on samples that failed (an endpoint error)
    completion_tokens_superseded: int = 0  # on streams cut because k sibling samples agreed

    @property
    def saved_pct(self) -> float | None:
        whole = self.completion_tokens + self.tokens_saved
        return 100.0 * self.tokens_saved / whole if whole else None


class FireRow(_Row):
    bucket: str  # "0.25-0.50" (fraction of the expected length) or "64-127" (tokens)
    validator: str
    rejections: int
    in_flight: int  # rejections that cut the stream (the rest fired after the call ended)


class LatencyRow(_Row):
    endpoint: str
    model: str  # the model the endpoint named in its replies, else the one the job asked for
    calls: int
    errors: int
    retries: int
    p50_ttft_ms: float | None
    p95_ttft_ms: float | None
    p50_duration_ms: float | None
    p95_duration_ms: float | None


class AnalyticsReport(BaseModel):
    scope: str  # which runs, in words
    runs: list[RunRow] = []
    stages: list[StageRow] = []
    validators: list[ValidatorRow] = []
    tokens: list[TokenRow] = []
    fire_by_fraction: list[FireRow] = []
    fire_by_tokens: list[FireRow] = []
    latency: list[LatencyRow] = []
    cost: CostReport = CostReport()  # what the runs cost, by stage, and their jobs' trends
    empty_reason: str | None = None  # set when no run matched: what to do instead
