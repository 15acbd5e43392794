"""Shared helpers of the test suite: plain modules the tests import. Fixtures live in the
conftest.py files: tests/conftest.py (pg_url, db_session, prefect_api, fresh_state_dir,
replay_launcher; and the `integration` marking), tests/tasks/conftest.py (`fake`),
tests/sql/conftest.py (`scratch_url`).

* fake_endpoint: `FakeEndpoint`, a scriptable OpenAI-compatible server in a thread;
  `fake_fixture(**script)` declares a fixture of one; `serving(app)` runs any ASGI app so;
  `closed_port()`.
* replay: `replay_fixture(traces, tokens_per_second=..., ...)` declares a fixture running the
  replay endpoint (a subprocess: its tests are `integration`) over shared, subset or made-up
  traces; `write_traces`.
* tracedata: the real recorded traces in ../shared/data, read at test time (never copied here).
* jobs: the integration job (`job_dict`, `write_job`) and `run_flow`, the flow in-process.
* reliability: the exactly-once and ledger checks behind docs/RELIABILITY.md; `subset_traces`.
* samples: made-up SampleResults and runs of them (`sample_result`, `ledger_entry`,
  `commit_run`; `Spec`/`save_run` for the analytics views).
* scratch_db: `scratch_database(pg_url)`, a database of a test's own on the test server.
* verdicts: `stream(validator, steps)`, a validator fed checkpoint by checkpoint; `first_fault`.
* custom_validator_pkg: a third-party validator package, for the plugin tests.
"""
