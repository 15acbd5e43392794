"""Wire data between the engine, storage and reports, as pydantic models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The closed sets below are StrEnums: a member is its value as a str, so Postgres columns, JSON
# and comparisons with plain strings see exactly the strings they always did.


class SampleStatus(StrEnum):
    """A sample's final state (every stored status is final)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    #: not needed: k accepted samples of its prompt already agreed (`early_exit: {agreement: k}`)
    SUPERSEDED = "superseded"


FINAL_STATUSES: tuple[SampleStatus, ...] = tuple(SampleStatus)


class CountSource(StrEnum):
    """Where a call's token counts come from."""

    SERVER_USAGE = "server_usage"  # the endpoint's own usage figures
    #: llama.cpp's running count of decoded tokens (`timings.predicted_n`), which it sends in
    #: every chunk when asked: its own count of a stream cut short, for which it sends no usage
    SERVER_TIMINGS = "server_timings"
    TOKENIZER_ESTIMATE = "tokenizer_estimate"  # the endpoint reported none: counted here


class AbortReason(StrEnum):
    """Why a call's stream was closed before it ended."""

    REJECTED = "rejected"
    EARLY_EXIT = "early_exit"  # the answer was complete (or a judge's score line was)
    INTERRUPTED = "interrupted"  # the run was stopped (Ctrl-C): the sample is generated again
    AGREEMENT = "agreement"  # k accepted samples of the prompt already agreed on the answer


class CallKind(StrEnum):
    """What a call was for."""

    GENERATE = "generate"  # a stage's generation
    STEP_JUDGE = "step_judge"  # a step judge's verdict on a partial solution


class PriceSource(StrEnum):
    """Where the prices a call was charged at came from."""

    JOB_SPEC = "job_spec"  # the endpoint's `prices:` in the job spec
    GENAI_PRICES = "genai_prices"  # genai-prices' data, for a hosted model it knows


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prompt(_Model):
    """One prompt of a job: a problem (or, for an S1 stage, a seed)."""

    prompt_id: str
    text: str
    reference_answer: str | None = None


class WorkItem(_Model):
    """One sample to produce: a prompt and which of its samples."""

    prompt: Prompt
    sample_index: int


class LedgerEntry(_Model):
    """One endpoint call, as it cost."""

    call_id: UUID = Field(default_factory=uuid4)
    run_id: str
    prompt_id: str
    sample_index: int
    stage: str
    call_kind: CallKind = CallKind.GENERATE
    endpoint: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    count_source: CountSource = CountSource.TOKENIZER_ESTIMATE
    aborted: bool = False
    abort_reason: AbortReason | None = None
    expected_tokens: int | None = None
    tokens_saved: int = 0
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    finish_reason: str | None = None
    attempts: int = 1
    response_id: str | None = None  # the endpoint's id for the call (chunk `id`)
    # The model the endpoint named in its chunks: what generated the text when `model` is a
    # wildcard or an alias (a replay of recordings, a router); None if it named none.
    served_model: str | None = None
    error: str | None = None
    started_at: datetime
    #: Of the prompt tokens, those the server served from its prompt cache (None: not said).
    cached_prompt_tokens: int | None = None
    # The prices the call was charged at, USD per million tokens, and its cost; all None when
    # no price is known for the endpoint (never a silent 0).
    price_input_per_mtok: Decimal | None = None
    price_cached_input_per_mtok: Decimal | None = None
    price_output_per_mtok: Decimal | None = None
    price_source: PriceSource | None = None
    cost_usd: Decimal | None = None


class RejectionRecord(_Model):
    """Why and where a sample was rejected. `span_start`/`span_end` (end exclusive) locate the
    text that explains it in the stage's text and `span_text` quotes it (capped: see
    tasks/engine/evidence.py); all three None when no text span explains the rejection."""

    stage: str
    checkpoint: int
    validator: str
    reason_code: str
    detail: str = ""
    step_index: int | None = None
    tokens_at_fire: int = 0
    fraction_at_fire: float | None = None
    span_start: int | None = None
    span_end: int | None = None
    span_text: str | None = None


class StageText(_Model):
    stage: str
    text: str
    aborted: bool = False
    final_answer: str | None = None


class SampleResult(_Model):
    """A sample in a final state, with everything that is written for it in one transaction."""

    run_id: str
    prompt_id: str
    sample_index: int
    status: SampleStatus
    problem: str
    reference_answer: str | None = None
    stages: list[StageText] = Field(default_factory=list)
    final_answer: str | None = None
    early_exit: bool = False
    rejection: RejectionRecord | None = None
    error: str | None = None
    ledger: list[LedgerEntry] = Field(default_factory=list)
    #: Cut by an interrupt (Ctrl-C) before it was final: only its ledger rows are written (its
    #: calls cost tokens); the sample is not, and is generated again on resume.
    interrupted: bool = False


class EndpointFigures(_Model):
    """One endpoint's share of a run (from the ledger; breaker trips from the flow's process)."""

    endpoint: str
    calls: int = 0
    failed_calls: int = 0  # calls that ended in an error (including those moved elsewhere)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    mean_ttft_ms: float | None = None  # over the calls that got a first token
    breaker_trips: int | None = None  # None: not known (a summary read back from the database)


class StageFigures(_Model):
    """One stage's funnel: samples that reached it, and how they left it."""

    stage: str
    reached: int = 0  # samples with a call at this stage
    rejected: int = 0
    failed: int = 0  # samples whose call at this stage ended in an error
    superseded: int = 0  # samples cut at this stage because k siblings agreed
    passed: int = 0  # reached - rejected - failed - superseded: on to the next stage, or accepted


#: The money figures of a `RunCost` besides its total: all None when the total is.
_COST_PARTS = ("rejected_usd", "rejected_finish_estimate_usd", "early_stop_estimate_usd",
               "step_judge_usd", "judge_stage_usd")


class RunCost(_Model):
    """What a run's calls cost in USD at the prices in their ledger rows, and what cutting
    streams saved. `*_estimate_usd` figures price tokens that were never generated (a stage's
    expected length minus what a cut call generated) at the call's output price: estimates.
    Calls with no known price are not costed and are counted in `unpriced_calls`; a run with no
    priced call at all has every money figure None (unknown, never a silent 0)."""

    priced_calls: int = 0
    unpriced_calls: int = 0
    unpriced_endpoints: list[str] = Field(default_factory=list)  # endpoints with uncosted calls
    price_sources: list[PriceSource] = Field(default_factory=list)  # of the priced calls
    total_usd: Decimal | None = None  # None: no call of the run had a price
    per_accepted_usd: Decimal | None = None  # total over accepted samples; None: none accepted
    #: Generation calls of samples that ended rejected (up to where their stream was cut).
    rejected_usd: Decimal | None = None
    #: Finishing the rejected samples' cut streams to their stage's expected length (estimate).
    rejected_finish_estimate_usd: Decimal | None = None
    #: The tokens other early stops (complete answer, agreement) did not generate (estimate).
    early_stop_estimate_usd: Decimal | None = None
    #: The checks that cost calls: step-judge calls, and the calls of `judge` stages.
    step_judge_usd: Decimal | None = None
    judge_stage_usd: Decimal | None = None

    #: Both together; and the estimated savings minus them: negative when a judge costs more
    #: than cutting streams saved (set from the figures above; a value given is ignored).
    checks_usd: Decimal | None = None
    net_saving_estimate_usd: Decimal | None = None

    @model_validator(mode="after")
    def _totals(self) -> RunCost:
        if self.total_usd is None:
            for name in (*_COST_PARTS, "checks_usd", "net_saving_estimate_usd"):
                setattr(self, name, None)
            return self
        zero = Decimal(0)
        for name in _COST_PARTS:
            if getattr(self, name) is None:
                setattr(self, name, zero)
        self.checks_usd = (self.step_judge_usd or zero) + (self.judge_stage_usd or zero)
        self.net_saving_estimate_usd = ((self.rejected_finish_estimate_usd or zero)
                                        + (self.early_stop_estimate_usd or zero)
                                        - self.checks_usd)
        return self


class RunSummary(_Model):
    """What `foldem run --summary-json` writes."""

    run_id: str
    samples: int
    accepted: int
    rejected: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    tokens_saved: int
    server_tokens_sent: int | None = None
    status: str = "completed"
    #: Early exit by agreement: samples not needed because k accepted samples of their prompt
    #: agreed (`superseded`), those of them cut while streaming (`agreement_cut_calls`: ledger
    #: rows with abort_reason 'agreement'), and the completion tokens agreement saved, an
    #: estimate: the cut calls' tokens_saved, plus for each superseded sample that never
    #: started what a generated sample of the run cost on average.
    superseded: int = 0
    agreement_cut_calls: int = 0
    agreement_tokens_saved: int = 0
    rejections_by_validator: dict[str, int] = Field(default_factory=dict)
    rejections_by_stage: dict[str, int] = Field(default_factory=dict)
    calls: int = 0
    aborted_calls: int = 0
    quality_gate: str | None = None  # "passed", the failure message, or None when not run
    near_duplicates_removed: int | None = None  # None when dedup did not run
    exported_to: str | None = None  # the export directory, when the run was exported
    audit_page: str | None = None  # the run's audit page (absolute path), when written
    endpoints: list[EndpointFigures] = Field(default_factory=list)  # per endpoint, by name
    stages: list[StageFigures] = Field(default_factory=list)  # in the order samples meet them
    cost: RunCost = Field(default_factory=RunCost)  # in USD, from the ledger's prices

    def add_breaker_trips(self, trips: Mapping[str, int]) -> None:
        """Put one process's circuit-breaker trips into the per-endpoint figures (an endpoint
        that tripped without a call, e.g. at its preflight, gets a row of its own)."""
        figures = {f.endpoint: f for f in self.endpoints}
        for name, count in trips.items():
            if name not in figures:
                if not count:
                    continue
                figures[name] = EndpointFigures(endpoint=name)
            figures[name].breaker_trips = count
        self.endpoints = sorted(figures.values(), key=lambda f: f.endpoint)
