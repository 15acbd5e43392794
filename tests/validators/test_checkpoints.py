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
