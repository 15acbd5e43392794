"""`foldem report [--run ID | --since DATE] [--out DIR] [--html [PATH]]`: rejection analytics
for runs, and one run's audit page."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from foldem.core.errors import ConfigError


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def cmd_report(args: argparse.Namespace) -> int:
    if args.html is not None and args.since is not None:
        raise ConfigError("--html writes one run's audit page: choose the run with --run ID "
                          "(default: the latest run), not --since")
    import sqlalchemy as sa

    from tasks.reports.analytics import build_report
    from tasks.reports.tables import render_text
    from tasks.store.db import get_engine, normalize_url, resolve_database_url, session_scope

    url = (normalize_url(args.database_url, source="--database-url") if args.database_url
           else resolve_database_url())
    with session_scope(get_engine(url)) as session:
        session.execute(sa.text("SET TRANSACTION READ ONLY"))  # a report never writes
        report = build_report(session, run_id=args.run, since=args.since)
        audit = None
        if args.html is not None and report.runs:
            from tasks.reports.audit_page import run_audit_path, write_audit_page

            run_id = report.runs[0].run_id
            audit = write_audit_page(session, run_id=run_id, path=Path(args.html) if args.html
                                     else run_audit_path(session, run_id=run_id))
    print(render_text(report))
    if audit is not None:
        print(f"\naudit page of run {report.runs[0].run_id}: {audit}  ({audit.as_uri()})")
    if args.out and not report.empty_reason:
        from tasks.reports.charts import write_report  # matplotlib only when charts are asked for

        files = write_report(report, Path(args.out))
        print(f"\nwrote {len(files)} files to {args.out}: {', '.join(p.name for p in files)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `report` to the foldem command."""
    report = subparsers.add_parser(
        "report", help="what runs rejected, why, where in the generation, and what it cost",
        description="Tables of rejections by stage and validator, tokens used and saved, where "
        "rejections fire and endpoint latency, read from the analytics views; what the runs "
        "cost (at the prices in the ledger) and their jobs' run-over-run trend. Default: the "
        "latest run.")
    which = report.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", help="report on this run")
    which.add_argument("--since", metavar="DATE", type=_day,
                       help="report on the runs started on or after DATE (YYYY-MM-DD, UTC)")
    report.add_argument("--out", metavar="DIR",
                        help="also write PNG charts and report.md into DIR")
    report.add_argument("--html", metavar="PATH", nargs="?", const="",
                        help="also write the run's audit page, one self-contained HTML file "
                        "(every sample, why each was rejected, where its stream was cut) to "
                        "PATH; default: audit.html in the run's export directory")
    report.add_argument("--database-url", metavar="URL",
                        help="Postgres URL (default: DATABASE_URL, else the embedded server)")
    report.set_defaults(func=cmd_report)
