"""Rejecting in flight keeps exactly the samples that filtering afterwards keeps (DESIGN.md: "if
validators fire only on real faults, early rejection does not bias the retained set").

For every shared trace and the default solve set: in flight, the text is streamed token by token
(o200k) through a splitter and the policy judges each checkpoint, stopping at the first REJECT
(early exit off); post hoc, the whole text is pushed at once through a fresh splitter without
step checkpoints, so one final checkpoint holds every step, judged once. The kept sets must be
identical, for each way of placing in-flight checkpoints: every step; every step plus fraction
cuts that fall mid-step (tails); the paper's single cut at half the expected length. And where
both reject with the same verdict (validator, reason, step), they point at the same text: the
rejection evidence an analyst reads does not depend on how the stream was cut.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache

import pytest

from foldem.core.traces import TokenChunks, Trace, tokenize_chunks
from tasks.engine.policy import Action, ConfiguredValidator, Decision, StagePolicy
from tests.support.tracedata import TRACE_FILES, traces
from validators.base import Checkpoint, ProblemContext
from validators.checkpoints import CheckpointSplitter
from validators.defaults import DEFAULT_SOLVE_VALIDATORS
from validators.registry import build


@dataclass(frozen=True)
class Mode:
    every_step: bool
    fractions: tuple[float, ...] = ()


MODES = {
    "every_step": Mode(True),
    "every_step_and_quarters": Mode(True, (0.25, 0.5, 0.75)),
    "paper_half_only": Mode(False, (0.5,)),
}


@dataclass(frozen=True)
class Sample:
    trace: Trace
    chunks: TokenChunks
    ctx: ProblemContext


@cache
def samples(name: str) -> tuple[Sample, ...]:
    loaded = [Trace.model_validate(t) for t in traces(name)]
    chunks = [tokenize_chunks(t.text) for t in loaded]
    expected = int(statistics.median(c.total_tokens for c in chunks))  # stage-level, as a spec
    return tuple(Sample(t, c, ProblemContext(problem=t.problem, reference_answer=t.reference_answer,
                                             expected_tokens=expected))
                 for t, c in zip(loaded, chunks, strict=True))


@cache
def default_set() -> tuple[ConfiguredValidator, ...]:
    """Configured once, as the runner does per run; each policy opens its own sessions."""
    return tuple(ConfiguredValidator(build(name, params), mode)  # type: ignore[arg-type]
                 for name, params, mode in DEFAULT_SOLVE_VALIDATORS)


def first_rejection(sample: Sample, checkpoints: list[Checkpoint] | None,
                    mode: Mode | None = None) -> Decision | None:
    """Judge the given checkpoints, or stream the sample in `mode`; the first REJECT, if any."""
    policy = StagePolicy(list(default_set()), sample.ctx, early_exit=False)
    if checkpoints is None:
        assert mode is not None
        checkpoints = _streamed(sample, mode)
    for cp in checkpoints:
        decision = policy.judge(cp)
        if decision.action is Action.REJECT:
            return decision
    return None


def _streamed(sample: Sample, mode: Mode) -> list[Checkpoint]:
    # A list, not a generator, only for brevity: the policy sees the checkpoints in order and
    # nothing after a rejection is judged (first_rejection returns there).
    splitter = CheckpointSplitter(separator=sample.trace.separator, every_step=mode.every_step,
                                  fractions=list(mode.fractions),
                                  expected_tokens=sample.ctx.expected_tokens)
    out = [cp for text, n in zip(*sample.chunks, strict=True) for cp in splitter.push(text, n)]
    return [*out, splitter.close()]


def post_hoc_checkpoints(sample: Sample) -> list[Checkpoint]:
    splitter = CheckpointSplitter(separator=sample.trace.separator, every_step=False)
    checkpoints = [*splitter.push(sample.trace.text, sample.chunks.total_tokens), splitter.close()]
    assert len(checkpoints) == 1 and checkpoints[0].final  # one checkpoint, every step in it
    return checkpoints


@cache
def post_hoc_decisions(name: str) -> dict[str, Decision | None]:
    return {s.trace.id: first_rejection(s, post_hoc_checkpoints(s)) for s in samples(name)}


def post_hoc_kept(name: str) -> frozenset[str]:
    return frozenset(tid for tid, d in post_hoc_decisions(name).items() if d is None)


def _span_mismatches(sample: Sample, in_flight: Decision | None,
                     post_hoc: Decision | None) -> list[str]:
    """How the two rejections' spans disagree, when both are the same verdict; every span must
    lie in the text. Empty: they agree (or are not the same verdict)."""
    found = [f"{sample.trace.id}: span {d.verdict.span} outside the text"
             for d in (in_flight, post_hoc) if d is not None and d.verdict is not None
             and d.verdict.span is not None
             and not 0 <= d.verdict.span[0] < d.verdict.span[1] <= len(sample.trace.text)]
    if in_flight is None or post_hoc is None or in_flight.verdict is None or (
            post_hoc.verdict is None):
        return found
    a, b = in_flight.verdict, post_hoc.verdict
    if (a.validator, a.reason, a.step_index) == (b.validator, b.reason, b.step_index) and (
            a.span != b.span):
        found.append(f"{sample.trace.id}: {a.validator} ({a.reason}) points at {a.span} in "
                     f"flight, {b.span} post hoc")
    return found


def _describe(decision: Decision | None) -> str:
    if decision is None or decision.verdict is None:
        return "kept"
    v = decision.verdict
    return f"rejected by {v.validator} ({v.reason}, step {v.step_index}): {v.detail[:120]}"


@pytest.mark.parametrize("mode_name", sorted(MODES))
@pytest.mark.parametrize("file", sorted(TRACE_FILES))
def test_in_flight_keeps_exactly_what_post_hoc_keeps(file: str, mode_name: str) -> None:
    mode = MODES[mode_name]
    in_flight = {s.trace.id: first_rejection(s, None, mode) for s in samples(file)}
    kept_in_flight = frozenset(tid for tid, d in in_flight.items() if d is None)
    kept_post_hoc = post_hoc_kept(file)
    post_hoc = post_hoc_decisions(file)
    spans = [m for s in samples(file)
             for m in _span_mismatches(s, in_flight[s.trace.id], post_hoc[s.trace.id])]
    assert not spans, "\n".join(spans[:20])
    # Not vacuous: rejections with a span, judged the same way, were compared.
    assert any(d is not None and d.verdict is not None and d.verdict.span is not None
               and post_hoc[tid] is not None for tid, d in in_flight.items())
    if kept_in_flight != kept_post_hoc:
        differing = sorted(kept_in_flight ^ kept_post_hoc)
        lines = [f"{tid}: in flight {_describe(in_flight[tid])}; "
                 f"post hoc {_describe(post_hoc[tid])}" for tid in differing[:20]]
        pytest.fail(f"{len(differing)} trace(s) of {file} judged differently in flight "
                    f"({mode_name}) and post hoc:\n" + "\n".join(lines))
    # Not vacuous: the set rejects some traces of every file and keeps most.
    assert 0 < len(kept_post_hoc) < len(samples(file))


def test_default_set_rejects_at_most_3_percent_of_clean_traces() -> None:
    """The false-rejection bound stated in docs/VALIDATORS.md: traces with no wrong step
    (`first_error_step == -1`) the default set rejects, over all shared files."""
    clean = rejected = 0
    for name in TRACE_FILES:
        kept = post_hoc_kept(name)
        ids = [s.trace.id for s in samples(name) if s.trace.first_error_step == -1]
        clean += len(ids)
        rejected += sum(tid not in kept for tid in ids)
    assert clean > 0
    assert rejected / clean <= 0.03, f"{rejected} of {clean} clean traces rejected"
