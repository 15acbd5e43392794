"""Early exit by agreement: a prompt's samples stop once k accepted samples agree on the answer.

`AnswerTally` counts a prompt's accepted final answers, grouped by the answer comparison the
validators use (equal normal forms; else, for answers that are not plain numbers or words,
math-verify's equivalence, bounded). `run_prompt` runs one prompt's samples against it.

How many samples of a prompt stream at once: `needed` = k minus the largest group of agreeing
answers so far — the samples that could still complete the agreement — plus the job's `spare`.
With no spare, a sample starts only when even every sample still running, agreeing, would
leave the prompt short of k. So the samples generated are exactly those a one-after-another
run generates (the same tokens; a benchmark's figures do not move) while up to k stream at
once, and when k agree no sibling is still running. With spare streams a prompt finishes
sooner; those still running when k agree are cancelled (their calls cut short: ledger
`abort_reason = 'agreement'`). Either way every sample not generated is handed over as
`superseded`, a final state, so a resume does not generate it; a resume seeds the tally with
the prompt's stored accepted answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.engine.runner import SampleCut
from tasks.records.models import AbortReason, SampleResult, SampleStatus, WorkItem
from validators.lib.answers import answers_match, normalize_answer


@dataclass(slots=True)
class _Group:
    answer: str  # the first answer of the group, as written
    normal: str  # its normal form
    count: int = 1


@dataclass(slots=True)
class AnswerTally:
    """One prompt's accepted final answers, grouped by equivalence."""

    k: int
    groups: list[_Group] = field(default_factory=list)

    @classmethod
    def seeded(cls, k: int, answers: Iterable[str | None]) -> AnswerTally:
        """A tally that already holds these accepted answers (stored by an earlier session)."""
        tally = cls(k)
        for answer in answers:
            tally.add(answer)
        return tally

    def add(self, answer: str | None) -> None:
        """Count an accepted sample's final answer (one that does not parse counts nothing)."""
        normal = normalize_answer(answer) if answer else None
        if answer is None or normal is None:
            return
        for group in self.groups:
            if group.normal == normal or answers_match(answer, group.answer):
                group.count += 1
                return
        self.groups.append(_Group(answer, normal))

    def add_result(self, result: SampleResult) -> None:
        if result.status is SampleStatus.ACCEPTED:
            self.add(result.final_answer)

    @property
    def best(self) -> int:
        """The size of the largest group of agreeing answers."""
        return max((g.count for g in self.groups), default=0)

    @property
    def reached(self) -> bool:
        return self.best >= self.k

    @property
    def needed(self) -> int:
        """Accepted, agreeing samples still missing."""
        return max(0, self.k - self.best)


#: Runs one sample: the item, and the cut its task will carry if it is cancelled.
RunOne = Callable[[WorkItem, SampleCut], Coroutine[Any, Any, SampleResult]]
#: Takes a sample that reached a final state (accepted, rejected, failed, or superseded).
Finished = Callable[[SampleResult], Awaitable[None]]


def superseded(run_id: str, item: WorkItem) -> SampleResult:
    """The row of a sample not generated because k samples of its prompt agreed."""
    return SampleResult(run_id=run_id, prompt_id=item.prompt.prompt_id,
                        sample_index=item.sample_index, status=SampleStatus.SUPERSEDED,
                        problem=item.prompt.text, reference_answer=item.prompt.reference_answer)


async def run_prompt(run_id: str, items: Sequence[WorkItem], tally: AnswerTally, *,
                     spare: int, run: RunOne, finished: Finished) -> None:
    """Run one prompt's pending samples (lowest index first) until k accepted ones agree.

    A sample cancelled for agreement is handed over by the runner itself (its `on_interrupt`,
    with the ledger rows of its calls); the samples never started are passed to `finished`
    as superseded. Cancelled from outside (an interrupt), every running sample is cancelled as
    interrupted and the cancellation goes on."""
    waiting = sorted(items, key=lambda i: i.sample_index)
    waiting.reverse()  # pop() takes the lowest index
    running: dict[asyncio.Task[SampleResult], SampleCut] = {}
    try:
        while not tally.reached and (waiting or running):
            while waiting and len(running) < tally.needed + spare:
                cut = SampleCut()
                running[asyncio.create_task(run(waiting.pop(), cut))] = cut
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            results = []
            for task in done:
                del running[task]
                results.append(task.result())
            for result in sorted(results, key=lambda r: r.sample_index):
                tally.add_result(result)
                await finished(result)
        for task, cut in running.items():  # spare streams: k agreed without them
            cut.reason = AbortReason.AGREEMENT
            task.cancel()
        for task in list(running):
            try:
                result = await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # an interrupt landed meanwhile
                continue  # cut: the runner handed the sample over, superseded
            del running[task]
            await finished(result)  # it ended before the cut reached it
        running.clear()
        for item in reversed(waiting):
            await finished(superseded(run_id, item))
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
