"""The checkpoint splitter cuts a stream at step boundaries and fractions, incrementally."""

from __future__ import annotations

import pytest

from tests.support.tracedata import trace
from validators.base import MAX_STEP_CHARS
from validators.checkpoints import CheckpointSplitter


def _stream(text: str, size: int):
    for i in range(0, len(text), size):
        yield text[i:i + size]


@pytest.mark.parametrize("trace_id", ["gsm8k-gpt3-0-6b_verification", "processbench-gsm8k-0"])
@pytest.mark.parametrize("chunk", [1, 3, 17])
def test_steps_recovered_from_any_chunking(trace_id: str, chunk: int) -> None:
    t = trace(trace_id)
    text = t["separator"].join(t["steps"])
    sp = CheckpointSplitter(separator=t["separator"])
    cps = [cp for piece in _stream(text, chunk) for cp in sp.push(piece)]
    cps.append(sp.close())
    steps = [s.text for cp in cps for s in cp.steps]
    assert steps == [s for s in t["steps"] if s.strip()]
    assert [cp.index for cp in cps] == list(range(len(cps)))
    assert cps[-1].final and sp.text == text


def test_fraction_checkpoint_carries_tail() -> None:
    sp = CheckpointSplitter(separator="\n", every_step=False, fractions=[0.5], expected_tokens=10)
    out = []
    for word in ["a b\n", "c d", " e", " f", " g"]:
        out += sp.push(word, tokens=1)
    assert len(out) == 1  # fired once, at 5 of 10 tokens
    assert out[0].steps[0].text == "a b" and out[0].tail == "c d e f g"
    assert out[0].fraction == 0.5
    final = sp.close()
    assert final.final and [s.text for s in final.steps] == ["c d e f g"]


def test_endless_line_is_cut_into_bounded_steps() -> None:
    sp = CheckpointSplitter(separator="\n")
    cps = []
    for _ in range(50):
        cps += sp.push("x" * 1000)
    assert cps and all(len(s.text) <= MAX_STEP_CHARS for cp in cps for s in cp.steps)


def test_multi_char_separator_split_across_chunks() -> None:
    sp = CheckpointSplitter(separator="\n\n")
    cps = sp.push("one\n") + sp.push("\ntwo\n") + sp.push("\n")
    assert [s.text for cp in cps for s in cp.steps] == ["one", "two"]


@pytest.mark.parametrize("every_step", [True, False])
def test_one_huge_push_loses_nothing(every_step: bool) -> None:
    long_line = "".join(chr(ord("a") + i % 26) for i in range(3 * MAX_STEP_CHARS + 123))
    text = f"short\n{long_line}\n{long_line}x\nend"
    sp = CheckpointSplitter(separator="\n", every_step=every_step)
    cps = sp.push(text) + [sp.close()]
    steps = [s.text for cp in cps for s in cp.steps]
    assert all(len(s) <= MAX_STEP_CHARS for s in steps)
    assert "".join(steps) == text.replace("\n", "")
    assert [s.index for cp in cps for s in cp.steps] == list(range(len(steps)))


def test_a_step_without_separator_gets_a_checkpoint_every_step_tokens() -> None:
    """A runaway line (no separator for hundreds of tokens) is judged inside the line, every
    `step_tokens` tokens, with the text of the line so far as the checkpoint's tail."""
    sp = CheckpointSplitter(separator="\n", step_tokens=50)
    assert sp.push("Step 1: 2 + 2 = 4\n", 8) != []
    cps = [cp for _ in range(300) for cp in sp.push("7", 1)]
    assert [cp.tokens_so_far for cp in cps] == [58, 108, 158, 208, 258, 308]
    assert all(cp.tail and set(cp.tail) == {"7"} and not cp.steps for cp in cps)
    assert len(cps[-1].tail) == 300 and not cps[-1].final  # nothing cut from the step
    sp.push("\n", 1)
    assert sp.text == "Step 1: 2 + 2 = 4\n" + "7" * 300 + "\n"


def test_no_bounded_checkpoint_without_step_tokens_or_inside_short_steps() -> None:
    unbounded = CheckpointSplitter(separator="\n")
    assert [cp for _ in range(400) for cp in unbounded.push("7", 1)] == []
    short_steps = CheckpointSplitter(separator="\n", step_tokens=50)
    cps = [cp for _ in range(100) for cp in short_steps.push("a b c\n", 10)]
    assert all(not cp.tail for cp in cps)  # every step ends within the bound


def test_a_runaway_line_is_rejected_by_repetition_before_max_tokens() -> None:
    """A model writing one line of repeated digits: with the bounded step, the default
    repetition check sees the line while it grows and rejects it long before 1,434 chars."""
    from validators.base import ProblemContext
    from validators.registry import build

    session = build("repetition").open(ProblemContext(problem="What is 12 * 11?"))
    sp = CheckpointSplitter(separator="\n", step_tokens=64)
    fired_at = None
    for i in range(1434):
        for cp in sp.push("1", 1):
            if session.feed(cp).score < 1.0:
                fired_at = i
                break
        if fired_at is not None:
            break
    assert fired_at is not None and fired_at < 300


@pytest.mark.parametrize("separator", ["\n", "\n\n", "||"])
@pytest.mark.parametrize("chunk", [1, 2, 7, 4096])
def test_every_step_and_tail_knows_where_it_starts(separator: str, chunk: int) -> None:
    """`stage_text[step.start:][:len(step.text)] == step.text` for every step (blank steps,
    separators split across chunks, a runaway line cut in pieces) and for every tail."""
    t = trace("processbench-gsm8k-0")
    text = (separator.join(t["steps"]) + separator * 3 + "x" * (MAX_STEP_CHARS * 2 + 5)
            + separator + "  " + separator + "last words")
    sp = CheckpointSplitter(separator=separator, fractions=[0.3, 0.6], expected_tokens=len(text),
                            step_tokens=500)
    cps = [cp for piece in _stream(text, chunk) for cp in sp.push(piece, len(piece))]
    cps.append(sp.close())
    steps = [s for cp in cps for s in cp.steps]
    assert [s.index for s in steps] == list(range(len(steps)))
    for s in steps:
        assert text[s.start:s.start + len(s.text)] == s.text
    assert [s.start for s in steps] == sorted(s.start for s in steps)
    tails = [cp for cp in cps if cp.tail]
    assert tails  # the fractions and the step-token bound cut inside steps
    for cp in tails:
        assert text[cp.tail_start:cp.tail_start + len(cp.tail)] == cp.tail
