"""Run one sample through its stages: render → stream → checkpoints → validators → policy.

A rejected or early-exited stream is closed at once (leaving the client's context closes the
HTTP stream). Every call becomes a ledger entry, failed ones included (a call that moved to
another endpoint before its first token: one entry per endpoint tried). Calls go through the
stage's `EndpointPool` (tasks/endpoints/pool.py). Errors of the endpoint turn the sample into
`failed` with a reason; a rejection is data, never an exception.

One loop reads a stage's stream; how it is judged (while it streams, or after it ended: the
generate-then-filter baseline) is the stage's `StageJudging` (tasks/engine/judging.py), chosen
once per stage from the job's `in_flight`.
"""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from foldem.core.errors import EndpointError
from foldem.spec.job import JobSpec
from foldem.spec.stages import Stage
from tasks.endpoints.base import CallStats, ChatRequest, Message, StreamingEndpoint
from tasks.endpoints.pool import CallAttempt, EndpointRouter
from tasks.endpoints.prices import PriceBook, resolve_prices
from tasks.engine.judge_score import judge_rejection, parse_judge_score
from tasks.engine.judging import StageJudging, stage_judging
from tasks.engine.ledger import CallSite, generation_rows, judgement_rows
from tasks.engine.policy import (
    Action,
    ConfiguredValidator,
    Decision,
    StagePolicy,
    ValidatorStartError,
)
from tasks.engine.step_judge import Judgement, StepJudgeRun
from tasks.records.models import (
    AbortReason,
    LedgerEntry,
    RejectionRecord,
    SampleResult,
    SampleStatus,
    StageText,
    WorkItem,
)
from validators.base import ProblemContext
from validators.registry import build

log = logging.getLogger("foldem.engine")


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:  # templates were checked at load; be safe anyway
        return ""


def render_messages(stage: Stage, fields: Mapping[str, str]) -> list[Message]:
    """System and user messages of a stage; only the template's named fields are filled."""
    user = string.Formatter().vformat(stage.template, (), _Fields(fields))
    messages: list[Message] = ([{"role": "system", "content": stage.system}]
                               if stage.system else [])
    return messages + [{"role": "user", "content": user}]


def build_stage_validators(job: JobSpec) -> dict[str, list[ConfiguredValidator]]:
    """Configured validators per stage name, built once per run (not per sample)."""
    return {st.name: [ConfiguredValidator(build(v.name, v.params), v.mode)
                      for v in st.validators] for st in job.stages}


def top_logprobs_wanted(validators: list[ConfiguredValidator]) -> int | None:
    """How many top logprobs per token a stage's requests ask for: the most any of its
    validators reads (None: none reads confidences, and logprobs are not asked for, so they
    cost no bytes and any endpoint serves the stage)."""
    wanted = [k for cv in validators if (k := cv.validator.top_logprobs()) is not None]
    return max(wanted) if wanted else None


@dataclass(slots=True)
class SampleCut:
    """Why a running sample's task is cancelled: whoever cancels it for a reason of its own
    (enough sibling samples agreed) sets `reason` first; a bare cancel is an interrupt."""

    reason: AbortReason = AbortReason.INTERRUPTED


@dataclass(slots=True)
class StageOutcome:
    text: str
    stats: CallStats  # the last attempt's (the stream the text came from)
    attempts: list[CallAttempt] = field(default_factory=list)  # one per endpoint tried
    decision: Decision | None = None  # the decision that ended the stream early, if any
    rejection: RejectionRecord | None = None
    final_answer: str | None = None
    error: str | None = None
    aborted: bool = False
    judgements: list[Judgement] = field(default_factory=list)  # the stage's step judge calls


@dataclass(slots=True)
class Engine:
    """Everything a sample needs that is shared across samples of a run."""

    job: JobSpec
    run_id: str
    clients: Mapping[str, StreamingEndpoint]
    validators: Mapping[str, list[ConfiguredValidator]]
    #: Completion tokens of the calls made by this process (to compare with a replay's count).
    session_completion_tokens: int = 0
    #: Routing over each stage's endpoints; built from `clients` when not given.
    router: EndpointRouter | None = None
    #: The endpoints' prices, resolved once per run; looked up from the job when not given.
    prices: PriceBook | None = None
    #: Validators whose `open` raised, already reported in this process.
    _broken_reported: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.router is None:
            self.router = EndpointRouter(self.job, self.clients)
        if self.prices is None:
            self.prices = resolve_prices(self.job.endpoints)

    def breaker_trips(self) -> dict[str, int]:
        """Times each endpoint's circuit breaker tripped in this process."""
        return self.router.breaker_trips() if self.router is not None else {}

    def _judging(self, stage: Stage, ctx: ProblemContext) -> StageJudging:
        """The stage's judging for one sample, in flight or after the fact (the job's choice).
        Raises ValidatorStartError when a validator cannot start on this sample."""
        assert self.router is not None  # set in __post_init__
        policy = StagePolicy(self.validators[stage.name], ctx, threshold=stage.threshold,
                             early_exit=stage.early_exit)
        cfg = stage.step_judge
        judge = (StepJudgeRun(cfg, self.router.pool_for_names(cfg.endpoint_names), ctx.problem)
                 if cfg is not None else None)
        return stage_judging(stage, policy, judge, in_flight=self.job.in_flight)

    def _request(self, stage: Stage, fields: Mapping[str, str], seed: int | None) -> ChatRequest:
        return ChatRequest(messages=tuple(render_messages(stage, fields)),
                           max_tokens=self.job.max_tokens_for(stage),
                           temperature=self.job.sampling.temperature,
                           top_p=self.job.sampling.top_p, seed=seed,
                           expected_tokens=stage.expected_tokens,
                           top_logprobs=top_logprobs_wanted(self.validators[stage.name]))

    def _report_broken(self, exc: ValidatorStartError) -> None:
        """Once per validator and process: every sample it meets fails the same way."""
        new = [name for name in exc.validators if name not in self._broken_reported]
        if new:
            self._broken_reported.update(new)
            log.warning("%s; samples that reach this stage fail, with no call sent", exc.message)

    async def run_stage(self, stage: Stage, fields: Mapping[str, str],
                        ctx: ProblemContext, seed: int | None,
                        outcome: StageOutcome | None = None) -> StageOutcome:
        """The stage's call, judged. `outcome` (filled in as the call goes) is the caller's,
        for the calls already sent when the stage is cancelled."""
        assert self.router is not None  # set in __post_init__
        outcome = outcome if outcome is not None else StageOutcome(text="", stats=CallStats())
        try:
            judging = self._judging(stage, ctx)
        except ValidatorStartError as exc:  # judged as configured or not at all: fail it
            self._report_broken(exc)
            outcome.error = exc.message
            return outcome
        outcome.judgements = judging.judgements
        try:
            async with self.router.pool_for(stage).stream(
                    self._request(stage, fields, seed), attempts=outcome.attempts) as call:
                outcome.stats = outcome.attempts[-1].stats
                async for delta in call:
                    if judging.on_delta(delta):
                        break  # leaving the `async with` closes the stream explicitly
        except EndpointError as exc:
            await judging.wait_for_judge()  # calls already sent are paid for: ledger them
            if outcome.attempts:
                outcome.stats = outcome.attempts[-1].stats
            outcome.error = outcome.stats.error = exc.message
            outcome.text = outcome.stats.text
            return outcome
        outcome.text = outcome.stats.text
        if judging.stopped:
            outcome.aborted = outcome.stats.aborted = True
        else:
            judging.on_end(outcome.text, outcome.stats.completion_tokens)
        await judging.settle()
        outcome.decision, outcome.rejection = judging.decision, judging.rejection
        outcome.final_answer = judging.final_answer
        if judging.error is not None:
            outcome.error = outcome.stats.error = judging.error
        return outcome

    def ledger_entries(self, item: WorkItem, stage: Stage, out: StageOutcome, *,
                       cut: AbortReason | None = None) -> list[LedgerEntry]:
        """One row per endpoint the stage's call went to, and per endpoint each of its step
        judgements went to. `cut`: why the stage was cancelled from outside (an interrupt,
        or enough sibling samples agreed), if it was."""
        site = CallSite(self.run_id, item, stage.name, self.prices or PriceBook(prices={}))
        reason = cut
        if out.aborted and out.decision is not None and cut is None:
            reason = (AbortReason.REJECTED if out.decision.action is Action.REJECT
                      else AbortReason.EARLY_EXIT)
        rows = (generation_rows(site, out.attempts, aborted=out.aborted or cut is not None,
                                abort_reason=reason,
                                expected_tokens=stage.expected_tokens)
                + judgement_rows(site, out.judgements))
        self.session_completion_tokens += sum(r.completion_tokens for r in rows)
        return rows

    def _cut_short(self, item: WorkItem, stage: Stage, out: StageOutcome,
                   result: SampleResult, reason: AbortReason) -> SampleResult:
        """The sample as it stands when its task was cancelled during `stage`, with the ledger
        rows of every call it sent, the one cut short included (they cost tokens)."""
        if reason is AbortReason.INTERRUPTED:
            for attempt in out.attempts:  # nothing streamed: not a successful call
                if attempt.stats.error is None and not attempt.stats.completion_tokens:
                    attempt.stats.error = "interrupted before the first token"
        result.ledger.extend(self.ledger_entries(item, stage, out, cut=reason))
        if reason is AbortReason.AGREEMENT:  # final: not generated again on resume
            result.status, result.stages = SampleStatus.SUPERSEDED, []
            result.final_answer, result.early_exit, result.rejection = None, False, None
        else:  # not final: only the calls are written, the sample is generated again
            result.status, result.error = SampleStatus.FAILED, "interrupted"
            result.interrupted = True
        return result

    async def run_sample(self, item: WorkItem, *,
                         on_interrupt: Callable[[SampleResult], None] | None = None,
                         cut: SampleCut | None = None) -> SampleResult:
        """The sample through its stages. Cancelled, it hands `on_interrupt` the sample with
        the ledger rows of every call it sent, the one cut short included: they cost tokens.
        Why it was cancelled is `cut.reason`: an interrupt (Ctrl-C; the default) marks it
        `interrupted`, written as calls only; agreement marks it `superseded`, a final state."""
        prompt = item.prompt
        fields = {"problem": prompt.text, "seed": prompt.text,
                  "reference": prompt.reference_answer or "", "solution": ""}
        seed = item.sample_index if self.job.sampling.seed_per_sample else None
        result = SampleResult(run_id=self.run_id, prompt_id=prompt.prompt_id,
                              sample_index=item.sample_index, status=SampleStatus.ACCEPTED,
                              problem=prompt.text, reference_answer=prompt.reference_answer)
        for stage in self.job.stages:
            ctx = ProblemContext(problem=fields["problem"], stage=stage.kind,
                                 reference_answer=prompt.reference_answer,
                                 expected_tokens=stage.expected_tokens)
            out = StageOutcome(text="", stats=CallStats())
            try:
                await self.run_stage(stage, fields, ctx, seed, out)
            except asyncio.CancelledError:
                if on_interrupt is not None:
                    reason = cut.reason if cut is not None else AbortReason.INTERRUPTED
                    on_interrupt(self._cut_short(item, stage, out, result, reason))
                raise
            # every call made (even a failed one) goes in the ledger
            result.ledger.extend(self.ledger_entries(item, stage, out))
            result.stages.append(StageText(stage=stage.name, text=out.text, aborted=out.aborted,
                                           final_answer=out.final_answer))
            if out.error is not None:
                result.status, result.error = SampleStatus.FAILED, f"{stage.name}: {out.error}"
                return result
            if out.rejection is not None:
                result.status, result.rejection = SampleStatus.REJECTED, out.rejection
                return result
            if stage.kind == "problem":
                fields["problem"] = out.text.strip()
                result.problem = fields["problem"]
            elif stage.kind == "solve":
                fields["solution"] = out.text
                result.final_answer = out.final_answer
                result.early_exit = out.aborted
            elif (verdict := judge_rejection(stage.name, parse_judge_score(out.text), out.text,
                                             stage.accept_at)) is not None:
                result.status, result.rejection = SampleStatus.REJECTED, verdict
                return result
        return result
