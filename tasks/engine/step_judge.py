"""In-flight step judgements: a judge model scores the partial solution at step boundaries.

Rule validators see arithmetic and form; most wrong steps in real reasoning are wrong logic,
which only a model can see. A solve stage's `step_judge` sends the solution so far (through
its last complete step) to a judge endpoint every `every_steps` steps, *without pausing the
stream*: the generation goes on while the judge thinks, and a low score aborts it when the
verdict arrives. Judgements run concurrently (bounded by the judge endpoint's stream limit).

The set of judged prefixes depends only on the text (step counts), never on timing, and a
sample is rejected when any of them scores below `accept_at`; so generate-then-filter with the
same (deterministic) judge keeps exactly the same samples. In flight, the stream ending (or an
early exit) waits for the judgements still out before the sample is accepted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from foldem.core.errors import EndpointError
from foldem.spec.sections import StepJudge
from tasks.endpoints.pool import CallAttempt, EndpointPool
from tasks.engine.judge_score import parse_judge_score
from tasks.records.models import LedgerEntry, RejectionRecord, WorkItem

VALIDATOR_NAME = "step_judge"


@dataclass(slots=True)
class Judgement:
    """One judged prefix: its step count, the call (one attempt per endpoint tried), the
    outcome."""

    steps: int
    attempts: list[CallAttempt] = field(default_factory=list)
    reply: str = ""
    score: int | None = None
    error: str | None = None
    cancelled: bool = False  # the task was cancelled (its run was) before the verdict came
    stopped_early: bool = False  # the score line was complete: the rest was not read


def _fill(template: str, problem: str, partial: str) -> str:
    # str.replace, not str.format: the partial solution is model text full of braces (LaTeX).
    return template.replace("{problem}", problem).replace("{partial}", partial)


class StepJudgeRun:
    """One sample's step judgements."""

    def __init__(self, cfg: StepJudge, pool: EndpointPool, problem: str) -> None:
        self.cfg = cfg
        self.pool = pool
        self.problem = problem
        self.judgements: list[Judgement] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._steps = 0
        #: The first judgement that finished with a rejecting score / with an error.
        self.rejected: Judgement | None = None
        self.failed: Judgement | None = None

    def offer(self, prefix: str, steps: int) -> None:
        """`steps` complete steps have streamed, `prefix` is their text: judge it if a
        multiple of `every_steps` was passed since the last offer (and calls are left)."""
        every, before = self.cfg.every_steps, self._steps
        self._steps = steps
        if steps // every == before // every or len(self.judgements) >= self.cfg.max_calls:
            return
        if not prefix.strip():
            return
        judgement = Judgement(steps=steps)
        self.judgements.append(judgement)
        self._tasks.append(asyncio.create_task(self._judge(judgement, prefix)))

    def _messages(self, prefix: str) -> list[dict[str, str]]:
        user = _fill(self.cfg.template, self.problem, prefix)
        system = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        return [*system, {"role": "user", "content": user}]

    async def _judge(self, judgement: Judgement, prefix: str) -> None:
        try:
            async with self.pool.stream(self._messages(prefix), attempts=judgement.attempts,
                                        max_tokens=self.cfg.max_tokens, temperature=0.0,
                                        top_p=1.0, seed=None) as call:
                async for delta in call:
                    # The rubric puts the score first: once its line is complete the verdict
                    # is known, and the reason after it would only cost latency and tokens.
                    if "\n" in delta.text and parse_judge_score(call.stats.text) is not None:
                        judgement.stopped_early = call.stats.aborted = True
                        break
            judgement.reply = judgement.attempts[-1].stats.text
            judgement.score = parse_judge_score(judgement.reply)
            if (judgement.score is None or judgement.score < self.cfg.accept_at) and (
                    self.rejected is None or judgement.steps < self.rejected.steps):
                self.rejected = judgement
        except EndpointError as exc:
            judgement.error = exc.message
            self.failed = self.failed or judgement
        except asyncio.CancelledError:
            judgement.cancelled = True
            raise

    async def finish(self) -> None:
        """Wait for every judgement still out (the stream ended or exited early)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def rejection(self, stage: str, *, tokens_at_fire: int, checkpoint: int,
                  expected_tokens: int | None) -> RejectionRecord | None:
        """The rejection record of the decisive judgement, if one rejected."""
        j = self.rejected
        if j is None:
            return None
        if j.score is None:
            reason, detail = "judge_unparseable", (
                f"no 1-5 score in the step judge's reply after step {j.steps}: {j.reply[:200]!r}")
        else:
            reason, detail = "low_judge_score", (
                f"step judge scored the solution through step {j.steps} at {j.score} "
                f"(accepts at {self.cfg.accept_at})")
        return RejectionRecord(
            stage=stage, checkpoint=checkpoint, validator=VALIDATOR_NAME, reason_code=reason,
            detail=detail, step_index=j.steps - 1, tokens_at_fire=tokens_at_fire,
            fraction_at_fire=tokens_at_fire / expected_tokens if expected_tokens else None)


def judge_ledger_entries(judgements: list[Judgement], *, run_id: str, item: WorkItem,
                         stage: str) -> list[LedgerEntry]:
    """A ledger row per endpoint each judgement's call went to (call_kind 'step_judge')."""
    rows = []
    for judgement in judgements:
        for attempt in judgement.attempts:
            st = attempt.stats
            if not st.attempts:
                continue  # no request was sent
            rows.append(LedgerEntry(
                run_id=run_id, prompt_id=item.prompt.prompt_id, sample_index=item.sample_index,
                stage=stage, call_kind="step_judge", endpoint=attempt.endpoint.name,
                model=attempt.endpoint.model, prompt_tokens=st.prompt_tokens,
                completion_tokens=st.completion_tokens,
                count_source="server_usage" if st.count_source == "server_usage"
                else "tokenizer_estimate",
                aborted=judgement.cancelled or judgement.stopped_early,
                abort_reason="early_exit" if judgement.stopped_early else None,
                ttft_ms=st.ttft_ms, duration_ms=st.duration_ms, finish_reason=st.finish_reason,
                attempts=max(1, st.attempts), response_id=st.response_id, error=st.error,
                started_at=attempt.started_at))
    return rows
