"""Early exit by agreement (tasks/engine/agreement.py): answers grouped by equivalence, and a
prompt's samples scheduled so that, without spare streams, exactly the samples a
one-after-another run needs are generated, up to k at once; spare streams still running when
k agree are cut as such, and the samples never started come back superseded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from tasks.engine.agreement import AnswerTally, run_prompt
from tasks.engine.runner import SampleCut
from tasks.records.models import AbortReason, Prompt, SampleResult, SampleStatus, WorkItem

#: A sample's outcome: an accepted final answer, or None for a rejected sample.
Outcome = str | None


def test_tally_groups_equivalent_answers_and_ignores_unparseable_ones() -> None:
    tally = AnswerTally(k=3)
    tally.add("18")
    tally.add("$18.00")  # the same number, written otherwise
    assert (tally.best, tally.needed, tally.reached) == (2, 1, False)
    tally.add("19")
    tally.add(None)
    tally.add("")
    assert (tally.best, tally.needed) == (2, 1)
    tally.add("\\frac{36}{2}")  # equivalent by the comparison the validators use
    assert tally.reached and tally.needed == 0
    assert AnswerTally.seeded(2, ["0.5", "1/2"]).reached


def _item(index: int) -> WorkItem:
    return WorkItem(prompt=Prompt(prompt_id="p", text="problem"), sample_index=index)


def _result(item: WorkItem, outcome: Outcome) -> SampleResult:
    accepted = outcome is not None
    return SampleResult(run_id="r", prompt_id="p", sample_index=item.sample_index,
                        status=SampleStatus.ACCEPTED if accepted else SampleStatus.REJECTED,
                        problem="problem", final_answer=outcome)


def sequential(outcomes: Sequence[Outcome], k: int, seeds: Sequence[str] = ()) -> list[int]:
    """The samples a one-after-another run generates (what the bench used to do)."""
    tally, run = AnswerTally.seeded(k, seeds), []
    for index, outcome in enumerate(outcomes):
        if tally.reached:
            break
        run.append(index)
        if outcome is not None:
            tally.add(outcome)
    return run


class Recorder:
    """Runs samples with scripted outcomes and durations; records what ran, at once, and how
    each sample ended (finished, cut for agreement, interrupted)."""

    def __init__(self, outcomes: Sequence[Outcome], durations: Sequence[float]) -> None:
        self.outcomes, self.durations = outcomes, durations
        self.started: list[int] = []
        self.running = self.most_at_once = 0
        self.cut: dict[int, AbortReason] = {}
        self.finished: list[SampleResult] = []

    async def run(self, item: WorkItem, cut: SampleCut) -> SampleResult:
        self.started.append(item.sample_index)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.durations[item.sample_index])
        except asyncio.CancelledError:
            self.cut[item.sample_index] = cut.reason
            raise
        finally:
            self.running -= 1
        return _result(item, self.outcomes[item.sample_index])

    async def done(self, result: SampleResult) -> None:
        self.finished.append(result)


def _go(rec: Recorder, n: int, k: int, spare: int = 0, seeds: Sequence[str] = ()) -> None:
    asyncio.run(run_prompt("r", [_item(i) for i in range(n)], AnswerTally.seeded(k, seeds),
                           spare=spare, run=rec.run, finished=rec.done))


@pytest.mark.parametrize("seed", range(40))
def test_without_spare_exactly_the_sequential_samples_run_and_none_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    n, k = rng.randint(2, 8), rng.randint(2, 3)
    outcomes = [rng.choice(["4", "4", "5", None]) for _ in range(n)]
    rec = Recorder(outcomes, [rng.uniform(0.001, 0.02) for _ in range(n)])
    _go(rec, n, k)
    assert sorted(rec.started) == sequential(outcomes, k)
    assert rec.most_at_once <= k and not rec.cut
    statuses = {r.sample_index: r.status for r in rec.finished}
    assert sorted(statuses) == list(range(n))  # every sample handed over, once
    assert {i for i, s in statuses.items() if s is SampleStatus.SUPERSEDED} == (
        set(range(n)) - set(rec.started))


def test_spare_streams_run_ahead_and_are_cut_for_agreement() -> None:
    # Samples 0 and 1 agree quickly; 2 and 3 (the spare ones) are still streaming.
    rec = Recorder(["7", "7", "7", "8", "7"], [0.01, 0.02, 5, 5, 5])
    _go(rec, 5, 2, spare=2)
    assert sorted(rec.started) == [0, 1, 2, 3] and rec.most_at_once == 4
    assert rec.cut == {2: AbortReason.AGREEMENT, 3: AbortReason.AGREEMENT}
    # The runner hands over the cut ones itself (with their calls); the never-started one
    # comes back superseded.
    assert [(r.sample_index, r.status) for r in rec.finished] == [
        (0, SampleStatus.ACCEPTED), (1, SampleStatus.ACCEPTED), (4, SampleStatus.SUPERSEDED)]


def test_stored_answers_seed_a_resumed_prompt() -> None:
    rec = Recorder(["3", "3", "3", "3"], [0.01] * 4)
    _go(rec, 4, 3, seeds=["3", "3.0"])  # two agreeing answers stored before a crash
    assert rec.started == [0]  # one more is enough
    rec = Recorder(["3"] * 4, [0.01] * 4)
    _go(rec, 4, 2, seeds=["3", "3"])
    assert rec.started == [] and all(r.status is SampleStatus.SUPERSEDED for r in rec.finished)


def test_an_interrupt_cancels_the_running_samples_as_interrupted() -> None:
    rec = Recorder(["1", "1", "1"], [5, 5, 5])

    async def main() -> None:
        task = asyncio.create_task(run_prompt("r", [_item(i) for i in range(3)],
                                              AnswerTally(2), spare=0, run=rec.run,
                                              finished=rec.done))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert rec.cut == {0: AbortReason.INTERRUPTED, 1: AbortReason.INTERRUPTED}
    assert rec.finished == []  # nothing final: the prompt resumes where it was
