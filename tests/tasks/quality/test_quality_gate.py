"""The quality gate (tasks/quality/gate.py) on real Postgres: a clean run passes; a run that
breaks exactly one expectation fails exactly that one; failing_rows_sql returns the failing rows
(also through psql and a shell); results are stored. Texts are made up.

Great Expectations is imported once per session (the first gate run pays ~6-10 s)."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from foldem.core.errors import DatabaseError
from tasks.quality.gate import (
    ALWAYS_KNOWN_REASON_CODES,
    GateResult,
    GateSettings,
    known_reason_codes,
    psql_command,
    run_quality_gate,
    save_gate_result,
)
from tasks.records.models import LedgerEntry, RejectionRecord, SampleResult, StageText
from tasks.store.db import get_engine, libpq_url, session_scope
from tasks.store.embedded_pg import bundled_bin_dir
from tests.support.samples import commit_run, ledger_entry, sample_result
from validators.registry import available

SPEC = {"name": "gate-test", "stages": [
    {"name": "pose", "kind": "problem", "validators": [{"name": "well_posed"}]},
    {"name": "solve", "kind": "solve", "validators": [{"name": "arithmetic"}]}]}
KEY = ("prompt_id", "sample_index")


def _call(run_id: str, pid: str, stage: str, **kw: Any) -> LedgerEntry:
    return ledger_entry(run_id, pid, 0, stage, **{
        "endpoint": "local", "prompt_tokens": 30, "completion_tokens": 60,
        "count_source": "server_usage", "duration_ms": 12.0} | kw)


def _sample(run_id: str, pid: str, status: str = "accepted") -> SampleResult:
    """Accepted: a posed problem and a solution with answer 42. Rejected at solve (arithmetic)
    or failed at solve (endpoint timeout) otherwise."""
    solve_call = _call(run_id, pid, "solve", **({"error": "timeout", "completion_tokens": 0}
                                                if status == "failed" else {}))
    return sample_result(
        run_id, pid, 0, status,
        problem="Ann has 40 pens and buys 2 more. How many pens does she have?",
        stages=[StageText(stage="pose", text="Ann has 40 pens and buys 2 more. How many?"),
                StageText(stage="solve", text="40 + 2 = 42 pens.\n#### 42",
                          final_answer="42" if status == "accepted" else None,
                          aborted=status == "rejected")],
        answer="42",
        rejection=RejectionRecord(stage="solve", checkpoint=1, validator="arithmetic",
                                  reason_code="arithmetic_error", tokens_at_fire=20),
        error="solve: timeout", ledger=[_call(run_id, pid, "pose"), solve_call])


def _clean(run_id: str) -> list[SampleResult]:
    """p0-p3 accepted, p4 rejected at solve, p5 failed at solve: solve acceptance 4/5."""
    return [*(_sample(run_id, f"p{i}") for i in range(4)), _sample(run_id, "p4", "rejected"),
            _sample(run_id, "p5", "failed")]


def _store(pg_url: str, make: Callable[[str], list[SampleResult]] = _clean,
           run_id: str | None = None) -> str:
    return commit_run(pg_url, make, prefix="gate", spec=SPEC, run_id=run_id, samples_expected=6)


def _rows(url: str, sql: str) -> list[sa.Row[Any]]:
    with get_engine(url).connect() as conn:
        return list(conn.execution_options(no_parameters=True).exec_driver_sql(sql))


def _no_final_answers(s: list[SampleResult]) -> None:
    s[1].final_answer, s[2].final_answer = None, " \n"  # missing, and blank


def _unparseable_answer(s: list[SampleResult]) -> None:
    s[2].final_answer = "?!"


def _blank_solution(s: list[SampleResult]) -> None:
    s[0].stages[1].text = "  \n\t "  # the problem text stays: only the solve stage counts


def _unknown_code(s: list[SampleResult]) -> None:
    assert s[4].rejection is not None
    s[4].rejection.reason_code = "made_up_code"


# (expectation that must fail alone, how to break the clean run, settings, failing rows' keys)
BREAKS: list[tuple[str, Callable[[list[SampleResult]], None], GateSettings, set[tuple[Any, ...]],
                   tuple[str, ...]]] = [
    ("accepted_samples_have_solution_text", _blank_solution, GateSettings(),
     {("p0", 0)}, KEY),
    ("accepted_samples_have_final_answer", _no_final_answers, GateSettings(),
     {("p1", 0), ("p2", 0)}, KEY),
    ("final_answers_parse", _unparseable_answer, GateSettings(), {("p2", 0)}, KEY),
    ("ledger_completion_tokens_positive",
     lambda s: setattr(s[3].ledger[1], "completion_tokens", 0), GateSettings(),
     {("p3", 0)}, KEY),
    ("ledger_prompt_tokens_positive", lambda s: setattr(s[0].ledger[0], "prompt_tokens", 0),
     GateSettings(), {("p0", 0)}, KEY),
    ("rejection_reason_codes_known", _unknown_code, GateSettings(), {("p4", 0)}, KEY),
    ("stage_acceptance_within_bounds[solve]", lambda s: None,
     GateSettings(acceptance_bounds={"solve": (0.9, 1.0), "pose": (0.5, 1.0)}),
     {("solve",)}, ("stage",)),
    ("stage_acceptance_within_bounds[solve]", lambda s: None,
     GateSettings(acceptance_bounds={"solve": (0.0, 0.5)}), {("solve",)}, ("stage",)),
    # 1 of 6 samples failed (endpoint errors): over a 10% bound, within the default 20%.
    ("failed_share_within_bound", lambda s: None, GateSettings(max_failed_share=0.1),
     {("p5", 0)}, KEY),
]


def test_clean_run_passes_and_every_failing_rows_sql_is_empty(pg_url: str) -> None:
    run_id = _store(pg_url)
    bounds = {"pose": (1.0, 1.0), "solve": (0.8, 0.8), "judge": (0.5, 1.0)}
    result = run_quality_gate(pg_url, run_id=run_id,
                              settings=GateSettings(acceptance_bounds=bounds))
    assert result.passed, result.message()
    assert len(result.outcomes) == 8 + len(bounds)
    for outcome in result.outcomes:
        assert outcome.success and outcome.unexpected_count == 0, outcome
        assert _rows(pg_url, outcome.failing_rows_sql) == [], outcome.expectation
    observed = {o.expectation: o.observed for o in result.outcomes}
    assert "0 of 4 accepted samples have no final answer" in observed[
        "accepted_samples_have_final_answer"]
    assert "acceptance 0.800" in observed["stage_acceptance_within_bounds[solve]"]
    assert "4 passed, 1 rejected, 1 failed" in observed["stage_acceptance_within_bounds[solve]"]
    assert "nothing to bound" in observed["stage_acceptance_within_bounds[judge]"]
    assert "passed" in result.message()
    assert "FAIL" not in result.markdown()


@pytest.mark.parametrize(("expectation", "brk", "settings", "keys", "columns"), BREAKS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BREAKS)])
def test_a_run_that_breaks_one_expectation_fails_exactly_it(
        pg_url: str, expectation: str, brk: Callable[[list[SampleResult]], None],
        settings: GateSettings, keys: set[tuple[Any, ...]], columns: tuple[str, ...]) -> None:
    def broken(run_id: str) -> list[SampleResult]:
        samples = _clean(run_id)
        brk(samples)
        return samples

    result = run_quality_gate(pg_url, run_id=_store(pg_url, broken), settings=settings)
    assert not result.passed
    assert [o.expectation for o in result.failed_outcomes] == [expectation]
    failed = result.failed_outcomes[0]
    rows = _rows(pg_url, failed.failing_rows_sql)
    assert {tuple(r._mapping[c] for c in columns) for r in rows} == keys
    assert failed.unexpected_count == len(rows)
    message = result.message()
    assert expectation in message and failed.observed in message
    assert shlex.split(psql_command(failed.failing_rows_sql))[-1] == failed.failing_rows_sql
    markdown = result.markdown()
    assert f"## {expectation}" in markdown and failed.failing_rows_sql in markdown


def test_observed_names_the_bad_values(pg_url: str) -> None:
    def broken(run_id: str) -> list[SampleResult]:
        samples = _clean(run_id)
        _unparseable_answer(samples)
        _unknown_code(samples)
        return samples

    result = run_quality_gate(pg_url, run_id=_store(pg_url, broken), settings=GateSettings())
    observed = {o.expectation: o.observed for o in result.failed_outcomes}
    assert observed == {
        "final_answers_parse": "1 of 4 final answers do not parse; e.g. p2#0 '?!'",
        "rejection_reason_codes_known":
            "1 of 1 rejections carry an unknown reason code; e.g. arithmetic: 'made_up_code'"}


def test_extra_reason_codes_are_known(pg_url: str) -> None:
    def broken(run_id: str) -> list[SampleResult]:
        samples = _clean(run_id)
        _unknown_code(samples)
        return samples

    result = run_quality_gate(pg_url, run_id=_store(pg_url, broken),
                              settings=GateSettings(extra_reason_codes=["made_up_code"]))
    assert result.passed, result.message()


@pytest.fixture
def unconstrained_url(pg_url: str) -> Iterator[tuple[str, str]]:
    """A schema holding copies of the tables without their constraints (a database foldem's
    migrations did not make), and a URL whose search_path points at it."""
    schema = f"gate_{uuid.uuid4().hex[:10]}"
    with get_engine(pg_url).begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        for table in ("runs", "samples", "rejections", "ledger"):
            conn.exec_driver_sql(f"CREATE TABLE {schema}.{table} "
                                 f"(LIKE public.{table} INCLUDING DEFAULTS)")
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False), schema
    get_engine(url.render_as_string(hide_password=False)).dispose()
    with get_engine(pg_url).begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


def test_duplicate_sample_keys_fail_the_gate(pg_url: str,
                                             unconstrained_url: tuple[str, str]) -> None:
    url, schema = unconstrained_url
    run_id = _store(pg_url)
    with get_engine(pg_url).begin() as conn:
        for table in ("runs", "samples", "rejections", "ledger"):
            conn.execute(sa.text(f"INSERT INTO {schema}.{table} SELECT * FROM public.{table} "
                                 "WHERE run_id = :r"), {"r": run_id})
        conn.execute(sa.text(f"INSERT INTO {schema}.samples SELECT * FROM public.samples "
                             "WHERE run_id = :r AND prompt_id = 'p1'"), {"r": run_id})
    result = run_quality_gate(url, run_id=run_id, settings=GateSettings())
    assert [o.expectation for o in result.failed_outcomes] == ["sample_keys_unique"]
    failed = result.failed_outcomes[0]
    rows = _rows(url, failed.failing_rows_sql)
    assert [(r.prompt_id, r.sample_index, r.copies) for r in rows] == [("p1", 0, 2)] * 2
    assert failed.unexpected_count == 2 and "p1#0 x2" in failed.observed


def test_failing_rows_sql_runs_in_psql_from_a_shell(pg_url: str) -> None:
    """A hostile run id (quote, colon, percent, dollar, backtick, double quote) survives the
    literal, psql's variable interpolation and the shell quoting of the message's command."""
    run_id = f"it's:x%s$HOME`id`\"{uuid.uuid4().hex[:6]}"
    run_id = _store(pg_url, lambda r: [_sample(r, "p0"), _sample(r, "p1"), _sample(r, "p2")
                                       .model_copy(update={"final_answer": None})],
                    run_id=run_id)
    result = run_quality_gate(pg_url, run_id=run_id, settings=GateSettings())
    failed = result.failed_outcomes
    assert [o.expectation for o in failed] == ["accepted_samples_have_final_answer"]
    psql = bundled_bin_dir() / "psql"
    if not psql.exists():
        pytest.skip("no psql next to the embedded server")
    command = psql_command(failed[0].failing_rows_sql,
                           url=shlex.quote(libpq_url(pg_url))).replace("psql", str(psql), 1)
    out = subprocess.run(["bash", "-c", command + " -A -t -F ,"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert re.findall(r"^\d+,(p\d),", out, re.MULTILINE) == ["p2"]


def test_results_are_stored_once_per_check(pg_url: str) -> None:
    run_id = _store(pg_url, lambda r: [*_clean(r)[:3], _sample(r, "p9").model_copy(
        update={"final_answer": "?!"})])
    result = run_quality_gate(pg_url, run_id=run_id, settings=GateSettings())
    for _ in range(2):  # a retried save keeps one row
        with session_scope(get_engine(pg_url)) as session:
            save_gate_result(session, result=result)
    with get_engine(pg_url).connect() as conn:
        rows = list(conn.execute(sa.text("SELECT passed, checked_at, result FROM "
                                         "quality_gate_results WHERE run_id = :r"), {"r": run_id}))
    assert len(rows) == 1 and rows[0].passed is False
    assert GateResult.model_validate(rows[0].result) == result
    assert rows[0].checked_at == result.checked_at


def test_empty_run_passes(pg_url: str) -> None:
    result = run_quality_gate(pg_url, run_id=_store(pg_url, lambda r: []),
                              settings=GateSettings(acceptance_bounds={"solve": (0.5, 1.0)}))
    assert result.passed, result.message()


def test_disabled_gate_checks_nothing_and_touches_no_database() -> None:
    result = run_quality_gate("postgresql://nobody@127.0.0.1:1/none", run_id="r",
                              settings=GateSettings(enabled=False))
    assert result.passed and result.skipped and result.outcomes == []
    assert "skipped" in result.markdown() and "skipped" in result.message()


def test_unknown_run_is_a_database_error(pg_url: str) -> None:
    with pytest.raises(DatabaseError, match="not in the database"):
        run_quality_gate(pg_url, run_id="no-such-run", settings=GateSettings())


@pytest.mark.parametrize("bounds", [{"solve": (0.6, 0.5)}, {"solve": (-0.1, 0.5)},
                                    {"solve": (0.1, 1.5)}])
def test_bad_bounds_are_rejected(bounds: dict[str, tuple[float, float]]) -> None:
    with pytest.raises(ValidationError, match="acceptance_bounds"):
        GateSettings.model_validate({"acceptance_bounds": bounds})


def test_settings_from_a_job_spec_section() -> None:
    settings = GateSettings.model_validate(
        {"acceptance_bounds": {"solve": [0.2, 0.9]}, "extra_reason_codes": ["x"]})
    assert settings.acceptance_bounds == {"solve": (0.2, 0.9)} and settings.enabled
    with pytest.raises(ValidationError):
        GateSettings.model_validate({"bounds": {}})


def test_known_reason_codes_cover_validators_and_filters() -> None:
    known = known_reason_codes()
    assert ALWAYS_KNOWN_REASON_CODES <= known
    for cls in available().values():
        assert cls.reason_codes <= known
    assert {"arithmetic_error", "no_final_answer", "wrong_answer"} <= known


_FAULT_CODE = re.compile(r"fault\(\s*\"([a-z_]+)\"")


@pytest.mark.parametrize("name", sorted(available()))
def test_validators_declare_the_reason_codes_they_emit(name: str) -> None:
    """Codes passed to `fault("...")` literally in the validator's module are declared."""
    import inspect
    import sys

    cls = available()[name]
    emitted = set(_FAULT_CODE.findall(inspect.getsource(sys.modules[cls.__module__])))
    siblings = {c for c in available().values() if c.__module__ == cls.__module__}
    declared = set().union(*(c.reason_codes for c in siblings))
    assert cls.reason_codes, f"{name} declares no reason_codes"
    assert emitted <= declared, f"{cls.__module__} emits undeclared {emitted - declared}"


def test_superseded_samples_are_neither_failures_nor_calls_that_failed(pg_url: str) -> None:
    """Under early exit by agreement: one superseded sample was cut before its first token
    (an aborted call, 0 completion tokens, no error), one never started. Neither is a stage
    outcome, a call that reported no tokens, nor a generated sample in the failed share:
    1 of the 6 generated samples failed, over a 15% bound (2 of 8 rows would be under it)."""
    def with_superseded(run_id: str) -> list[SampleResult]:
        cut = _call(run_id, "p6", "solve", completion_tokens=0, aborted=True,
                    abort_reason="agreement", tokens_saved=120, prompt_tokens=None)
        return [*_clean(run_id),
                sample_result(run_id, "p6", 0, "superseded",
                              ledger=[_call(run_id, "p6", "pose"), cut]),
                sample_result(run_id, "p7", 0, "superseded", ledger=[])]

    run_id = _store(pg_url, with_superseded)
    result = run_quality_gate(pg_url, run_id=run_id, settings=GateSettings(
        acceptance_bounds={"solve": (0.8, 0.8)}, max_failed_share=0.15))
    failed = {o.expectation for o in result.outcomes if not o.success}
    assert failed == {"failed_share_within_bound"}, result.message()
    observed = {o.expectation: o.observed for o in result.outcomes}
    assert "1 of 6 samples failed" in observed["failed_share_within_bound"]
