"""The rejection policy: continue, accept early, or reject, from validator verdicts.

Hard validators reject on any fault. Soft validators' scores multiply into the sample's utility
(over all checkpoints of the stage); the stage rejects when the utility falls below its
threshold. A complete final answer lets the stage stop early when `early_exit` is on.

A validator that cannot open its session for a sample raises `ValidatorStartError` out of the
policy: the sample cannot be judged as configured, so it must not pass as if it had been.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from foldem.core.errors import FoldemError
from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict

Mode = Literal["hard", "soft"]


class Action(StrEnum):
    CONTINUE = "continue"
    ACCEPT = "accept"  # early exit: the answer is complete, stop the stream
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    verdict: Verdict | None = None  # the verdict that decided a rejection
    utility: float = 1.0
    final_answer: str | None = None


class ValidatorStartError(FoldemError):
    """Validators whose `open` raised (a bug in the validator): `validators` names them, the
    message says what each raised."""

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        self.validators = [name for name, _ in failures]
        super().__init__("; ".join(
            f"validator {name!r} could not start judging ({type(exc).__name__}: {exc})"[:300]
            for name, exc in failures))


@dataclass(slots=True)
class ConfiguredValidator:
    validator: Validator
    mode: Mode = "hard"


@dataclass(slots=True)
class StagePolicy:
    """Judges one sample's stage, checkpoint by checkpoint."""

    validators: list[ConfiguredValidator]
    ctx: ProblemContext
    threshold: float = 0.5
    early_exit: bool = True
    utility: float = 1.0
    final_answer: str | None = None
    _sessions: list[tuple[ValidatorSession, ConfiguredValidator]] = field(default_factory=list)

    def __post_init__(self) -> None:
        failures: list[tuple[str, Exception]] = []
        for cv in self.validators:
            try:
                self._sessions.append((cv.validator.open(self.ctx), cv))
            except Exception as exc:  # noqa: BLE001 - contract: open never raises; enforce it
                failures.append((cv.validator.name, exc))
        if failures:  # every one of them, not only the first: one fix-up round for the author
            raise ValidatorStartError(failures)

    def judge(self, checkpoint: Checkpoint) -> Decision:
        worst_soft: Verdict | None = None
        for session, cv in self._sessions:
            try:
                verdict = session.feed(checkpoint)
            except Exception as exc:  # noqa: BLE001 - contract: feed never raises; enforce it
                verdict = _error_verdict(cv.validator, exc)
            if verdict.final_answer is not None and self.final_answer is None:
                self.final_answer = verdict.final_answer
            if verdict.score >= 1.0:
                continue
            if cv.mode == "hard":
                return Decision(Action.REJECT, verdict, 0.0, self.final_answer)
            self.utility *= max(0.0, verdict.score)
            if worst_soft is None or verdict.score < worst_soft.score:
                worst_soft = verdict
        if worst_soft is not None and self.utility < self.threshold:
            return Decision(Action.REJECT, worst_soft, self.utility, self.final_answer)
        if self.final_answer is not None and self.early_exit and not checkpoint.final:
            return Decision(Action.ACCEPT, None, self.utility, self.final_answer)
        return Decision(Action.CONTINUE, None, self.utility, self.final_answer)


def _error_verdict(validator: Validator, exc: Exception) -> Verdict:
    """A validator that raises is a bug in the validator, not a fault in the sample: record it
    as a skipped check (score 1) rather than killing the stream or the run."""
    return Verdict(validator=validator.name, score=1.0,
                   detail=f"validator error (skipped): {type(exc).__name__}: {exc}"[:300])
