"""Hostile model output, fuzzed with hypothesis: every registered validator, the checkpoint
splitter and the SSE stream parser take random and adversarial text in random chunkings, and
nothing escapes — no exception (validators' `feed` must never raise), every checkpoint judged
within its time budget (50 ms, asserted with a factor of 5 for loaded machines), every fault's
span inside the text.

The fast variant runs in `make test`; `pytest -m slow tests/validators/test_fuzz.py` runs the same
properties with many more examples (FOLDEM_FUZZ_EXAMPLES overrides the count).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foldem.core.chat_stream import ChunkReading
from foldem.core.errors import EndpointError
from tasks.endpoints.stream_call import parse_sse
from validators.base import MAX_STEP_CHARS, ProblemContext, Validator, Verdict
from validators.checkpoints import CheckpointSplitter
from validators.registry import available, build

BUDGET_S = 0.05 * 5
FAST_EXAMPLES = 40
SLOW_EXAMPLES = int(os.environ.get("FOLDEM_FUZZ_EXAMPLES", "600"))


def _settings(examples: int) -> settings:
    # No deadline: the per-checkpoint budget is asserted directly. No database: nothing is
    # written into the checkout.
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- hostile text ------------------------------------------------------------------------------

#: Pieces that steer random text into the validators' parsers: numbers of every shape,
#: operators and look-alikes, calculator annotations, LaTeX, answer markers, refusals.
ATOMS = [
    "0", "7", "12", "3.5", "-4", "1,000", "999999999999999999999", "1e308", "1e-308", "0.000",
    "inf", "nan", "NaN", "½", "²", "١٢", "３", "$", "%", "=", "==", "+", "-", "−", "*", "×",
    "x", "/", "÷", "^", "**", "(", ")", "[", "]", "{", "}", "<<", ">>", "<<2*3=6>>", "<<1/0=",
    "\\frac{", "\\boxed{", "\\(", "\\)", "\\sqrt{", "^{", "####", "#### 42", "A:", "The answer is",
    "Final answer:", "so", "therefore", "he has", "apples", "I cannot", "As an AI", "Step 1:",
    " ", "  ", "\n", "\n\n", "\t", ".", ",", ":", "\x00", "\ufeff", "\u202e", "\ud800", "🙂",
    "9^9^9^9", "2**2**2**2**2", "(" * 50, ")" * 50, "1" * 400, "=1" * 100,
]

math_soup = st.lists(st.sampled_from(ATOMS), max_size=120).map("".join)
any_unicode = st.text(alphabet=st.characters(exclude_categories=()), max_size=400)
repeated = st.tuples(st.sampled_from(ATOMS + ["He has 3 apples. ", "2 + 2 = 5\n"]),
                     st.integers(1, 400)).map(lambda p: p[0] * p[1])
hostile_text = st.one_of(math_soup, any_unicode, repeated,
                         st.lists(st.one_of(math_soup, repeated), max_size=6).map("".join))


@st.composite
def chunked(draw: st.DrawFn, text: st.SearchStrategy[str] = hostile_text) -> list[str]:
    """A text cut into random chunks, as a stream delivers it."""
    body = draw(text)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=40))))
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


contexts = st.builds(
    ProblemContext,
    problem=st.one_of(st.just("Tom has 3 apples and buys 4 more. How many apples now?"),
                      hostile_text),
    reference_answer=st.one_of(st.none(), st.sampled_from(["7", "-3", "1,000", "0.5", "1/2"]),
                               st.text(max_size=30)),
    expected_tokens=st.one_of(st.none(), st.integers(1, 2000)),
)
splitters = st.fixed_dictionaries({
    "separator": st.sampled_from(["\n", "\n\n", ". ", "\n\n\n"]),
    "fractions": st.sampled_from([[], [0.5], [0.25, 0.5, 0.75]]),
})

VALIDATORS = sorted(available())
_BUILT: dict[str, Validator] = {}


def validator(name: str) -> Validator:
    if name not in _BUILT:
        _BUILT[name] = build(name)
    return _BUILT[name]


# --- validators --------------------------------------------------------------------------------

def _check_validator(name: str, chunks: list[str], ctx: ProblemContext,
                     split: dict[str, Any]) -> None:
    v = validator(name)
    kind = sorted(v.stage_kinds)[0]
    ctx = ProblemContext(problem=ctx.problem, stage=kind, reference_answer=ctx.reference_answer,
                         expected_tokens=ctx.expected_tokens)
    session = v.open(ctx)
    splitter = CheckpointSplitter(separator=split["separator"], every_step=True,
                                  fractions=split["fractions"],
                                  expected_tokens=ctx.expected_tokens)
    checkpoints = [cp for chunk in chunks for cp in splitter.push(chunk, max(1, len(chunk) // 4))]
    checkpoints.append(splitter.close())
    text = "".join(chunks)
    for cp in checkpoints:
        started = time.perf_counter()
        verdict = session.feed(cp)  # must not raise: the policy would hide a crash as a skip
        elapsed = time.perf_counter() - started
        assert elapsed < BUDGET_S, f"{name}: {elapsed * 1000:.0f} ms at checkpoint {cp.index}"
        assert isinstance(verdict, Verdict) and verdict.validator == name
        assert 0.0 <= verdict.score <= 1.0, verdict
        if verdict.score < 1.0:
            assert verdict.reason, f"{name}: a fault without a reason code: {verdict}"
            if type(v).reason_codes:
                assert verdict.reason in type(v).reason_codes, verdict.reason
        if verdict.span is not None:  # the evidence lies in the text streamed
            start, end = verdict.span
            assert 0 <= start < end <= len(text), f"{name}: span {verdict.span} of {len(text)}"


@pytest.mark.parametrize("name", VALIDATORS)
@_settings(FAST_EXAMPLES)
@given(chunks=chunked(), ctx=contexts, split=splitters)
def test_validator_survives_hostile_stream(name: str, chunks: list[str], ctx: ProblemContext,
                                           split: dict[str, Any]) -> None:
    _check_validator(name, chunks, ctx, split)


@pytest.mark.slow
@pytest.mark.parametrize("name", VALIDATORS)
@_settings(SLOW_EXAMPLES)
@given(chunks=chunked(), ctx=contexts, split=splitters)
def test_validator_survives_hostile_stream_deep(name: str, chunks: list[str],
                                                ctx: ProblemContext,
                                                split: dict[str, Any]) -> None:
    _check_validator(name, chunks, ctx, split)


# --- the checkpoint splitter -------------------------------------------------------------------

def _check_splitter(chunks: list[str], split: dict[str, Any], expected_tokens: int | None
                    ) -> None:
    sep = split["separator"]
    text = "".join(chunks)
    splitter = CheckpointSplitter(separator=sep, fractions=split["fractions"],
                                  expected_tokens=expected_tokens)
    checkpoints = []
    for chunk in chunks:
        started = time.perf_counter()
        checkpoints += splitter.push(chunk, 1)
        assert time.perf_counter() - started < BUDGET_S
    checkpoints.append(splitter.close())
    assert splitter.text == text and splitter.tokens == len(chunks)
    assert [cp.index for cp in checkpoints] == list(range(len(checkpoints)))
    assert [cp.final for cp in checkpoints] == [False] * (len(checkpoints) - 1) + [True]
    tokens = [cp.tokens_so_far for cp in checkpoints]
    assert tokens == sorted(tokens)
    steps = [s for cp in checkpoints for s in cp.steps]
    assert [s.index for s in steps] == list(range(len(steps)))
    if all(len(part) <= MAX_STEP_CHARS for part in text.split(sep)):
        # Whatever the chunking, the steps are the text's non-blank parts, in order.
        assert [s.text for s in steps] == [p for p in text.split(sep) if p.strip()]
    crossed = [f for f in split["fractions"]
               if expected_tokens and int(f * expected_tokens) <= len(chunks)]
    assert sum(1 for cp in checkpoints if cp.tail or (cp.fraction is not None and not cp.steps
                                                      and not cp.final)) <= len(crossed)


@_settings(FAST_EXAMPLES * 8)
@given(chunks=chunked(), split=splitters, expected=st.one_of(st.none(), st.integers(1, 300)))
def test_splitter_is_chunking_invariant(chunks: list[str], split: dict[str, Any],
                                        expected: int | None) -> None:
    _check_splitter(chunks, split, expected)


@pytest.mark.slow
@_settings(SLOW_EXAMPLES * 8)
@given(chunks=chunked(), split=splitters, expected=st.one_of(st.none(), st.integers(1, 300)))
def test_splitter_is_chunking_invariant_deep(chunks: list[str], split: dict[str, Any],
                                             expected: int | None) -> None:
    _check_splitter(chunks, split, expected)


def test_a_line_that_never_ends_is_handed_on_in_bounded_time() -> None:
    splitter = CheckpointSplitter(separator="\n")
    worst, steps = 0.0, 0
    for _ in range(2_000):  # 2 MB without a separator, in 1 KB chunks
        started = time.perf_counter()
        steps += sum(len(cp.steps) for cp in splitter.push("7=" * 512, 1))
        worst = max(worst, time.perf_counter() - started)
    assert steps >= 2_000_000 // MAX_STEP_CHARS - 1
    assert all(len(s.text) <= MAX_STEP_CHARS for s in splitter.close().steps)
    assert worst < BUDGET_S


# --- the SSE stream parser ---------------------------------------------------------------------

class FakeBody:
    """The HTTP body parse_sse reads: the lines, LF-terminated, in 7-byte pieces (so lines,
    CRLFs and UTF-8 characters are cut across pieces)."""

    def __init__(self, lines: list[str]) -> None:
        self.body = "".join(line + "\n" for line in lines).encode()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), 7):
            yield self.body[i:i + 7]


class FakeResponse:
    """What parse_sse reads: an object whose `http_response.aiter_bytes()` yields the body."""

    def __init__(self, lines: list[str]) -> None:
        self.http_response = FakeBody(lines)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(
                                ["id", "choices", "delta", "content", "usage", "error",
                                 "completion_tokens", "prompt_tokens", "finish_reason", "index",
                                 "message"]), inner, max_size=5)),
    max_leaves=20)


def _chunk_line(content: str, n: int) -> str:
    return "data: " + json.dumps({"id": "c", "choices": [{"index": 0,
                                                          "delta": {"content": content}}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": n}})


sse_lines = st.one_of(
    st.text(max_size=80),
    st.text(max_size=80).map(lambda t: "data: " + t),
    json_values.map(lambda v: "data: " + json.dumps(v)),
    st.sampled_from(["", ":", ": keep-alive", "event: error", "data:", "data: [DONE]",
                     "data:[DONE]", "data: {}", 'data: {"error": {"message": "boom"}}',
                     'data: {"choices": null}', 'data: {"choices": [{"delta": null}]}',
                     'data: {"usage": {"completion_tokens": "many"}}', "retry: 10"]),
    st.tuples(hostile_text, st.integers(-5, 10**6)).map(lambda p: _chunk_line(*p)),
)


async def _parse(lines: list[str]) -> tuple[list[ChunkReading], EndpointError | None]:
    out: list[ChunkReading] = []
    try:
        async for chunk in parse_sse(FakeResponse(lines), "fuzz"):
            out.append(chunk)
    except EndpointError as exc:  # the one error a broken stream may raise
        return out, exc
    return out, None


def _check_parser(lines: list[str]) -> None:
    chunks, error = asyncio.run(_parse(lines))
    assert all(isinstance(c, ChunkReading) for c in chunks)
    # The lines as SSE reads them: LF, CRLF and a lone CR each end a line.
    wire = re.split(rb"\r\n|\r|\n", "".join(x + "\n" for x in lines).encode())
    data = [x for x in wire if x.startswith(b"data:")]
    if error is None:
        # It stopped at [DONE] or at the end; every data line before that became a chunk.
        done = next((i for i, x in enumerate(data) if x[5:].strip() == b"[DONE]"), len(data))
        assert len(chunks) == done
    else:
        assert error.endpoint == "fuzz" and error.message


@_settings(FAST_EXAMPLES * 8)
@given(lines=st.lists(sse_lines, max_size=30))
def test_sse_parser_yields_chunks_or_one_clear_error(lines: list[str]) -> None:
    _check_parser(lines)


@pytest.mark.slow
@_settings(SLOW_EXAMPLES * 8)
@given(lines=st.lists(sse_lines, max_size=60))
def test_sse_parser_yields_chunks_or_one_clear_error_deep(lines: list[str]) -> None:
    _check_parser(lines)


def _no_surrogates(text: str) -> str:
    return "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)


@_settings(FAST_EXAMPLES * 4)
@given(parts=chunked(hostile_text.map(_no_surrogates)))
def test_well_formed_hostile_content_arrives_intact(parts: list[str]) -> None:
    lines = [_chunk_line(p, i + 1) for i, p in enumerate(parts)] + ["data: [DONE]"]
    chunks, error = asyncio.run(_parse(lines))
    assert error is None
    assert "".join(c.text for c in chunks) == "".join(parts)


def test_a_lone_surrogate_escape_ends_the_call_with_a_clear_error() -> None:
    """`"\\ud800"` is valid JSON syntax but no text: the stream parser refuses the event (the
    sample fails with this reason) rather than passing on a string that cannot be encoded."""
    chunks, error = asyncio.run(_parse([_chunk_line("ok", 1), _chunk_line("\ud800", 2)]))
    assert len(chunks) == 1 and error is not None
    assert "malformed stream event" in error.message


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_a_huge_event_is_parsed_in_bounded_time() -> None:
    line = _chunk_line("9" * 2_000_000, 1)
    assert _timed(lambda: _check_parser([line, "data: [DONE]"])) < 2.0
