"""The quality gate: Great Expectations 1.x over one run's samples, rejections and ledger.

The run's rows are read from Postgres with SQLAlchemy into small pandas frames (the columns the
checks need, texts reduced to lengths in SQL; see tasks/quality/expectations.py) and validated in an
ephemeral GX context with pandas dataframe assets. Not GX's Postgres datasource: "answers parse"
needs the validators' Python answer parser, which SQL cannot run, and frames read in one
REPEATABLE READ transaction give every check the same snapshot of a run that may still be
written to. `import great_expectations` takes seconds, so it happens only inside
`run_quality_gate`, never when this module is imported.

The lead's flow: `result = run_quality_gate(url, run_id=..., settings=spec_settings)`,
`save_gate_result(session, result=result)`, publish `result.markdown()` as a Prefect
artifact; when `not result.passed`, mark the run quarantined, skip export and print
`result.message()`.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from foldem.core.errors import DatabaseError, FoldemError
from foldem.spec.sections import QualityGateSettings as GateSettings
from tasks.quality.expectations import (
    BOUNDS_FRAME,
    FAILED_FRAME,
    Check,
    acceptance_frame,
    add_answer_parses,
    build_checks,
    exception_message,
    failed_share_frame,
)
from tasks.quality.frames import RunQueries, sql_literal
from tasks.store.db import get_engine
from tasks.store.schema import quality_gate_results

if TYPE_CHECKING:
    import pandas as pd

#: Reason codes that come from outside the validators: the policy's soft-score rejection, the
#: near-duplicate filter (tasks/quality/dedup.py) and the judge stage (tasks/engine/runner.py).
ALWAYS_KNOWN_REASON_CODES = frozenset({"low_utility", "near_duplicate", "low_judge_score",
                                       "judge_unparseable"})

class GateOutcome(BaseModel):
    """One expectation's verdict on the run."""

    expectation: str  # stable name, e.g. "final_answers_parse"
    description: str
    success: bool
    observed: str  # short summary: counts and a few examples
    unexpected_count: int
    failing_rows_sql: str  # paste into psql: returns exactly the rows that failed (none if passed)


class GateResult(BaseModel):
    run_id: str
    passed: bool
    checked_at: datetime
    skipped: bool = False  # the gate is disabled in the job spec: nothing was checked
    outcomes: list[GateOutcome] = Field(default_factory=list)

    @property
    def failed_outcomes(self) -> list[GateOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        """The result as markdown, for a Prefect artifact: a table, then the failing rows' SQL."""
        return _gate_markdown(self)

    def message(self) -> str:
        """One paragraph for the terminal: what failed and the command that shows the rows."""
        return _gate_message(self)


def known_reason_codes() -> frozenset[str]:
    """Every reason code a registered validator declares, plus the always-known ones."""
    from validators.registry import available

    codes = set(ALWAYS_KNOWN_REASON_CODES)
    for cls in available().values():
        codes |= cls.reason_codes
    return frozenset(codes)


def _run_spec(conn: sa.Connection, run_id: str) -> dict[str, Any]:
    spec = conn.execute(sa.text("SELECT spec FROM runs WHERE run_id = :run_id"),
                        {"run_id": run_id}).scalar()
    if spec is None:
        raise DatabaseError(f"run {run_id!r} is not in the database: nothing to check")
    return spec if isinstance(spec, dict) else {}


def _spec_stages(spec: dict[str, Any]) -> list[dict[str, Any]]:
    stages = spec.get("stages")
    return [s for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []


def _solve_stages(spec: dict[str, Any]) -> tuple[str, ...]:
    """Stages whose text is the solution (not the problem, not the judge's verdict)."""
    return tuple(str(s["name"]) for s in _spec_stages(spec)
                 if s.get("kind", "solve") == "solve" and "name" in s)


def _spec_validator_codes(spec: dict[str, Any]) -> frozenset[str]:
    """Reason codes of the validators the run used, custom ones (dotted paths) included."""
    from validators.registry import resolve

    codes: set[str] = set()
    for stage in _spec_stages(spec):
        for ref in stage.get("validators") or []:
            try:
                codes |= resolve(str(ref.get("name")) if isinstance(ref, dict) else str(ref)
                                 ).reason_codes
            except FoldemError:
                pass  # not loadable here: its codes must come from extra_reason_codes
    return frozenset(codes)


def _load_frame(conn: sa.Connection, sql: str) -> pd.DataFrame:
    import pandas as pd

    # no_parameters: the SQL is sent exactly as rendered (literals, no placeholders), so a '%'
    # or ':' in a run id or prompt id is plain text, as it is for a user pasting the query.
    result = conn.execution_options(no_parameters=True).exec_driver_sql(sql)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


_GX_LOCK = threading.Lock()  # GX keeps its current context in a process global


def _validate(frames: dict[str, pd.DataFrame], checks: list[Check]) -> dict[str, Any]:
    """Run the checks frame by frame in a fresh ephemeral context; results by check name."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    results: dict[str, Any] = {}
    with _GX_LOCK:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas("foldem_run")
        for frame in dict.fromkeys(c.frame for c in checks):
            batch = source.add_dataframe_asset(frame).add_batch_definition_whole_dataframe(frame)
            suite = context.suites.add(gx.ExpectationSuite(name=frame))
            for check in checks:
                if check.frame == frame:
                    suite.add_expectation(getattr(gxe, check.gx_type)(
                        **check.gx_kwargs, meta={"check": check.name}))
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=frame, data=batch, suite=suite))
            run = definition.run(batch_parameters={"dataframe": frames[frame]},
                                 result_format="SUMMARY")
            for outcome in run.results:
                assert outcome.expectation_config is not None  # set for every suite expectation
                results[outcome.expectation_config.meta["check"]] = outcome
    return results


def _outcome(check: Check, gx_result: Any, frame: pd.DataFrame) -> GateOutcome:
    result: dict[str, Any] = dict(gx_result.result or {})
    error = exception_message(gx_result.exception_info)
    examples = frame.loc[list(result.get("partial_unexpected_index_list") or [])[:3]]
    return GateOutcome(
        expectation=check.name, description=check.description,
        success=bool(gx_result.success) and error is None,
        observed=(f"could not be evaluated: {error[:300]}" if error is not None
                  else check.observed(result, examples)),
        unexpected_count=int(result.get("unexpected_count") or 0),
        failing_rows_sql=check.failing_rows_sql)


def run_quality_gate(database_url: str, *, run_id: str, settings: GateSettings) -> GateResult:
    """Check one run's stored data; never raises for bad data (that is a failed outcome).

    Raises DatabaseError when the run is not in the database or Postgres cannot be read.
    """
    checked_at = datetime.now(UTC)
    if not settings.enabled:
        return GateResult(run_id=run_id, passed=True, skipped=True, checked_at=checked_at)
    engine = get_engine(database_url)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        spec = _run_spec(conn, run_id)
        queries = RunQueries(run_id=run_id, solve_stages=_solve_stages(spec))
        frames = {name: _load_frame(conn, queries.frame_sql(name)) for name in queries.frames}
        conn.rollback()  # read only
    add_answer_parses(frames["accepted_samples"])
    frames[BOUNDS_FRAME] = acceptance_frame(frames["stage_acceptance"],
                                            settings.acceptance_bounds)
    frames[FAILED_FRAME] = failed_share_frame(frames["sample_keys"])
    known = (known_reason_codes() | _spec_validator_codes(spec)
             | frozenset(settings.extra_reason_codes))
    checks = build_checks(queries, frames, known_codes=known, bounds=settings.acceptance_bounds,
                          max_failed_share=settings.max_failed_share)
    results = _validate(frames, checks)
    outcomes = [_outcome(c, results[c.name], frames[c.frame]) for c in checks]
    return GateResult(run_id=run_id, passed=all(o.success for o in outcomes),
                      checked_at=checked_at, outcomes=outcomes)


def save_gate_result(session: Session, *, result: GateResult) -> None:
    """Store the result in the caller's transaction (saving the same result twice, e.g. from a
    retried task, keeps one row: (run_id, checked_at) is unique)."""
    session.execute(insert(quality_gate_results).values(
        run_id=result.run_id, checked_at=result.checked_at, passed=result.passed,
        result=result.model_dump(mode="json"),
    ).on_conflict_do_nothing(index_elements=["run_id", "checked_at"]))


# ------------------------------------------------------------------------------------ messages

def _cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fence(body: str) -> str:
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", body)), default=0))
    return f"{ticks}sql\n{body}\n{ticks}"


def _gate_markdown(result: GateResult) -> str:
    when = result.checked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if result.skipped:
        return f"# Quality gate: skipped\n\nRun `{result.run_id}`: the gate is disabled " \
               f"(`quality_gate.enabled: false`), checked {when}.\n"
    met = sum(o.success for o in result.outcomes)
    lines = [f"# Quality gate: {'passed' if result.passed else 'FAILED'}", "",
             f"Run `{result.run_id}`, checked {when}: {met} of {len(result.outcomes)} "
             "expectations met.", "", "| | Expectation | Observed |", "|---|---|---|"]
    lines += [f"| {'pass' if o.success else '**FAIL**'} | {_cell(o.expectation)} | "
              f"{_cell(o.observed)} |" for o in result.outcomes]
    for o in result.failed_outcomes:
        lines += ["", f"## {o.expectation}", "", f"{o.description}. The failing rows:", "",
                  _fence(o.failing_rows_sql)]
    return "\n".join(lines) + "\n"


def _shell_double_quoted(value: str) -> str:
    """POSIX shell double quotes: only \\ " $ ` are special inside them."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def psql_command(sql: str, *, url: str = '"$(foldem db url --libpq)"') -> str:
    """A shell command that runs `sql` in psql; `url` is shell text (already quoted)."""
    return f"psql {url} -c {_shell_double_quoted(sql)}"


def _gate_message(result: GateResult) -> str:
    if result.passed:
        what = "skipped (disabled)" if result.skipped else \
            f"passed: all {len(result.outcomes)} expectations met"
        return f"Quality gate for run {result.run_id!r} {what}."
    failed = result.failed_outcomes
    listed = "; ".join(f"{o.expectation} ({o.observed})" for o in failed)
    first = failed[0]
    stored = ("SELECT o ->> 'expectation', o ->> 'failing_rows_sql' FROM quality_gate_results, "
              "jsonb_array_elements(result -> 'outcomes') AS o WHERE run_id = "
              f"{sql_literal(result.run_id)} AND NOT (o ->> 'success')::boolean;")
    return (f"Quality gate FAILED for run {result.run_id!r}: {len(failed)} of "
            f"{len(result.outcomes)} expectations failed: {listed}. See the failing rows of "
            f"{first.expectation} with: {psql_command(first.failing_rows_sql)} -- the query "
            f"for every failing expectation is stored with the result: {psql_command(stored)}")
