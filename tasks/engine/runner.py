"""Run one sample through its stages: render → stream → checkpoints → validators → policy.

A rejected or early-exited stream is closed at once (leaving the client's context closes the
HTTP stream). Every call becomes a ledger entry, failed ones included (a call that moved to
another endpoint before its first token: one entry per endpoint tried). Calls go through the
stage's `EndpointPool` (tasks/endpoints/pool.py). Errors of the endpoint turn the sample into
`failed` with a reason; a rejection is data, never an exception.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from foldem.core.errors import EndpointError
from foldem.spec.job import JobSpec
from foldem.spec.sections import Stage
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.pool import CallAttempt, EndpointRouter
from tasks.endpoints.stream_call import CallStats
from tasks.engine.judge_score import parse_judge_score
from tasks.engine.policy import Action, ConfiguredValidator, Decision, StagePolicy
from tasks.engine.step_judge import Judgement, StepJudgeRun, judge_ledger_entries
from tasks.records.models import (
    AbortReason,
    LedgerEntry,
    RejectionRecord,
    SampleResult,
    StageText,
    WorkItem,
)
from validators.base import Checkpoint, ProblemContext
from validators.checkpoints import CheckpointSplitter
from validators.registry import build


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:  # templates were checked at load; be safe anyway
        return ""


def render_messages(stage: Stage, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """System and user messages of a stage; only the template's named fields are filled."""
    user = string.Formatter().vformat(stage.template, (), _Fields(fields))
    messages = [{"role": "system", "content": stage.system}] if stage.system else []
    return messages + [{"role": "user", "content": user}]


def build_stage_validators(job: JobSpec) -> dict[str, list[ConfiguredValidator]]:
    """Configured validators per stage name, built once per run (not per sample)."""
    return {st.name: [ConfiguredValidator(build(v.name, v.params), v.mode)
                      for v in st.validators] for st in job.stages}


def _judge_rest(policy: StagePolicy, checkpoints: list[Checkpoint]) -> Decision:
    """Judge what is left after the stream ended: the final checkpoint (in flight), or every
    checkpoint of the whole text (the post-hoc baseline). The stream is over, so a complete
    answer is simply accepted, not an early exit."""
    decision = Decision(Action.CONTINUE)
    for cp in checkpoints:
        decision = policy.judge(cp)
        if decision.action is Action.REJECT:
            return decision
    return Decision(Action.CONTINUE, None, decision.utility, policy.final_answer)


def _judge_verdict(stage: Stage, reply: str) -> RejectionRecord | None:
    """A judge stage's rejection, or None when its score reaches `accept_at`."""
    score = parse_judge_score(reply)
    if score is not None and score >= stage.accept_at:
        return None
    reason, detail = (("judge_unparseable", f"no 1-5 score in the judge's reply: {reply[:200]!r}")
                      if score is None else
                      ("low_judge_score", f"judge scored {score} (accepts at {stage.accept_at})"))
    return RejectionRecord(stage=stage.name, checkpoint=0, validator="judge", reason_code=reason,
                           detail=detail)


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


def _offer_by_step(judge: StepJudgeRun, text: str, separator: str) -> None:
    """The baseline's whole text, offered to the step judge one step at a time, so that it
    judges the same prefixes as in flight (step counting is the splitter's own)."""
    steps, pos = CheckpointSplitter(separator=separator), 0
    while (at := text.find(separator, pos)) >= 0:
        steps.push(text[pos:at + len(separator)], 0)
        judge.offer(steps.complete_text, steps.steps_completed)
        pos = at + len(separator)
    steps.push(text[pos:], 0)
    if steps.close().steps:
        judge.offer(steps.complete_text, steps.steps_completed)


@dataclass(slots=True)
class Engine:
    """Everything a sample needs that is shared across samples of a run."""

    job: JobSpec
    run_id: str
    clients: Mapping[str, EndpointClient]
    validators: Mapping[str, list[ConfiguredValidator]]
    #: Completion tokens of the calls made by this process (to compare with a replay's count).
    session_completion_tokens: int = 0
    #: Routing over each stage's endpoints; built from `clients` when not given.
    router: EndpointRouter | None = None

    def __post_init__(self) -> None:
        if self.router is None:
            self.router = EndpointRouter(self.job, self.clients)

    def breaker_trips(self) -> dict[str, int]:
        """Times each endpoint's circuit breaker tripped in this process."""
        return self.router.breaker_trips() if self.router is not None else {}

    async def run_stage(self, stage: Stage, fields: Mapping[str, str],
                        ctx: ProblemContext, seed: int | None) -> StageOutcome:
        assert self.router is not None  # set in __post_init__
        pool = self.router.pool_for(stage)
        messages = render_messages(stage, fields)
        policy = StagePolicy(self.validators[stage.name], ctx, threshold=stage.threshold,
                             early_exit=stage.early_exit)
        cps = stage.checkpoints
        splitter = CheckpointSplitter(separator=cps.separator, every_step=cps.every_step,
                                      fractions=cps.fractions,
                                      expected_tokens=stage.expected_tokens)
        outcome = StageOutcome(text="", stats=CallStats())
        judge = (StepJudgeRun(stage.step_judge, self.router.pool_for_names(
            stage.step_judge.endpoint_names), ctx.problem) if stage.step_judge else None)
        if judge is not None:
            outcome.judgements = judge.judgements
        offered = 0  # steps completed when the judge was last offered a prefix
        try:
            async with pool.stream(messages, attempts=outcome.attempts,
                                   max_tokens=self.job.max_tokens_for(stage),
                                   temperature=self.job.sampling.temperature,
                                   top_p=self.job.sampling.top_p, seed=seed,
                                   expected_tokens=stage.expected_tokens) as call:
                outcome.stats = outcome.attempts[-1].stats
                async for delta in call:
                    if not self.job.in_flight:
                        continue  # baseline: generate in full, judge afterwards
                    for cp in splitter.push(delta.text, delta.tokens):
                        decision = policy.judge(cp)
                        if decision.action is not Action.CONTINUE:
                            outcome.decision = decision
                            break
                    if judge is not None:
                        if splitter.steps_completed != offered:
                            offered = splitter.steps_completed
                            judge.offer(splitter.complete_text, offered)
                        if judge.rejected or judge.failed:
                            break  # decided below, from the judge's verdict
                    if outcome.decision is not None:
                        break  # leaving the `async with` closes the stream explicitly
        except EndpointError as exc:
            if judge is not None:
                await judge.finish()  # calls already sent are paid for: ledger them
            if outcome.attempts:
                outcome.stats = outcome.attempts[-1].stats
            outcome.error = exc.message
            outcome.stats.error = exc.message
            outcome.text = outcome.stats.text
            return outcome
        outcome.text = outcome.stats.text
        stopped = outcome.decision is not None or bool(judge and (judge.rejected or judge.failed))
        if not stopped:
            rest = ([] if self.job.in_flight
                    else splitter.push(outcome.text, outcome.stats.completion_tokens))
            outcome.decision = _judge_rest(policy, [*rest, final := splitter.close()])
            if judge is not None and outcome.decision.action is not Action.REJECT:
                if not self.job.in_flight:  # the baseline judges only what the rules kept
                    _offer_by_step(judge, outcome.text, splitter.separator)
                elif final.steps:
                    judge.offer(splitter.complete_text, splitter.steps_completed)
        if stopped:
            outcome.aborted = True
            outcome.stats.aborted = True
        outcome.final_answer = policy.final_answer
        if judge is not None and await self._judge_decides(judge, stage, splitter, outcome):
            return outcome
        ended = outcome.decision
        if ended is not None and ended.action is Action.REJECT and ended.verdict is not None:
            v = ended.verdict
            outcome.rejection = RejectionRecord(
                stage=stage.name, checkpoint=splitter.checkpoints_emitted - 1,
                validator=v.validator,
                reason_code=v.reason or "low_utility", detail=v.detail, step_index=v.step_index,
                tokens_at_fire=splitter.tokens,
                fraction_at_fire=(splitter.tokens / stage.expected_tokens
                                  if stage.expected_tokens else None))
        return outcome

    async def _judge_decides(self, judge: StepJudgeRun, stage: Stage,
                             splitter: CheckpointSplitter, outcome: StageOutcome) -> bool:
        """Settle the step judge. The judgements still out are waited for either way (their
        calls were sent and are paid for; a verdict is a few tokens). A validator's rejection
        stands; else a low score rejects and a judge error fails the sample. True when the
        judge decided the outcome."""
        await judge.finish()
        if outcome.decision is not None and outcome.decision.action is Action.REJECT:
            return False
        if judge.failed is not None and judge.rejected is None:
            outcome.error = outcome.stats.error = f"step judge: {judge.failed.error}"
            return True
        outcome.rejection = judge.rejection(
            stage.name, tokens_at_fire=splitter.tokens,
            checkpoint=max(0, splitter.checkpoints_emitted - 1),
            expected_tokens=stage.expected_tokens)
        if outcome.rejection is None:
            return False
        outcome.decision = Decision(Action.REJECT, None, 0.0, outcome.final_answer)
        return True

    def ledger_entries(self, item: WorkItem, stage: Stage, out: StageOutcome) -> list[LedgerEntry]:
        """One row per endpoint the stage's call went to; only the last one can have streamed."""
        rows = []
        for attempt in out.attempts:
            if not attempt.stats.attempts:
                continue  # no request was sent
            st, last = attempt.stats, attempt is out.attempts[-1]
            aborted = out.aborted and last
            expected = stage.expected_tokens
            abort_reason: AbortReason | None = None
            if aborted and out.decision is not None:
                abort_reason = "rejected" if out.decision.action is Action.REJECT else "early_exit"
            saved = max(0, expected - st.completion_tokens) if (aborted and expected) else 0
            self.session_completion_tokens += st.completion_tokens
            rows.append(LedgerEntry(
                run_id=self.run_id, prompt_id=item.prompt.prompt_id,
                sample_index=item.sample_index, stage=stage.name, endpoint=attempt.endpoint.name,
                model=attempt.endpoint.model, prompt_tokens=st.prompt_tokens,
                completion_tokens=st.completion_tokens,
                count_source="server_usage" if st.count_source == "server_usage"
                else "tokenizer_estimate",
                aborted=aborted, abort_reason=abort_reason, expected_tokens=expected,
                tokens_saved=saved, ttft_ms=st.ttft_ms, duration_ms=st.duration_ms,
                finish_reason=st.finish_reason, attempts=max(1, st.attempts),
                response_id=st.response_id, error=st.error, started_at=attempt.started_at))
        judged = judge_ledger_entries(out.judgements, run_id=self.run_id, item=item,
                                      stage=stage.name)
        self.session_completion_tokens += sum(e.completion_tokens for e in judged)
        return rows + judged

    async def run_sample(self, item: WorkItem) -> SampleResult:
        prompt = item.prompt
        fields = {"problem": prompt.text, "seed": prompt.text,
                  "reference": prompt.reference_answer or "", "solution": ""}
        seed = item.sample_index if self.job.sampling.seed_per_sample else None
        result = SampleResult(run_id=self.run_id, prompt_id=prompt.prompt_id,
                              sample_index=item.sample_index, status="accepted",
                              problem=prompt.text, reference_answer=prompt.reference_answer)
        for stage in self.job.stages:
            ctx = ProblemContext(problem=fields["problem"], stage=stage.kind,
                                 reference_answer=prompt.reference_answer,
                                 expected_tokens=stage.expected_tokens)
            out = await self.run_stage(stage, fields, ctx, seed)
            # every call made (even a failed one) goes in the ledger
            result.ledger.extend(self.ledger_entries(item, stage, out))
            result.stages.append(StageText(stage=stage.name, text=out.text, aborted=out.aborted,
                                           final_answer=out.final_answer))
            if out.error is not None:
                result.status, result.error = "failed", f"{stage.name}: {out.error}"
                return result
            if out.rejection is not None:
                result.status, result.rejection = "rejected", out.rejection
                return result
            if stage.kind == "problem":
                fields["problem"] = out.text.strip()
                result.problem = fields["problem"]
            elif stage.kind == "solve":
                fields["solution"] = out.text
                result.final_answer = out.final_answer
                result.early_exit = out.aborted
            elif (verdict := _judge_verdict(stage, out.text)) is not None:
                result.status, result.rejection = "rejected", verdict
                return result
        return result
