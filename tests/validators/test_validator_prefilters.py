"""The validators' fast paths find exactly what the plain scans they stand in for find.

Each shortcut (a substring test before a regex, a scan started near the relations only, a
lowercased text instead of re.IGNORECASE, a stride in the periodicity test, chunks kept in a
list by the splitter) is checked here against the straightforward version on made-up text
built from the characters that matter to it, including the Unicode letters re.IGNORECASE
matches with ASCII ones (ı, İ, ſ, the Kelvin sign).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from validators.base import Checkpoint, ProblemContext, Step
from validators.builtin import hallucination, repetition
from validators.checkpoints import CheckpointSplitter
from validators.lib import answer_markers, answers, equations
from validators.registry import build

ODD = ["ı", "İ", "ſ", "\u212a"]  # i, i, s, k under re.IGNORECASE


def _text(pieces: list[str], max_size: int = 40) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


ARITHMETIC_PIECES = [
    *"0123456789 \t+-*/^×÷·=≈~$.,{}()[]\\xXabnkqutimesdvcfrlghpo\n?'\"<>:;!%",
    "\\approx", "\\approxb", "\\times", "\\frac", "\\quad", "\\left(", "\\right)", "\\,",
    "{,}", " = ", "mod", "MOD", "base 8", "o'clock", "binary", "\\equiv", "≡", *ODD,
]


@settings(max_examples=400, deadline=None)
@given(_text(ARITHMETIC_PIECES))
def test_relation_runs_are_the_runs_a_full_scan_finds(text: str) -> None:
    full_scan = [(r.start(), r.end()) for r in equations._RUN.finditer(text)
                 if equations._RELATION.search(r.group())]
    assert equations.relation_runs(text) == full_scan


# Relations that are in no run, far apart or dense: a scan restarted from the start (or from a
# distant barrier) for each would be quadratic (5 s on the first of these before it was fixed).
@pytest.mark.parametrize("text", [
    "\\approxq" * 2500, "c=" + "c" * 19_990 + "=", "=q" * 10_000, "q\\approxq 1" * 1600,
    "= a" * 6000, "1" * 19_999 + "=",
])
def test_relation_runs_stay_linear_on_hostile_text(text: str) -> None:
    started = time.process_time()
    equations.relation_runs(text)
    assert time.process_time() - started < 0.25  # 50 ms per checkpoint, with a generous factor


@settings(max_examples=400, deadline=None)
@given(_text(ARITHMETIC_PIECES))
def test_skip_step_prefilter_agrees_with_the_regex(text: str) -> None:
    assert equations._skip_step(text) == (equations._SKIP_STEP.search(text) is not None)


PHRASE_PIECES = [
    "as an AI", "As An ai", "I'm sorry, but", "I’m sorry, but", "let me know if", "LET ME",
    " know", " if", "typo in the problem", "cannot be determined", "I don't know", "a", "i",
    "s", " ", "  ", "\n", ",", "'", "’", "x", *ODD, "anſwer", "AS AN AI", "numerical methods",
]


@settings(max_examples=400, deadline=None)
@given(_text(PHRASE_PIECES, max_size=12))
def test_lowercased_phrase_search_agrees_with_ignorecase(text: str) -> None:
    validator = build("hallucination")
    assert isinstance(validator, hallucination.Hallucination)
    assert validator.regex is not None and validator.lowered is not None
    expected = validator.regex.search(text)
    found = hallucination._search(validator.regex, validator.lowered, text)
    assert found == (expected.span() if expected is not None else None)


def test_custom_patterns_keep_the_ignorecase_regex() -> None:
    validator = build("hallucination", {"patterns": [r"[A-Z]{3} ERROR"]})
    assert isinstance(validator, hallucination.Hallucination)
    assert validator.lowered is None
    session = validator.open(ProblemContext(problem="What is 2 + 2?"))
    verdict = session.feed(Checkpoint(0, (Step(0, "so abc error here"),)))
    assert verdict.reason == "hallucination_phrase"


PERIODIC_PIECES = ["1", "2", "7", ".", "ab", "abc", "x", " ", "12", "27", "\n"]


@settings(max_examples=400, deadline=None)
@given(_text(PERIODIC_PIECES, max_size=120), st.sampled_from([30, 31, 48, 64]))
def test_periodicity_prefilter_never_misses_a_run(text: str, min_run: int) -> None:
    has_run = any(len(m.group()) >= min_run for m in repetition._PERIODIC.finditer(text))
    if has_run:
        assert repetition._may_be_periodic(text, min_run)


ANSWER_PIECES = [
    "the answer is 5.", "THE ANSWER IS 7.", "the anſwer is 3.", "The final answer is: 9",
    "Answer: 12", "A: 4", "#### 72", "#### Part 1", "\\boxed{3}", "\n", " ", ":", "#",
    "nswer", "so ", "x", "my answer is 2.", "**Final Answer**", "the correct option is (B)",
    "42 is the answer", "Answer - 5", "ANSWER", "ſ",
]


def _text_matches_unfiltered(text: str) -> list[answers.AnswerMatch]:
    """answer_markers._text_matches with every row of the table tried (no prefilter)."""
    everything = tuple(replace(row, needs=("",)) for row in answer_markers.MARKERS)
    original = answer_markers.MARKERS
    answer_markers.MARKERS = everything
    try:
        return answer_markers._text_matches(text)
    finally:
        answer_markers.MARKERS = original


@settings(max_examples=300, deadline=None)
@given(_text(ANSWER_PIECES, max_size=10))
def test_answer_marker_prefilters_agree_with_the_full_scans(text: str) -> None:
    assert answer_markers._text_matches(text) == _text_matches_unfiltered(text)


SPLIT_PIECES = ["a", "b", " ", "\n", "\n\n", "#", "##", "x\n", "\n#"]


@settings(max_examples=400, deadline=None)
@given(st.lists(_text(SPLIT_PIECES, max_size=6), max_size=30),
       st.sampled_from(["\n", "\n\n", "##", "#\n#"]))
def test_splitter_finds_every_step_however_the_text_is_chunked(chunks: list[str],
                                                              sep: str) -> None:
    splitter = CheckpointSplitter(separator=sep)
    checkpoints = [cp for chunk in chunks for cp in splitter.push(chunk)]
    text = "".join(chunks)
    assert splitter.text == text
    checkpoints.append(splitter.close())
    steps = [s.text for cp in checkpoints for s in cp.steps]
    assert steps == [s for s in text.split(sep) if s.strip()]
    assert splitter.text == text


def test_skip_step_hints_cover_every_literal_of_the_regex() -> None:
    # A new alternative in _SKIP_STEP needs its literal in _SKIP_HINTS, else the prefilter
    # would skip the regex for it.
    for sample in ["x mod 3", "3 MODULO 4", "\\pmod{5}", "\\bmod 2", "a \\equiv b", "≡",
                   "base 8", "BASE-{2", "3 o'clock", "in binary"]:
        assert equations._SKIP_STEP.search(sample), sample
        assert equations._skip_step(sample), sample
