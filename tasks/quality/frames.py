"""The SQL that reads one run for the quality gate: one query per *frame*.

Each check of the gate runs on a frame: the rows one SQL query returns for the run, holding only
the columns the check needs (a large run's texts never leave Postgres; "has solution text" is
computed in SQL). The query is rendered with the run id as a quoted literal and executed exactly
as rendered, so the `failing_rows_sql` a report hands the user — that query wrapped in a WHERE
that keeps the failing rows — shows the very rows the gate judged. Rendered SQL contains no
`:name` outside quotes and no double quotes: it pastes into psql and into `psql -c "..."`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HAS_TEXT = "~ '[^[:space:]]'"  # a regex match: at least one non-blank character


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
# Every sample row, superseded ones too (keys must be unique); the failed share leaves them out.
_SAMPLE_KEYS = """
SELECT s.id AS sample_id, s.prompt_id, s.sample_index, s.status,
       count(*) OVER (PARTITION BY s.prompt_id, s.sample_index) AS copies
FROM samples AS s WHERE s.run_id = {run}
"""
# Calls that succeeded; one cut because k sibling samples agreed may have streamed nothing.
_CALLS = """
SELECT l.call_id::text AS call_id, l.prompt_id, l.sample_index, l.stage, l.endpoint,
       l.prompt_tokens, l.completion_tokens, l.count_source
FROM ledger AS l WHERE l.run_id = {run} AND l.error IS NULL
    AND l.abort_reason IS DISTINCT FROM 'agreement'
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
