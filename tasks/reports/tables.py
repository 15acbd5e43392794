"""`foldem report`'s tables: the analytics report (tasks/reports/analytics.py) as titled tables
with formatted cells, in display order, and as aligned plain text for the terminal. The charts
(tasks/reports/charts.py) and report.md take their tables from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from tasks.reports.costs import cost_tables
from tasks.reports.rows import AnalyticsReport, FireRow
from tasks.reports.summary import money


class Table(BaseModel):
    """One titled table, cells already formatted; `numeric[i]`: right-align column i."""

    key: str  # names the chart that goes with it
    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    note: str = ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    """Right-align numbers, percentages and missing values ("-")."""
    if isinstance(value, str):
        return value == "-" or value.endswith("%") or value.lstrip("~-").startswith("$")
    return value is None or isinstance(value, int | float | Decimal)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _table(key: str, title: str, headers: list[str], rows: Sequence[Sequence[Any]],
           note: str = "") -> Table:
    numeric = [bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(headers))]
    return Table(key=key, title=title, headers=headers, numeric=numeric, note=note,
                 rows=[[_cell(v) for v in r] for r in rows])


def _fire_table(key: str, title: str, first: str, rows: list[FireRow]) -> Table:
    """Buckets as rows, one column per validator, then total and in flight."""
    validators = sorted({r.validator for r in rows})
    buckets: dict[str, dict[str, int]] = {}
    for r in rows:  # the query returns buckets in order; dicts keep it
        counts = buckets.setdefault(r.bucket, {"total": 0, "in flight": 0})
        counts[r.validator] = counts.get(r.validator, 0) + r.rejections
        counts["total"] += r.rejections
        counts["in flight"] += r.in_flight
    names = [*validators, "total", "in flight"]
    return _table(key, title, [first, *names],
                  [[bucket, *(c.get(n, 0) for n in names)] for bucket, c in buckets.items()],
                  note="in flight: the rejection cut the stream; the others fired after it "
                       "ended.")


def report_tables(report: AnalyticsReport) -> list[Table]:
    """The report's tables in display order (none for an empty report)."""
    if report.empty_reason:
        return []
    return [
        _table("runs", "Runs", ["run", "job", "status", "started (UTC)", "samples", "accepted",
                                "rejected", "failed", "superseded"],
               [(r.run_id, r.job_name, r.status, f"{r.started_at.astimezone(UTC):%Y-%m-%d %H:%M}",
                 r.samples, r.accepted, r.rejected, r.failed, r.superseded)
                for r in report.runs]),
        _table("stages", "Rejections by stage", ["stage", "samples", "rejected", "rejected %",
                                                 "calls cut", "call errors"],
               [(r.stage, r.samples, r.rejected, _pct(r.rejection_pct), r.aborted_calls,
                 r.errored_calls) for r in report.stages]),
        _table("rejections", "Rejections by validator",
               ["stage", "validator", "rejections", "% of stage samples", "% of rejections",
                "reason codes"],
               [(r.stage, r.validator, r.rejections, _pct(r.pct_of_stage),
                 _pct(r.pct_of_rejections), r.reasons) for r in report.validators]),
        _table("tokens", "Tokens used and saved",
               ["stage", "counted by", "calls", "calls cut", "prompt", "completion",
                "on rejected", "saved (est.)", "saved %"],
               [(r.stage, r.count_source, r.calls, r.aborted_calls, r.prompt_tokens,
                 r.completion_tokens, r.completion_tokens_rejected, r.tokens_saved,
                 _pct(r.saved_pct)) for r in report.tokens],
               note="on rejected: completion tokens spent on samples that were rejected; saved: "
                    "expected length minus what a cut call generated."),
        _fire_table("fire_points", "Where rejections fire: fraction of the stage's expected "
                    "length", "fraction", report.fire_by_fraction),
        _fire_table("fire_tokens", "Where rejections fire: completion tokens into the stage",
                    "tokens", report.fire_by_tokens),
        _table("latency", "Endpoint latency",
               ["endpoint", "model", "calls", "errors", "retries", "TTFT p50 ms", "TTFT p95 ms",
                "duration p50 ms", "duration p95 ms"],
               [(r.endpoint, r.model, r.calls, r.errors, r.retries, r.p50_ttft_ms, r.p95_ttft_ms,
                 r.p50_duration_ms, r.p95_duration_ms) for r in report.latency]),
        *(_table(*spec) for spec in cost_tables(report.cost)),
    ]


def _aligned(table: Table) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, table.numeric, strict=True)).rstrip()

    return [line(table.headers), "  ".join("-" * w for w in widths),
            *(line(r) for r in table.rows)]


def render_text(report: AnalyticsReport) -> str:
    """Aligned plain-text tables for the terminal."""
    if report.empty_reason:
        return f"foldem report: {report.empty_reason}"
    out = [f"foldem report: {report.scope}"]
    for table in report_tables(report):
        out += ["", table.title, *(_aligned(table) if table.rows else ["  (none)"])]
        if table.note and table.rows:
            out.append(f"  ({table.note})")
    return "\n".join(out)
