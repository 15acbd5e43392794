"""The `foldem` command. User mistakes end with a message and an exit code, not a traceback.

Exit codes: 0 ok; 1 run finished but failed; 2 bad spec/config; 3 bad input data;
4 endpoint unusable; 5 database unusable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from foldem import __version__
from foldem.core.errors import ConfigError, FoldemError, RunInterruptedError


def _prefect_env() -> None:
    """Offline-friendly Prefect defaults, set before Prefect is imported."""
    from foldem.core.settings import get_settings

    state = get_settings().resolved_state_dir
    try:
        state.mkdir(parents=True, exist_ok=True)  # Prefect creates its home, not the parents
    except OSError as exc:
        raise ConfigError(f"cannot create the state directory {state} ({exc.strerror or exc});"
                          " set FOLDEM_STATE_DIR to a writable directory") from None
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def cmd_run(args: argparse.Namespace) -> int:
    # Imports are late on purpose here and below: `foldem --help` or a bad spec must answer
    # without the seconds it takes to import Prefect.
    import asyncio

    from foldem.spec.job import load_job

    job = load_job(args.job)  # a wrong spec fails here, before Prefect or any call starts
    if any(st.calibration for st in job.stages):  # so do validators over their budget
        from tasks.bench.calibrate import check_budgets

        check_budgets(job, args.job)
    from tasks.run.prompts import load_prompts

    # So does bad prompt data (read again in the flow: a second read is cheap next to a run,
    # and a user's mistake gets its message without a Prefect start or a task traceback).
    load_prompts(job)
    _prefect_env()  # before the keys are read: a Secret block lives in the run's Prefect API
    from flows.generate import generate, new_run_id
    from tasks.reports.summary import summary_text
    from tasks.run.lifecycle import mark_interrupted, prepare_database
    from tasks.run.prefect_api import prefect_api
    from tasks.run.preflight import check_endpoints

    # So does a dead endpoint or a refused key (a key kept in a Prefect Secret block is read
    # through the configured API, or an ephemeral one), and a database that cannot be reached:
    # each in one line, before foldem's own Prefect server starts.
    asyncio.run(check_endpoints(job))
    database_url = prepare_database(job, args.database_url)
    run_id = args.run_id or new_run_id(job.name)
    # SIGTERM (a scheduler or Kubernetes stopping the process) ends the run as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with prefect_api() as api:
        print(f"foldem: running job {job.name!r} from {args.job} as run {run_id}", flush=True)
        try:
            summary = asyncio.run(generate(job_path=str(Path(args.job).resolve()),
                                           run_id=run_id, database_url=args.database_url,
                                           retry_failed=not args.keep_failed))
        except KeyboardInterrupt:
            recorded = mark_interrupted(database_url, run_id=run_id)
            raise RunInterruptedError(run_id, args.job, recorded=recorded) from None
    print()
    print(summary_text(summary))
    if api.temporary:
        print("\n(The Prefect UI above was a temporary server and stopped with this command. "
              "For a UI that keeps every run: `prefect server start` and PREFECT_API_URL, see "
              "README \"Running it nightly with Prefect\".)")
    if args.summary_json:
        path = Path(args.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = ["run_id", "samples", "accepted", "rejected", "failed", "superseded",
                "prompt_tokens", "completion_tokens", "tokens_saved", "agreement_tokens_saved",
                "server_tokens_sent", "endpoints", "cost"]
        data = summary.model_dump(mode="json")  # money as exact decimal strings
        path.write_text(json.dumps({k: data[k] for k in keys} | {"status": summary.status},
                                   indent=2) + "\n")
        print(f"\nsummary written to {path}")
    print("\nQuery the results with SQL:")
    print("  psql \"$(foldem db url --libpq)\" -c "
          f"\"SELECT * FROM run_overview WHERE run_id = '{summary.run_id}'\"")
    print("  (more queries in sql/queries/; resume this run with "
          f"`foldem run {args.job} --run-id {summary.run_id}`)")
    if summary.status == "quarantined":
        print("\nThe run is quarantined: the quality gate failed (see above for which "
              "expectation and the query that shows the failing rows). Its data stays in "
              "Postgres; nothing was exported.", file=sys.stderr)
    return 0 if summary.status == "completed" else 1


def cmd_validators(args: argparse.Namespace) -> int:
    from validators.registry import available

    for name, cls in available().items():
        print(f"{name:<20} {cls.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foldem", description="Synthetic data with in-flight "
                                     "rejection: stop bad generations while they stream.")
    parser.add_argument("--version", action="version", version=f"foldem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a job spec (a Prefect flow; ephemeral API by default)")
    run.add_argument("job", help="job spec YAML, e.g. examples/gsm8k.yaml")
    run.add_argument("--run-id", help="resume this run (or start it under this id)")
    run.add_argument("--database-url", help="Postgres URL (default: DATABASE_URL, the spec's "
                     "database_url, or the embedded server)")
    run.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    run.add_argument("--keep-failed", action="store_true", help="resuming, keep samples that "
                     "failed (endpoint errors) as failed instead of generating them again")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validators", help="list the available validators")
    val.set_defaults(func=cmd_validators)

    from foldem.cli.bench import register as register_bench
    from foldem.cli.db import register as register_db
    from foldem.cli.model import register as register_model
    from foldem.cli.probe import register as register_probe
    from foldem.cli.report import register as register_report
    from foldem.replay.cli import register as register_replay

    register_db(sub)
    register_replay(sub)
    register_bench(sub)
    register_probe(sub)
    register_report(sub)
    register_model(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except FoldemError as exc:
        if args.debug:
            raise
        kind = "" if isinstance(exc, RunInterruptedError) else "error: "
        print(f"foldem: {kind}{exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("foldem: interrupted; re-run with the same --run-id to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
