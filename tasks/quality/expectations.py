"""What the quality gate checks: the expectations on one run's frames (tasks/quality/frames.py
reads them), each with the SQL that lists its failing rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.quality.frames import RunQueries, sql_list, sql_literal
from validators.lib.answers import normalize_answer

if TYPE_CHECKING:  # pandas is imported only when the gate runs
    import pandas as pd

MAX_LISTED_KEYS = 200  # failing keys spelled out in a failing_rows_sql (answers that don't parse)
BOUNDS_FRAME = "stage_acceptance_bounds"  # built from the stage_acceptance rows, not from SQL
FAILED_FRAME = "failed_share"  # one row, built from the sample_keys rows


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
    """One row: the share of the run's generated samples that failed (endpoint errors), None
    for a run without any. Superseded samples (k siblings agreed) were not needed: not counted."""
    import pandas as pd

    total = int((sample_keys["status"] != "superseded").sum()) if len(sample_keys) else 0
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
                        f"{sql_literal(queries.run_id)} AND s2.status <> 'superseded') > "
                        f"{limit!r}::float8"),
        "runs", "failed too many samples",
        observe=observe)


def _positive_tokens(queries: RunQueries, column: str, description: str) -> Check:
    """A ledger token column is at least 1 on every call that succeeded (missing values, a
    count the endpoint did not report, are not judged)."""
    return Check(f"ledger_{column}_positive", description, "successful_calls",
                 "ExpectColumnValuesToBeBetween", {"column": column, "min_value": 1},
                 queries.failing("successful_calls", f"{column} < 1"),
                 "successful calls", f"report {column} < 1",
                 example=lambda row: f"{_key(row)} stage {row.stage}: {getattr(row, column):g}")


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
        _positive_tokens(queries, "completion_tokens",
                         "calls that succeeded report completion_tokens > 0"),
        _positive_tokens(queries, "prompt_tokens",
                         "calls that succeeded and report prompt_tokens report more than 0"),
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
