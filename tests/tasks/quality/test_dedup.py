"""tasks/quality/dedup.py on real Postgres: near-duplicates within a run and against earlier
runs become rejections, kept samples' signatures are stored, and a second pass changes nothing.

Runs are committed (dedup opens its own transaction) under fresh uuid run ids. Earlier completed
runs of the whole test session count as "earlier runs", so every test writes solutions from its
own random vocabulary (`_Texts`): no two tests share a shingle."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from foldem.core.errors import DatabaseError
from foldem.spec.sections import DedupSettings
from tasks.quality import dedup
from tasks.quality.dedup import dedup_run, shingles
from tasks.records.models import SampleResult, SampleStatus, StageText
from tasks.store import db
from tasks.store.schema import rejections, sample_signatures, samples
from tests.support.samples import commit_run, sample_result

Sample = tuple[str, int, str]  # (prompt_id, sample_index, solution text)
SPEC = {"stages": [{"name": "solve", "kind": "solve"}, {"name": "judge", "kind": "judge"}]}


class _Texts:
    """Made-up solutions from a vocabulary no other test uses."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(uuid.uuid4().int if seed is None else seed)
        self.vocab = [f"w{self.rng.getrandbits(40):010x}" for _ in range(3000)]

    def solution(self, words: int = 200) -> str:
        return " ".join(self.rng.choice(self.vocab) for _ in range(words))

    @staticmethod
    def tweak(text: str, at: tuple[float, ...] = (0.5,)) -> str:
        """The same text with the words at these fractions of its length changed. One change in
        200 words alters 5 of 196 shingles: Jaccard 191/201 = 0.95, five standard errors of a
        128-permutation estimate above 0.85."""
        words = text.split()
        for fraction in at:
            words[int(len(words) * fraction)] += "x"
        return " ".join(words)


def _result(run_id: str, prompt_id: str, index: int, solution: str,
            status: SampleStatus = "accepted") -> SampleResult:
    return sample_result(
        run_id, prompt_id, index, status, problem=f"Made-up problem {prompt_id}: what is 2 + 2?",
        reference_answer="4", answer="4",
        stages=[StageText(stage="solve", text=solution, final_answer="4"),
                StageText(stage="judge", text=f"Score: 5 ({uuid.uuid4().hex})")])


def _save_run(url: str, items: list[Sample], *, status: str | None = "completed",
              rejected: list[Sample] | None = None) -> str:
    return commit_run(url, lambda run_id: [
        *(_result(run_id, p, i, t) for p, i, t in items),
        *(_result(run_id, p, i, t, "rejected") for p, i, t in rejected or [])],
        prefix="dedup", spec=SPEC, finish=status, samples_expected=len(items))


def _state(url: str, run_id: str) -> dict[str, Any]:
    """Everything dedup may change for a run."""
    with db.get_engine(url).connect() as conn:
        def rows(table: sa.Table, *cols: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in conn.execute(
                select(*[table.c[c] for c in cols]).where(table.c.run_id == run_id)))
        return {
            "samples": rows(samples, "prompt_id", "sample_index", "status", "updated_at"),
            "rejections": rows(rejections, "prompt_id", "sample_index", "stage", "validator",
                               "reason_code", "detail"),
            "signatures": rows(sample_signatures, "prompt_id", "sample_index", "hashvalues",
                               "created_at"),
        }


def _statuses(url: str, run_id: str) -> dict[tuple[str, int], str]:
    return {(p, i): s for p, i, s, _ in _state(url, run_id)["samples"]}


def _details(url: str, run_id: str) -> dict[tuple[str, int], str]:
    return {(p, i): d for p, i, stage, v, code, d in _state(url, run_id)["rejections"]
            if (stage, v, code) == ("dedup", "near_duplicate", "near_duplicate")}


@pytest.mark.parametrize(("a", "b", "same"), [
    ("Tom has 3 apples.\nHe eats 2.", "tom  HAS 3 apples . he eats 2 .", True),
    ("Tom has 3 apples and eats 2 of them", "Tom has 4 apples and eats 2 of them", False),
    ("x = 48 / 2 = 24", "x = 48 / 2 = 24\n\n", True),
    ("x = 48 / 2 = 24", "x = 48 * 2 = 24", False),
    ("ﬁve apples", "five apples", True),  # NFKC: the ligature is two letters
])
def test_normalisation_ignores_case_and_spacing_but_not_numbers(a: str, b: str,
                                                                 same: bool) -> None:
    assert (shingles(a, 3) == shingles(b, 3)) is same


@pytest.mark.parametrize(("text", "size", "expected"), [
    ("", 5, {b""}),
    ("one two", 5, {b"one two"}),
    ("a b c d", 3, {b"a b c", b"b c d"}),
])
def test_shingles(text: str, size: int, expected: set[bytes]) -> None:
    assert shingles(text, size) == expected


def test_within_run_keeps_the_first_and_rejects_the_rest(pg_url: str) -> None:
    t = _Texts()
    a, b = t.solution(), t.solution()
    math = "Tom has 12 apples . He eats 5 , so 12 - 5 = 7 apples are left . #### 7 " * 4
    run_id = _save_run(pg_url, [
        ("p1", 0, a), ("p1", 1, t.tweak(a)), ("p2", 0, b), ("p3", 0, a),
        ("p4", 0, math), ("p4", 1, math.replace("12", "13").replace("7", "8")),
    ], rejected=[("p5", 0, a)])
    result = dedup_run(pg_url, run_id=run_id, settings=DedupSettings(against_earlier_runs=False))

    assert (result.examined, result.kept, result.removed_within_run,
            result.removed_against_earlier, result.signatures_stored) == (6, 4, 2, 0, 4)
    assert _statuses(pg_url, run_id) == {
        ("p1", 0): "accepted", ("p1", 1): "rejected", ("p2", 0): "accepted",
        ("p3", 0): "rejected", ("p4", 0): "accepted", ("p4", 1): "accepted",
        ("p5", 0): "rejected"}
    details = _details(pg_url, run_id)
    assert set(details) == {("p1", 1), ("p3", 0)}
    assert f"run {run_id!r}, prompt 'p1', sample 0" in details[("p3", 0)]
    assert "estimated Jaccard similarity 1.000" in details[("p3", 0)]
    signed = {(p, i) for p, i, _, _ in _state(pg_url, run_id)["signatures"]}
    assert signed == {("p1", 0), ("p2", 0), ("p4", 0), ("p4", 1)}


def test_a_second_pass_changes_nothing(pg_url: str) -> None:
    t = _Texts()
    a = t.solution()
    earlier = _save_run(pg_url, [("q", 0, a)])
    dedup_run(pg_url, run_id=earlier, settings=DedupSettings())
    run_id = _save_run(pg_url, [("p1", 0, a), ("p2", 0, t.solution()), ("p2", 1, t.solution()),
                                ("p3", 0, t.tweak(a))], status=None)
    first = dedup_run(pg_url, run_id=run_id, settings=DedupSettings())
    assert (first.removed_within_run, first.removed_against_earlier, first.kept) == (0, 2, 2)
    before = _state(pg_url, run_id)
    second = dedup_run(pg_url, run_id=run_id, settings=DedupSettings())
    assert _state(pg_url, run_id) == before
    assert (second.examined, second.kept, second.removed_within_run,
            second.removed_against_earlier, second.signatures_stored) == (2, 2, 0, 0, 0)


def test_duplicates_of_earlier_completed_runs_are_removed(pg_url: str) -> None:
    t = _Texts()
    a, b, c = t.solution(), t.solution(), t.solution()
    completed = _save_run(pg_url, [("old", 3, a)])
    quarantined = _save_run(pg_url, [("old", 0, b)], status="quarantined")
    for run in (completed, quarantined):
        dedup_run(pg_url, run_id=run, settings=DedupSettings())
    run_id = _save_run(pg_url, [("p1", 0, t.tweak(a)), ("p2", 0, b), ("p3", 0, c)])

    unchecked = dedup_run(pg_url, run_id=run_id,
                          settings=DedupSettings(against_earlier_runs=False, enabled=False))
    assert not unchecked.enabled and unchecked.examined == 0
    result = dedup_run(pg_url, run_id=run_id, settings=DedupSettings())
    assert result.removed_against_earlier == 1 and result.earlier_signatures_checked >= 1
    assert _statuses(pg_url, run_id) == {("p1", 0): "rejected", ("p2", 0): "accepted",
                                         ("p3", 0): "accepted"}
    assert f"run {completed!r}, prompt 'old', sample 3" in _details(pg_url, run_id)[("p1", 0)]


@pytest.mark.parametrize("index_samples", [1, 2, 3, 1000])
def test_chunked_passes_agree(pg_url: str, monkeypatch: pytest.MonkeyPatch,
                              index_samples: int) -> None:
    """A run larger than the in-memory index is deduplicated a chunk at a time, each chunk also
    against the signatures kept by the chunks before it: the outcome does not depend on size."""
    monkeypatch.setattr(dedup, "INDEX_SAMPLES", index_samples)
    t = _Texts()
    a, b, c = t.solution(), t.solution(), t.solution()
    run_id = _save_run(pg_url, [("p1", 0, a), ("p1", 1, b), ("p2", 0, t.tweak(a)),
                                ("p2", 1, c), ("p3", 0, b), ("p3", 1, t.tweak(c))])
    result = dedup_run(pg_url, run_id=run_id, settings=DedupSettings())
    assert (result.examined, result.kept, result.removed_within_run,
            result.removed_against_earlier) == (6, 3, 3, 0)
    details = _details(pg_url, run_id)
    assert sorted(details) == [("p2", 0), ("p3", 0), ("p3", 1)]
    assert "prompt 'p2', sample 1" in details[("p3", 1)]
    before = _state(pg_url, run_id)
    again = dedup_run(pg_url, run_id=run_id, settings=DedupSettings())
    assert (again.kept, again.signatures_stored, _state(pg_url, run_id)) == (3, 0, before)


@pytest.mark.parametrize("index_samples", [1, 2, 3, 1000])
def test_a_duplicate_of_a_removed_sample_is_kept(pg_url: str, monkeypatch: pytest.MonkeyPatch,
                                                 index_samples: int) -> None:
    """Near-duplication is not transitive: W ~ X ~ Z but not W ~ Z. Walking in order, X goes
    (a duplicate of W) and Z stays (it duplicates no kept sample) — for any chunk size. Fixed
    seed: the estimates are deterministic, and were checked to fall on the expected sides."""
    monkeypatch.setattr(dedup, "INDEX_SAMPLES", index_samples)
    t = _Texts(seed=6)
    w = t.solution(300)
    x = t.tweak(w, at=(0.2, 0.5, 0.8))  # 15 of 296 shingles changed: Jaccard 0.90 with W
    z = t.tweak(x, at=(0.35, 0.65, 0.95))  # 0.90 with X, 0.82 with W
    run_id = _save_run(pg_url, [("p0", 0, t.solution()), ("p1", 0, w), ("p2", 0, x),
                                ("p3", 0, z)])
    dedup_run(pg_url, run_id=run_id, settings=DedupSettings(against_earlier_runs=False))
    assert sorted(_details(pg_url, run_id)) == [("p2", 0)]


def test_a_run_started_later_does_not_count_as_earlier(pg_url: str) -> None:
    t = _Texts()
    a = t.solution()
    older = _save_run(pg_url, [("p", 0, a)])
    newer = _save_run(pg_url, [("p", 0, a)])
    assert dedup_run(pg_url, run_id=newer, settings=DedupSettings()).kept == 1
    assert dedup_run(pg_url, run_id=older, settings=DedupSettings()).kept == 1


def test_settings_that_hash_differently_are_not_compared(pg_url: str) -> None:
    t = _Texts()
    a = t.solution()
    earlier = _save_run(pg_url, [("p", 0, a)])
    dedup_run(pg_url, run_id=earlier, settings=DedupSettings(shingle=3))
    run_id = _save_run(pg_url, [("p", 0, a)])
    result = dedup_run(pg_url, run_id=run_id, settings=DedupSettings(shingle=5))
    assert (result.kept, result.removed_against_earlier) == (1, 0)
    with db.get_engine(pg_url).connect() as conn:
        assert conn.scalar(select(sample_signatures.c.shingle)
                           .where(sample_signatures.c.run_id == earlier)) == 3


def test_problem_field_keeps_one_sample_per_problem(pg_url: str) -> None:
    t = _Texts()
    run_id = _save_run(pg_url, [("p1", 0, t.solution()), ("p1", 1, t.solution()),
                                ("p2", 0, t.solution())])
    result = dedup_run(pg_url, run_id=run_id,
                       settings=DedupSettings(field="problem", against_earlier_runs=False))
    assert (result.kept, result.removed_within_run) == (2, 1)
    assert _statuses(pg_url, run_id)[("p1", 1)] == "rejected"


def test_many_samples_with_planted_duplicates(pg_url: str) -> None:
    t = _Texts()
    originals = [t.solution() for _ in range(400)]
    items = [(f"p{i:04d}", 0, s) for i, s in enumerate(originals)]
    planted = {(f"p{i:04d}", 1) for i in range(0, 400, 8)}
    items += [(p, 1, _Texts.tweak(originals[int(p[1:])])) for p, _ in planted]
    run_id = _save_run(pg_url, items)
    result = dedup_run(pg_url, run_id=run_id, settings=DedupSettings(against_earlier_runs=False))
    assert set(_details(pg_url, run_id)) == planted
    assert result.kept == 400


def test_unknown_run_is_a_database_error(pg_url: str) -> None:
    with pytest.raises(DatabaseError, match="not in the database"):
        dedup_run(pg_url, run_id="no-such-run", settings=DedupSettings())


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"threshold": 1.5}, {"num_perm": 4},
                                 {"field": "answer"}, {"shingles": 5}])
def test_settings_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DedupSettings.model_validate(bad)


def test_signature_table_matches_the_migration(pg_url: str) -> None:
    real = sa.Table("sample_signatures", sa.MetaData(), autoload_with=db.get_engine(pg_url))
    assert [c.name for c in sample_signatures.columns] == [c.name for c in real.columns]
    assert [c.name for c in sample_signatures.primary_key] == \
        [c.name for c in real.primary_key]
    for col in sample_signatures.columns:
        other = real.c[col.name]
        assert (_ddl_type(col), col.nullable) == (_ddl_type(other), other.nullable), col.name
    assert {(fk.parent.name, fk.target_fullname) for fk in sample_signatures.foreign_keys} == \
        {(fk.parent.name, fk.target_fullname) for fk in real.foreign_keys}


def _ddl_type(column: sa.Column[Any]) -> str:
    return str(column.type.compile(dialect=postgresql.dialect()))
