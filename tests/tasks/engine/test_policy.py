"""The policy: hard faults reject, soft scores multiply into the utility, answers stop early."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.engine.policy import Action, ConfiguredValidator, StagePolicy, ValidatorStartError
from validators.base import Checkpoint, ProblemContext, Step, Validator, ValidatorSession, Verdict


@dataclass
class _Scripted(ValidatorSession):
    name: str
    verdicts: list[Verdict | Exception]

    def feed(self, checkpoint: Checkpoint) -> Verdict:
        v = self.verdicts[checkpoint.index]
        if isinstance(v, Exception):
            raise v
        return v


class _Fake(Validator):
    name = "fake"
    description = "scripted verdicts"

    def __init__(self, verdicts: list[Verdict | Exception]) -> None:
        super().__init__()
        self.verdicts = verdicts

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _Scripted(self.name, self.verdicts)


OK = Verdict("fake")


def _cp(i: int, final: bool = False) -> Checkpoint:
    return Checkpoint(index=i, steps=(Step(i, f"step {i}"),), final=final)


def _policy(*specs: tuple[list[Verdict | Exception], str], threshold: float = 0.5,
            early_exit: bool = True) -> StagePolicy:
    return StagePolicy([ConfiguredValidator(_Fake(v), m) for v, m in specs],
                       ProblemContext("p"), threshold=threshold, early_exit=early_exit)


def test_hard_fault_rejects_at_once() -> None:
    bad = Verdict("fake", 0.0, "arithmetic_error", "2+2=5", step_index=1)
    p = _policy(([OK, bad], "hard"))
    assert p.judge(_cp(0)).action is Action.CONTINUE
    d = p.judge(_cp(1))
    assert d.action is Action.REJECT and d.verdict is bad


@pytest.mark.parametrize(("scores", "threshold", "rejected_at"), [
    ([0.8, 0.8, 0.8], 0.5, None),  # 0.8^3 = 0.512 stays above 0.5
    ([0.8, 0.8, 0.8, 0.8], 0.5, 3),  # 0.41 falls below at the fourth
    ([0.6, 0.6, 1.0], 0.5, 1),  # 0.36 < 0.5 at the second
    ([0.9], 0.95, 0),
])
def test_soft_scores_multiply(scores: list[float], threshold: float,
                              rejected_at: int | None) -> None:
    verdicts: list[Verdict | Exception] = [
        Verdict("fake", s, None if s == 1 else "soft") for s in scores]
    p = _policy((verdicts, "soft"), threshold=threshold)
    actions = [p.judge(_cp(i)).action for i in range(len(scores))]
    first_reject = next((i for i, a in enumerate(actions) if a is Action.REJECT), None)
    assert first_reject == rejected_at


def test_final_answer_accepts_early_only_when_enabled() -> None:
    answered = Verdict("fake", final_answer="18")
    assert _policy(([answered], "hard")).judge(_cp(0)).action is Action.ACCEPT
    assert _policy(([answered], "hard"), early_exit=False).judge(_cp(0)).action is Action.CONTINUE


def test_validator_exception_is_contained() -> None:
    p = _policy(([RuntimeError("bug")], "hard"))
    d = p.judge(_cp(0))
    assert d.action is Action.CONTINUE


class _BrokenOpen(Validator):
    name = "broken_open"
    description = "raises in open()"

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        raise RuntimeError("bug in open")


def test_validator_open_exception_is_raised_with_every_culprit() -> None:
    # A validator that cannot start would leave the sample unchecked: the policy refuses to
    # judge (the runner fails the sample) rather than let it pass as if checked.
    with pytest.raises(ValidatorStartError) as info:
        StagePolicy([ConfiguredValidator(_BrokenOpen(), "hard"),
                     ConfiguredValidator(_Fake([Verdict("fake", 0.0, "bad")]), "hard"),
                     ConfiguredValidator(_BrokenOpen(), "soft")], ProblemContext("p"))
    assert info.value.validators == ["broken_open", "broken_open"]
    assert "'broken_open' could not start judging (RuntimeError: bug in open)" in str(info.value)
