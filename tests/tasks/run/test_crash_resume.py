"""Crash and resume: `foldem run` killed with SIGKILL in the middle of a run (no cleanup of any
kind), then the same command with the same --run-id. The re-run completes exactly once: every
(prompt, sample) once in a final state, one ledger row per call, counts that agree, and the
resumed session's ledger equal to what the endpoint sent it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from foldem.replay.launcher import ReplayServer
from tasks.store.db import libpq_url
from tasks.store.embedded_pg import ensure_embedded_postgres
from tests.support import reliability as rel
from tests.support.jobs import write_job
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

FOLDEM = [sys.executable, "-m", "foldem.cli.main"]
PROMPTS, SAMPLES = 8, 4
KILL_AFTER = 8  # samples written before the kill


replay = replay_fixture(PROMPTS, tokens_per_second=100)


def foldem_run(job: Path, run_id: str, cwd: Path, state: Path, **popen: object
               ) -> subprocess.Popen[str]:
    env = {**os.environ, "FOLDEM_STATE_DIR": str(state), "PREFECT_HOME": str(cwd / "prefect")}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen([*FOLDEM, "run", str(job), "--run-id", run_id, "--summary-json",
                             str(cwd / "summary.json")], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)  # type: ignore[call-overload]


def kill_hard(proc: subprocess.Popen[str]) -> list[int]:
    """SIGKILL the command, then the helpers it started (its ephemeral Prefect server), which a
    killed parent can no longer stop; the embedded Postgres runs detached and is kept."""
    try:
        helpers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        helpers = []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for child in helpers:
        try:
            if "postgres" not in " ".join(child.cmdline()):
                child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(helpers, timeout=10)
    return [c.pid for c in helpers]


def test_sigkill_mid_run_then_resume_completes_exactly_once(
        replay: ReplayServer, tmp_path: Path, fresh_state_dir: Path) -> None:
    run_id = "crash-resume"
    job = write_job(tmp_path, rel.reliability_job(replay.base_url, limit=PROMPTS, samples=SAMPLES,
                                              name="crash", streams=4))
    url = ensure_embedded_postgres(fresh_state_dir)  # the run starts the same server anyway
    replay.reset_stats()
    proc = foldem_run(job, run_id, tmp_path, fresh_state_dir)
    deadline = time.monotonic() + 180
    while rel.samples_written(url, run_id) < KILL_AFTER:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was killed:\n{proc.stdout.read()[-3000:]}"
                        if proc.stdout else "the run ended before it was killed")
        assert time.monotonic() < deadline, "no samples written within 180 s"
        time.sleep(0.05)
    kill_hard(proc)
    assert proc.returncode == -signal.SIGKILL
    before = rel.read_run(url, run_id)
    first_session = replay.stats()
    assert KILL_AFTER <= len(before.samples) < PROMPTS * SAMPLES, "killed too late to matter"

    replay.reset_stats()
    again = foldem_run(job, run_id, tmp_path, fresh_state_dir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    time.sleep(0.3)
    after = rel.read_run(url, run_id)

    tally = rel.assert_exactly_once(after, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    with psycopg.connect(libpq_url(url)) as conn:
        shards = conn.execute("SELECT status, attempts, samples FROM run_shards WHERE run_id = %s",
                              (run_id,)).fetchall()
    assert {status for status, _, _ in shards} == {"done"}
    assert sum(n for _, _, n in shards) == PROMPTS * SAMPLES
    # The shards the killed process held were claimed again at once (SIGKILL freed its locks).
    assert any(attempts == 2 for _, attempts, _ in shards)
    assert summary["samples"] == PROMPTS * SAMPLES
    assert summary["accepted"] + summary["rejected"] + summary["failed"] == summary["samples"]
    assert summary["completion_tokens"] == after.ledger_tokens
    # What was written before the kill is kept as it was, not generated again.
    kept = {(s.prompt_id, s.sample_index): s.status for s in before.samples}
    assert {(s.prompt_id, s.sample_index): s.status for s in after.samples
            if (s.prompt_id, s.sample_index) in kept} == kept
    assert {r.call_id for r in before.ledger} <= {r.call_id for r in after.ledger}
    # The resumed session: its calls are exactly the new ledger rows, and they match the server.
    resumed = rel.read_run(url, run_id)
    old_calls = {r.call_id for r in before.ledger}
    resumed.ledger = [r for r in after.ledger if r.call_id not in old_calls]
    assert len(resumed.ledger) == PROMPTS * SAMPLES - len(before.samples)
    ledger = rel.assert_ledger_matches(resumed, replay.stats())
    # Calls in flight when the process died: sent by the server, never recorded (they are
    # generated again on resume; their first tokens are the price of a crash).
    unrecorded = len(first_session.requests) - sum(r.attempts for r in before.ledger)
    rel.report("crash_sigkill_resume", samples=tally.samples, lost=tally.lost,
           duplicated=tally.duplicated, written_before_kill=len(before.samples),
           resumed_ledger_mismatch=ledger.mismatch, calls_in_flight_at_kill=unrecorded,
           tokens_of_calls_in_flight=first_session.total_completion_tokens - before.ledger_tokens)


def _run_status(url: str, run_id: str) -> str | None:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def _sigint_default() -> None:
    # A process started in the background by a non-interactive shell ignores SIGINT; a user's
    # terminal does not. The child gets the terminal's behaviour.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_run_exits_130_marks_interrupted_then_resumes(
        replay: ReplayServer, tmp_path: Path, fresh_state_dir: Path) -> None:
    """Ctrl-C in a terminal reaches the whole process group: foldem and everything it started
    in that group. With no Prefect server configured foldem exits 130 with the resume hint and
    no traceback, and the run is 'interrupted' in Postgres; the same command with --run-id
    completes it exactly once."""
    run_id = "ctrl-c"
    job = write_job(tmp_path, rel.reliability_job(replay.base_url, limit=PROMPTS, samples=SAMPLES,
                                              name="ctrlc", streams=4))
    url = ensure_embedded_postgres(fresh_state_dir)
    replay.reset_stats()  # what the endpoint sent in the two sessions of this test
    proc = foldem_run(job, run_id, tmp_path, fresh_state_dir, start_new_session=True,
                      preexec_fn=_sigint_default)
    deadline = time.monotonic() + 180
    while rel.samples_written(url, run_id) < KILL_AFTER:
        if proc.poll() is not None:
            pytest.fail("the run ended before Ctrl-C")
        assert time.monotonic() < deadline, "no samples written within 180 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)  # before the fix: minutes of retries, then exit 1
    assert proc.returncode == 130, out[-3000:]
    assert f"--run-id {run_id}" in out and "Traceback" not in out, out[-3000:]
    assert "ConnectError" not in out and "All connection attempts failed" not in out
    before = rel.read_run(url, run_id)
    assert _run_status(url, run_id) == "interrupted"
    assert len(before.samples) < PROMPTS * SAMPLES
    # The calls cut by Ctrl-C cost tokens: their rows are written, their samples are not.
    cut = [r for r in before.ledger if r.abort_reason == "interrupted"]
    assert cut and all(r.aborted for r in cut), out[-6000:]
    written = {(s.prompt_id, s.sample_index) for s in before.samples}
    assert not {(r.prompt_id, r.sample_index) for r in cut} & written

    again = foldem_run(job, run_id, tmp_path, fresh_state_dir)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    after = rel.read_run(url, run_id)
    rel.assert_exactly_once(after, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    assert _run_status(url, run_id) == "completed"
    # Both sessions' ledger, the interrupted rows included, is what the endpoint sent.
    rel.assert_ledger_matches(after, replay.stats())
