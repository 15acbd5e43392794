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
from dataclasses import dataclass, field, replace

from foldem.core.errors import EndpointError
from foldem.spec.stages import StepJudge
from tasks.endpoints.base import ChatRequest, Message
from tasks.endpoints.pool import CallAttempt, EndpointPool
from tasks.engine.judge_score import parse_judge_score, passes


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
        # A verdict, not a sample: the same greedy request for every prefix but its messages.
        self._request = ChatRequest(messages=(), max_tokens=cfg.max_tokens, temperature=0.0)
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

    def _messages(self, prefix: str) -> tuple[Message, ...]:
        user = _fill(self.cfg.template, self.problem, prefix)
        system = [{"role": "system", "content": self.cfg.system}] if self.cfg.system else []
        return (*system, {"role": "user", "content": user})

    async def _judge(self, judgement: Judgement, prefix: str) -> None:
        request = replace(self._request, messages=self._messages(prefix))
        try:
            async with self.pool.stream(request, attempts=judgement.attempts) as call:
                async for delta in call:
                    # The rubric puts the score first: once its line is complete the verdict
                    # is known, and the reason after it would only cost latency and tokens.
                    if "\n" in delta.text and parse_judge_score(call.stats.text) is not None:
                        judgement.stopped_early = call.stats.aborted = True
                        break
            judgement.reply = judgement.attempts[-1].stats.text
            judgement.score = parse_judge_score(judgement.reply)
            if not passes(judgement.score, self.cfg.accept_at) and (
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
