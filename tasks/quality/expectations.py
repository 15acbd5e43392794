"""What the quality gate checks: the SQL that reads one run, and the expectations on its rows.

Each check runs on a *frame*: the rows one SQL query returns for the run, holding only the
columns the check needs (a large run's texts never leave Postgres; "has solution text" is
computed in SQL). The query is rendered with the run id as a quoted literal and executed exactly
as rendered, so the `failing_rows_sql` a report hands the user — that query wrapped in a WHERE
that keeps the failing rows — shows the very rows the gate judged. Rendered SQL contains no
`:name` outside quotes and no double quotes: it pastes into psql and into `psql -c "..."`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from validators.lib.answers import normalize_answer

if TYPE_CHECKING:  # pandas is imported only when the gate runs
    import pandas as pd

MAX_LISTED_KEYS = 200  # failing keys spelled out in a failing_rows_sql (answers that don't parse)
HAS_TEXT = "~ '[^[:space:]]'"  # a regex match: at least one non-blank character
BOUNDS_FRAME = "stage_acceptance_bounds"  # built from the stage_acceptance rows, not from SQL
FAILED_FRAME = "failed_share"  # one row, built from the sample_keys rows


def sql_literal(value: str) -> str:
    """A Postgres string literal (standard_conforming_strings, the default since 9.1)."""
    if "\x00" in value:
        raise ValueError("a Postgres string cannot hold NUL")
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(sql_literal(v) for v in values) + ")"


def _one_line(sql: str) -> str:
    return " ".join(sql.split())


# Templates: {run} is the run id literal; {solve_filter} picks the solution among stage texts.
_ACCEPTED = """
SELECT s.id AS sample_id, s.prompt_id, s.sample_index,
       CASE WHEN sol.text {has_text} THEN length(sol.text) END AS solution_chars,
       CASE WHEN s.final_answer {has_text} THEN s.final_answer END AS final_answer
FROM samples AS s
LEFT JOIN LATERAL (
    SELECT t.elem ->> 'text' AS text
    FROM jsonb_array_elements(s.stage_texts) WITH ORDINALITY AS t(elem, pos)
    WHERE {solve_filter} ORDER BY t.pos DESC LIMIT 1) AS sol ON true
WHERE s.run_id = {run} AND s.status = 'accepted'
"""
_SAMPLE_KEYS = """
SELECT s.id AS sample_id, s.prompt_id, s.sample_index, s.status,
       count(*) OVER (PARTITION BY s.prompt_id, s.sample_index) AS copies
FROM samples AS s WHERE s.run_id = {run}
"""
_CALLS = """
SELECT l.call_id::text AS call_id, l.prompt_id, l.sample_index, l.stage, l.endpoint,
       l.prompt_tokens, l.completion_tokens, l.count_source
FROM ledger AS l WHERE l.run_id = {run} AND l.error IS NULL
"""
_REJECTIONS = """
SELECT r.prompt_id, r.sample_index, r.stage, r.validator, r.reason_code
FROM rejections AS r WHERE r.run_id = {run}
"""
# Per stage: samples that reached it (have its text) and what happened there. A sample passed a
# stage unless it was rejected there, or failed (endpoint error) on it as its last stage text.
# A rejection at a stage the sample has no text for comes from a filter after generation (e.g.
# near-duplicate removal); every sample still accepted passed that filter.
# acceptance = passed / (passed + rejected): endpoint failures say nothing about quality.
_STAGES = """
WITH visits AS (
    SELECT s.prompt_id, s.sample_index, s.status, t.elem ->> 'stage' AS stage,
           t.pos = jsonb_array_length(s.stage_texts) AS last_visit
    FROM samples AS s
    CROSS JOIN LATERAL jsonb_array_elements(s.stage_texts) WITH ORDINALITY AS t(elem, pos)
    WHERE s.run_id = {run}
), run_rejections AS (
    SELECT r.prompt_id, r.sample_index, r.stage FROM rejections AS r WHERE r.run_id = {run}
), filter_rejections AS (
    SELECT rr.stage FROM run_rejections AS rr WHERE NOT EXISTS (
        SELECT 1 FROM visits AS v WHERE v.prompt_id = rr.prompt_id
        AND v.sample_index = rr.sample_index AND v.stage = rr.stage)
), decisions AS (
    SELECT v.stage, CASE WHEN rr.stage IS NOT NULL THEN 'rejected'
                         WHEN v.last_visit AND v.status = 'failed' THEN 'failed'
                         ELSE 'passed' END AS outcome
    FROM visits AS v LEFT JOIN run_rejections AS rr ON rr.prompt_id = v.prompt_id
        AND rr.sample_index = v.sample_index AND rr.stage = v.stage
    UNION ALL
    SELECT f.stage, 'rejected' FROM filter_rejections AS f
    UNION ALL
    SELECT f.stage, 'passed' FROM (SELECT DISTINCT stage FROM filter_rejections) AS f
    CROSS JOIN samples AS s WHERE s.run_id = {run} AND s.status = 'accepted'
)
SELECT stage, count(*) AS reached,
       count(*) FILTER (WHERE outcome = 'passed') AS passed,
       count(*) FILTER (WHERE outcome = 'rejected') AS rejected,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       (count(*) FILTER (WHERE outcome = 'passed'))::float8
           / nullif(count(*) FILTER (WHERE outcome <> 'failed'), 0) AS acceptance
FROM decisions GROUP BY stage
"""
_TEMPLATES = {"accepted_samples": _ACCEPTED, "sample_keys": _SAMPLE_KEYS,
              "successful_calls": _CALLS, "rejections": _REJECTIONS, "stage_acceptance": _STAGES}


@dataclass(frozen=True)
class RunQueries:
    """The frame queries for one run, rendered with literals (see the module docstring)."""

    run_id: str
    solve_stages: tuple[str, ...] = ()  # stage names holding the solution; () = the last stage

    def frame_sql(self, frame: str) -> str:
        solve_filter = (f"t.elem ->> 'stage' IN {sql_list(self.solve_stages)}"
                        if self.solve_stages else "true")
        return _one_line(_TEMPLATES[frame]).format(
            run=sql_literal(self.run_id), solve_filter=solve_filter, has_text=HAS_TEXT)

    def failing(self, frame: str, condition: str) -> str:
        return f"SELECT * FROM ({self.frame_sql(frame)}) AS {frame} WHERE {condition};"

    @property
    def frames(self) -> list[str]:
        return list(_TEMPLATES)


@dataclass(frozen=True)
class Check:
    """One expectation: a GX expectation class and its arguments, over one frame."""

    name: str
    description: str
    frame: str
    gx_type: str  # class name in great_expectations.expectations
    gx_kwargs: Mapping[str, Any]
    failing_rows_sql: str
    subject: str  # "accepted samples": what element_count counts
    fault: str  # "have no solution text": what unexpected_count counts
    example: Callable[[Any], str] = field(default=lambda row: f"{row.prompt_id}#{row.sample_index}")
    observe: Callable[[dict[str, Any], pd.DataFrame], str] | None = None  # overrides the default

    def observed(self, result: dict[str, Any], examples: pd.DataFrame) -> str:
        """A short summary from GX's result and the first failing rows."""
        if self.observe is not None:
            return self.observe(result, examples)
        unexpected = int(result.get("unexpected_count") or 0)
        judged = int(result.get("element_count") or 0) - int(result.get("missing_count") or 0)
        text = f"{unexpected} of {judged} {self.subject} {self.fault}"
        if unexpected:
            text += "; e.g. " + ", ".join(self.example(r) for r in examples.itertuples())
        return text


def exception_message(info: Any) -> str | None:
    """The error GX caught while evaluating an expectation (it reports, it does not raise)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    nested = (exception_message(v) for v in info.values() if isinstance(v, dict))
    return next((m for m in nested if m), None)


def _key(row: Any) -> str:
    return f"{row.prompt_id}#{row.sample_index}"


def add_answer_parses(accepted: pd.DataFrame) -> None:
    """answer_parses: normalize_answer accepts the final answer (None where there is none).
    Python, not SQL: the gate uses the same parser as the validators and the export."""
    accepted["answer_parses"] = [
        None if not isinstance(a, str) else normalize_answer(a) is not None
        for a in accepted["final_answer"]]


def _answer_keys_sql(queries: RunQueries, accepted: pd.DataFrame) -> tuple[str, int]:
    failing = accepted[accepted["answer_parses"] == False]  # noqa: E712 - elementwise
    keys = [f"({sql_literal(str(r.prompt_id))}, {int(r.sample_index)})"
            for r in failing.head(MAX_LISTED_KEYS).itertuples()]
    condition = (f"(prompt_id, sample_index) IN (VALUES {', '.join(keys)})" if keys else "false")
    return queries.failing("accepted_samples", condition), len(failing)


def stage_column(index: int) -> str:
    """Column of the one-row acceptance frame for the index-th bounded stage (stage names are
    the user's: they never become column names or pandas expressions)."""
    return f"stage_{index}"


def failed_share_frame(sample_keys: pd.DataFrame) -> pd.DataFrame:
    """One row: the share of the run's samples that failed (endpoint errors), None for a run
    without samples."""
    import pandas as pd

    total = len(sample_keys)
    failed = int((sample_keys["status"] == "failed").sum()) if total else 0
    return pd.DataFrame([{"failed_share": failed / total if total else None,
                          "failed": failed, "samples": total}], dtype=object)


def _failed_check(queries: RunQueries, limit: float, share: pd.DataFrame) -> Check:
    row = share.iloc[0]

    def observe(result: dict[str, Any], failing: pd.DataFrame) -> str:
        return (f"{row['failed']} of {row['samples']} samples failed (endpoint errors); at "
                f"most {limit:.0%} may")
    return Check(
        "failed_share_within_bound",
        f"at most {limit:.0%} of the run's samples failed (endpoint errors, not rejections)",
        FAILED_FRAME, "ExpectColumnValuesToBeBetween",
        {"column": "failed_share", "min_value": 0.0, "max_value": limit},
        # The failed samples, listed only when there are too many of them.
        queries.failing("sample_keys", "status = 'failed' AND (SELECT avg((s2.status = 'failed')"
                        f"::int) FROM samples AS s2 WHERE s2.run_id = "
                        f"{sql_literal(queries.run_id)}) > {limit!r}::float8"),
        "runs", "failed too many samples",
        observe=observe)


def build_checks(queries: RunQueries, frames: Mapping[str, pd.DataFrame], *,
                 known_codes: frozenset[str], bounds: Mapping[str, tuple[float, float]],
                 max_failed_share: float = 1.0) -> list[Check]:
    """Every check of the gate for one run, in report order."""
    answers_sql, unparsed = _answer_keys_sql(queries, frames["accepted_samples"])
    codes = sorted(known_codes)
    checks = [
        Check("accepted_samples_have_solution_text",
              "accepted samples have a non-blank solution text", "accepted_samples",
              "ExpectColumnValuesToNotBeNull", {"column": "solution_chars"},
              queries.failing("accepted_samples", "solution_chars IS NULL"),
              "accepted samples", "have no solution text"),
        Check("accepted_samples_have_final_answer",
              "accepted samples have a non-blank final answer", "accepted_samples",
              "ExpectColumnValuesToNotBeNull", {"column": "final_answer"},
              queries.failing("accepted_samples", "final_answer IS NULL"),
              "accepted samples", "have no final answer"),
        Check("final_answers_parse",
              "final answers of accepted samples parse (validators.lib.answers.normalize_answer)",
              "accepted_samples", "ExpectColumnValuesToBeInSet",
              {"column": "answer_parses", "value_set": [True]}, answers_sql,
              "final answers", "do not parse"
              + (f" (failing_rows_sql lists the first {MAX_LISTED_KEYS})"
                 if unparsed > MAX_LISTED_KEYS else ""),
              example=lambda row: f"{_key(row)} {str(row.final_answer)[:40]!r}"),
        Check("ledger_completion_tokens_positive",
              "calls that succeeded report completion_tokens > 0", "successful_calls",
              "ExpectColumnValuesToBeBetween", {"column": "completion_tokens", "min_value": 1},
              queries.failing("successful_calls", "completion_tokens < 1"),
              "successful calls", "report completion_tokens < 1",
              example=lambda row: f"{_key(row)} stage {row.stage}: {row.completion_tokens}"),
        Check("ledger_prompt_tokens_positive",
              "calls that succeeded and report prompt_tokens report more than 0",
              "successful_calls", "ExpectColumnValuesToBeBetween",
              {"column": "prompt_tokens", "min_value": 1},
              queries.failing("successful_calls", "prompt_tokens < 1"),
              "successful calls", "report prompt_tokens < 1",
              example=lambda row: f"{_key(row)} stage {row.stage}: {row.prompt_tokens:g}"),
        Check("sample_keys_unique", "no two samples of the run share (prompt_id, sample_index)",
              "sample_keys", "ExpectCompoundColumnsToBeUnique",
              {"column_list": ["prompt_id", "sample_index"]},
              queries.failing("sample_keys", "copies > 1"),
              "samples", "share their (prompt_id, sample_index) with another sample",
              example=lambda row: f"{_key(row)} x{row.copies}"),
        Check("rejection_reason_codes_known",
              "every rejection's reason code is one a validator or filter declares",
              "rejections", "ExpectColumnValuesToBeInSet",
              {"column": "reason_code", "value_set": codes},
              queries.failing("rejections", f"reason_code NOT IN {sql_list(codes)}"
                              if codes else "true"),
              "rejections", "carry an unknown reason code",
              example=lambda row: f"{row.validator}: {str(row.reason_code)[:40]!r}"),
    ]
    if max_failed_share < 1.0 and FAILED_FRAME in frames:
        checks.append(_failed_check(queries, max_failed_share, frames[FAILED_FRAME]))
    for i, (stage, (low, high)) in enumerate(bounds.items()):
        checks.append(Check(
            f"stage_acceptance_within_bounds[{stage}]",
            f"share of samples accepted at stage {stage!r} is within [{low:g}, {high:g}]",
            BOUNDS_FRAME, "ExpectColumnValuesToBeBetween",
            {"column": stage_column(i), "min_value": low, "max_value": high},
            queries.failing("stage_acceptance", f"stage = {sql_literal(stage)} AND NOT "
                            f"(acceptance BETWEEN {low!r}::float8 AND {high!r}::float8)"),
            "stages", "are out of bounds",
            observe=_acceptance_observer(stage, low, high, frames["stage_acceptance"])))
    return checks


def _acceptance_observer(stage: str, low: float, high: float, tallies: pd.DataFrame
                         ) -> Callable[[dict[str, Any], pd.DataFrame], str]:
    def observe(result: dict[str, Any], failing: pd.DataFrame) -> str:
        rows = tallies[tallies["stage"] == stage]
        if rows.empty or rows.iloc[0]["acceptance"] != rows.iloc[0]["acceptance"]:  # NaN
            return f"no sample was accepted or rejected at stage {stage!r}: nothing to bound"
        row = rows.iloc[0]
        where = "within" if not result.get("unexpected_count") else "outside"
        return (f"acceptance {row['acceptance']:.3f} at stage {stage!r} ({row['passed']} "
                f"passed, {row['rejected']} rejected, {row['failed']} failed) is {where} "
                f"[{low:g}, {high:g}]")
    return observe


def acceptance_frame(tallies: pd.DataFrame, stages: Iterable[str]) -> pd.DataFrame:
    """One row, one column per bounded stage: its acceptance, or None when no sample was
    accepted or rejected there (GX skips missing values, so such a bound holds)."""
    import pandas as pd

    by_stage = {str(s): a for s, a in zip(tallies["stage"], tallies["acceptance"], strict=True)}
    row: dict[str, Any] = {}
    for i, stage in enumerate(stages):
        value = by_stage.get(stage)
        row[stage_column(i)] = None if value is None or value != value else float(value)
    return pd.DataFrame([row], dtype=object)
