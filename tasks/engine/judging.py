"""How one stage's stream is judged, chosen once per stage.

`InFlight` judges while the stream runs: each delta goes through the checkpoint splitter into
the validators (and, at step boundaries, to the step judge), and a decision ends the stream.
`AfterTheFact` is the generate-then-filter baseline: the stream runs to its end, then the same
checkpoints, validators and judged prefixes go over the whole text, so both keep the same
samples (tests/tasks/engine/test_inflight_equals_posthoc.py). The runner reads the stream in
one loop, asking `on_delta` whether to stop; `on_end` judges what is left once it ended on its
own; `settle` waits for the step judge and gives the stage's verdict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from foldem.spec.stages import Stage
from tasks.endpoints.base import Delta
from tasks.engine.evidence import step_span, with_evidence
from tasks.engine.judge_score import judge_rejection
from tasks.engine.policy import Action, Decision, StagePolicy
from tasks.engine.step_judge import Judgement, StepJudgeRun
from tasks.records.models import RejectionRecord
from validators.base import Checkpoint, Verdict
from validators.checkpoints import CheckpointSplitter


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


class StageJudging(ABC):
    """One sample's stage: its validators' policy, its checkpoints, its step judge."""

    def __init__(self, stage: Stage, policy: StagePolicy, judge: StepJudgeRun | None) -> None:
        self.stage = stage
        self.policy = policy
        self.judge = judge
        cps = stage.checkpoints
        self.splitter = CheckpointSplitter(separator=cps.separator, every_step=cps.every_step,
                                           fractions=cps.fractions,
                                           expected_tokens=stage.expected_tokens,
                                           step_tokens=cps.max_step_tokens)
        #: The decision that ended the stream early, then the stage's (None: the stream was
        #: cut by the step judge, or never ended).
        self.decision: Decision | None = None
        self.rejection: RejectionRecord | None = None
        self.error: str | None = None  # the step judge's failure, which fails the sample

    @property
    def judgements(self) -> list[Judgement]:
        return self.judge.judgements if self.judge is not None else []

    @property
    def final_answer(self) -> str | None:
        return self.policy.final_answer

    @property
    def stopped(self) -> bool:
        """The stream is to end (or ended) before its end: a decision, or the step judge's."""
        judge = self.judge
        return self.decision is not None or bool(judge and (judge.rejected or judge.failed))

    def on_delta(self, delta: Delta) -> bool:
        """A delta streamed; True when the stream must stop now."""
        return False

    def on_end(self, text: str, completion_tokens: int) -> None:
        """The stream ended on its own with `text`: judge what was not judged yet."""
        rest = self._unjudged(text, completion_tokens)
        final = self.splitter.close()
        self.decision = _judge_rest(self.policy, [*rest, final])
        if self.judge is not None and self.decision.action is not Action.REJECT:
            self._offer_rest(self.judge, text, final)

    @abstractmethod
    def _unjudged(self, text: str, completion_tokens: int) -> list[Checkpoint]:
        """The checkpoints of `text` not judged while it streamed."""

    @abstractmethod
    def _offer_rest(self, judge: StepJudgeRun, text: str, final: Checkpoint) -> None:
        """Offer the step judge the prefixes it was not offered while the text streamed."""

    async def wait_for_judge(self) -> None:
        """Wait for the step judgements still out: their calls were sent and are paid for (and
        go in the ledger); a verdict is a few tokens."""
        if self.judge is not None:
            await self.judge.finish()

    async def settle(self) -> None:
        """The stage's verdict, once the step judge is done: a validator's rejection stands;
        else a low step-judge score rejects and a step-judge error fails the sample."""
        await self.wait_for_judge()
        decision, judge = self.decision, self.judge
        if decision is not None and decision.action is Action.REJECT:
            if decision.verdict is not None:
                self.rejection = self._validator_rejection(decision.verdict)
            return
        if judge is None:
            return
        if judge.failed is not None and judge.rejected is None:
            self.error = f"step judge: {judge.failed.error}"
        elif (j := judge.rejected) is not None:
            self.rejection = judge_rejection(
                self.stage.name, j.score, j.reply, judge.cfg.accept_at, through_step=j.steps,
                checkpoint=max(0, self.splitter.checkpoints_emitted - 1),
                tokens_at_fire=self.splitter.tokens, fraction_at_fire=self._fraction())
            if self.rejection is not None:
                text = self.splitter.text  # the judged step: the last of the judged prefix
                self.rejection = with_evidence(
                    self.rejection, text, step_span(text, self.splitter.separator, j.steps - 1))
                self.decision = Decision(Action.REJECT, None, 0.0, self.final_answer)

    def _fraction(self) -> float | None:
        expected = self.stage.expected_tokens
        return self.splitter.tokens / expected if expected else None

    def _validator_rejection(self, v: Verdict) -> RejectionRecord:
        record = RejectionRecord(
            stage=self.stage.name, checkpoint=self.splitter.checkpoints_emitted - 1,
            validator=v.validator, reason_code=v.reason or "low_utility", detail=v.detail,
            step_index=v.step_index, tokens_at_fire=self.splitter.tokens,
            fraction_at_fire=self._fraction())
        return with_evidence(record, self.splitter.text, v.span)


class InFlight(StageJudging):
    """Judge while streaming: a verdict closes the stream at once."""

    def __init__(self, stage: Stage, policy: StagePolicy, judge: StepJudgeRun | None) -> None:
        super().__init__(stage, policy, judge)
        self._offered = 0  # steps completed when the step judge was last offered a prefix

    def on_delta(self, delta: Delta) -> bool:
        splitter = self.splitter
        for cp in splitter.push(delta.text, delta.tokens, delta.confidences):
            decision = self.policy.judge(cp)
            if decision.action is not Action.CONTINUE:
                self.decision = decision
                break
        if self.judge is not None and splitter.steps_completed != self._offered:
            self._offered = splitter.steps_completed
            self.judge.offer(splitter.complete_text, self._offered)
        return self.stopped

    def _unjudged(self, text: str, completion_tokens: int) -> list[Checkpoint]:
        return []  # every delta went through the splitter already

    def _offer_rest(self, judge: StepJudgeRun, text: str, final: Checkpoint) -> None:
        if final.steps:  # the last step, completed by the stream's end
            judge.offer(self.splitter.complete_text, self.splitter.steps_completed)


class AfterTheFact(StageJudging):
    """Generate in full, then judge the whole text (the generate-then-filter baseline)."""

    def __init__(self, stage: Stage, policy: StagePolicy, judge: StepJudgeRun | None) -> None:
        super().__init__(stage, policy, judge)
        self._confidences: list[float] = []  # every token's, judged with the whole text

    def on_delta(self, delta: Delta) -> bool:
        self._confidences.extend(delta.confidences)
        return False

    def _unjudged(self, text: str, completion_tokens: int) -> list[Checkpoint]:
        return self.splitter.push(text, completion_tokens, tuple(self._confidences))

    def _offer_rest(self, judge: StepJudgeRun, text: str, final: Checkpoint) -> None:
        # Only what the rules kept is judged, one step at a time so that the judge sees the
        # same prefixes as in flight (step counting is the splitter's own).
        separator = self.splitter.separator
        steps, pos = CheckpointSplitter(separator=separator), 0
        while (at := text.find(separator, pos)) >= 0:
            steps.push(text[pos:at + len(separator)], 0)
            judge.offer(steps.complete_text, steps.steps_completed)
            pos = at + len(separator)
        steps.push(text[pos:], 0)
        if steps.close().steps:
            judge.offer(steps.complete_text, steps.steps_completed)


def stage_judging(stage: Stage, policy: StagePolicy, judge: StepJudgeRun | None, *,
                  in_flight: bool) -> StageJudging:
    """The stage's judging strategy: in flight, or after the fact."""
    return (InFlight if in_flight else AfterTheFact)(stage, policy, judge)
