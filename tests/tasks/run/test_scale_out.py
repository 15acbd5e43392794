"""Scale-out and crash/resume on real Prefect workers: the flow deployed from this repository's
prefect.yaml onto a process work pool of a real Prefect server, `prefect worker start`
subprocesses, the replay endpoint over HTTP and Postgres.

* One run, two flow runs, two workers: the shards split between them, each done once, every
  (prompt, sample) once in a final state, one ledger row per call the endpoint served.
* A worker killed with SIGKILL half-way through a run (with its flow-run process): the same
  run started again on a fresh worker finishes it exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
import yaml

from foldem import PROJECT_ROOT
from foldem.replay.launcher import ReplayServer
from tasks.store.db import get_engine
from tests.support import reliability as rel
from tests.support.jobs import write_job
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

PROMPTS, SAMPLES, SHARD = 8, 3, 3  # 24 samples in 8 shards
PACE = 25  # tokens/s per stream: a sample takes a few seconds, so the second worker has time
PREFECT = [sys.executable, "-m", "prefect"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


replay = replay_fixture(PROMPTS, tokens_per_second=PACE)


@pytest.fixture
def env(prefect_api: None, pg_url: str, tmp_path: Path) -> dict[str, str]:
    """What a worker and its flow runs need: the test's Prefect API, the test database, this
    checkout (prefect.yaml's pull step cds there) and a quick poll."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "DATABASE_URL": pg_url, "FOLDEM_REPO": str(PROJECT_ROOT),
            "FOLDEM_STATE_DIR": str(tmp_path / "state"),
            "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO"}


def small_job(tmp_path: Path, base_url: str, name: str, streams: int) -> Path:
    data = rel.reliability_job(base_url, limit=PROMPTS, samples=SAMPLES, name=name,
                           streams=streams, shard_size=SHARD)
    # Not what is tested here: the gate's import takes ~8 s, and near-duplicate removal would
    # turn accepted samples into rejected ones after the fact (replayed texts repeat).
    data["quality_gate"] = {"enabled": False}
    data["dedup"] = {"enabled": False}
    # Workers run in this checkout (prefect.yaml's pull step): export under the test's tmp.
    data["export"] = {"dir": str(tmp_path / "out" / "{job}-{run_id}")}
    return write_job(tmp_path, data)


def deploy(env: dict[str, str], tmp_path: Path, job: Path) -> tuple[str, str]:
    """Create a process pool and deploy the flow with the repository's prefect.yaml (its pull
    step, entrypoint and parameters), only pointed at that pool and job, without a schedule."""
    tag = uuid.uuid4().hex[:8]
    pool, name = f"foldem-test-{tag}", f"scale-out-{tag}"
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployment = spec["deployments"][0]
    deployment.update(name=name, schedules=[], work_pool={"name": pool},
                      parameters={**deployment["parameters"], "job_path": str(job)})
    spec["deployments"] = [deployment]
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    for cmd in (["work-pool", "create", pool, "--type", "process"],
                ["--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--name", name]):
        done = subprocess.run([*PREFECT, *cmd], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return pool, f"generate/{name}"


@contextmanager
def workers(env: dict[str, str], pool: str, log_dir: Path, n: int) -> Iterator[list[Any]]:
    """`prefect worker start` subprocesses, one flow run at a time each; stopped afterwards
    together with any flow-run process they left."""
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        for i in range(n):
            log = stack.enter_context(
                (log_dir / f"worker-{uuid.uuid4().hex[:6]}.log").open("wb"))
            procs.append(subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1",
                 "--name", f"{pool}-w{i}-{uuid.uuid4().hex[:4]}"],
                cwd=log_dir, env=env, stdout=log, stderr=subprocess.STDOUT))
        try:
            yield procs
        finally:
            for proc in procs:
                kill_tree(proc.pid, signal.SIGTERM)
            psutil.wait_procs([psutil.Process(p.pid) for p in procs if p.poll() is None],
                              timeout=15)
            for proc in procs:
                kill_tree(proc.pid, signal.SIGKILL)


def kill_tree(pid: int, sig: int) -> None:
    """Send sig to a process and everything it started (a worker and its flow-run process)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    if sig == signal.SIGKILL:
        psutil.wait_procs(tree, timeout=10)


def trigger(deployment: str, **parameters: Any) -> str:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    return str(flow_run.id)  # type: ignore[union-attr]


async def _flow_runs(deployment: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[dep.id])))


async def _task_names(flow_run_ids: list[str]) -> Counter[str]:
    """Task-run names without their suffix ('complete-run-916' -> 'complete-run')."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[uuid.UUID(i) for i in flow_run_ids])))
    return Counter(r.name.rsplit("-", 1)[0] for r in runs)


def wait_for_flow_runs(deployment: str, count: int, timeout: float, logs: Path,
                       ignore: frozenset[str] = frozenset()) -> list[Any]:
    """Until `count` flow runs of the deployment (not counting `ignore`) exist and are over."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in asyncio.run(_flow_runs(deployment)) if str(r.id) not in ignore]
        states = [str(r.state_type.value) if r.state_type else "?" for r in runs]
        if len(runs) >= count and all(s in TERMINAL for s in states):
            return runs
        if time.monotonic() > deadline or {"FAILED", "CRASHED"} & set(states):
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                              for p in sorted(logs.glob("worker-*.log")))
            pytest.fail(f"flow runs failed or not over in {timeout:.0f} s: {states}\n{tails}")
        time.sleep(0.5)


def shards(url: str, run_id: str) -> list[Any]:
    with get_engine(url).connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT * FROM run_shards WHERE run_id = :r ORDER BY shard_no"), {"r": run_id}))


def run_status(url: str, run_id: str) -> str | None:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"),
                            {"r": run_id}).scalar()


def test_two_workers_share_one_run(env: dict[str, str], pg_url: str, replay: ReplayServer,
                                   tmp_path: Path) -> None:
    run_id = f"scale-out-{uuid.uuid4().hex[:8]}"
    job = small_job(tmp_path, replay.base_url, "scale-out", streams=SHARD)
    pool, deployment = deploy(env, tmp_path, job)
    replay.reset_stats()
    started = time.monotonic()
    with workers(env, pool, tmp_path, 2):
        parent = trigger(deployment, run_id=run_id, database_url=pg_url, flow_runs=2)
        runs = wait_for_flow_runs(deployment, 2, 180, tmp_path)
    wall = time.monotonic() - started
    time.sleep(0.3)  # the replay server's last disconnects

    states = {str(r.id): r.state_type.value for r in runs}
    assert set(states.values()) == {"COMPLETED"}, states
    assert parent in states and len(states) == 2
    assert run_status(pg_url, run_id) == "completed"
    rows = shards(pg_url, run_id)
    assert len(rows) == -(-PROMPTS * SAMPLES // SHARD)
    assert all(r.status == "done" and r.attempts == 1 for r in rows), \
        [(r.shard_no, r.status, r.attempts) for r in rows]
    split = Counter(r.claimed_by for r in rows)
    assert set(split) == set(states), f"shards by flow run: {split}"  # each took at least one
    tasks = asyncio.run(_task_names(list(states)))
    assert tasks["complete-run"] == tasks["export"] == 1, tasks  # one flow run finalized
    assert tasks["read-summary"] == 1, tasks  # the other read its summary
    record = rel.read_run(pg_url, run_id)
    tally = rel.assert_exactly_once(record, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    stats = replay.stats()
    assert len(record.ledger) == len(stats.requests)  # one ledger row per call served
    ledger = rel.assert_ledger_matches(record, stats)
    rel.report("scale_out_two_workers", samples=tally.samples, lost=tally.lost,
           duplicated=tally.duplicated, ledger_mismatch=ledger.mismatch,
           shards_by_flow_run=sorted(split.values()), wall_s=round(wall, 1))


@pytest.mark.slow  # ~55 s; a SIGKILLed holder is also covered by test_claims and test_crash_resume
def test_worker_killed_half_way_then_run_again_finishes_once(
        env: dict[str, str], pg_url: str, replay: ReplayServer, tmp_path: Path) -> None:
    run_id = f"worker-kill-{uuid.uuid4().hex[:8]}"
    job = small_job(tmp_path, replay.base_url, "worker-kill", streams=2 * SHARD)
    pool, deployment = deploy(env, tmp_path, job)
    total = PROMPTS * SAMPLES
    with workers(env, pool, tmp_path, 1) as (worker,):
        killed = trigger(deployment, run_id=run_id, database_url=pg_url, flow_runs=1)
        deadline = time.monotonic() + 120
        while rel.samples_written(pg_url, run_id) < total // 3:
            assert worker.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.1)
        kill_tree(worker.pid, signal.SIGKILL)  # the worker and the flow run it was running
    before = rel.read_run(pg_url, run_id)
    assert total // 3 <= len(before.samples) < total, "killed too late to matter"
    held_when_killed = [r.shard_no for r in shards(pg_url, run_id) if r.status == "pending"
                        and r.attempts == 1]
    assert held_when_killed, "no shard was in flight at the kill"

    replay.reset_stats()
    with workers(env, pool, tmp_path, 1):
        again = trigger(deployment, run_id=run_id, database_url=pg_url, flow_runs=1)
        runs = wait_for_flow_runs(deployment, 1, 180, tmp_path, ignore=frozenset({killed}))
    time.sleep(0.3)
    assert {str(r.id): r.state_type.value for r in runs} == {again: "COMPLETED"}
    assert run_status(pg_url, run_id) == "completed"
    after = rel.read_run(pg_url, run_id)
    tally = rel.assert_exactly_once(after, prompts=PROMPTS, samples_per_prompt=SAMPLES)
    kept = {(s.prompt_id, s.sample_index): s.status for s in before.samples}
    assert {(s.prompt_id, s.sample_index): s.status for s in after.samples
            if (s.prompt_id, s.sample_index) in kept} == kept
    old_calls = {r.call_id for r in before.ledger}
    assert old_calls <= {r.call_id for r in after.ledger}
    resumed = rel.read_run(pg_url, run_id)
    resumed.ledger = [r for r in after.ledger if r.call_id not in old_calls]
    assert len(resumed.ledger) == total - len(before.samples)  # only the missing ones, once
    ledger = rel.assert_ledger_matches(resumed, replay.stats())
    rows = {r.shard_no: r for r in shards(pg_url, run_id)}
    assert all(r.status == "done" for r in rows.values())
    assert all(rows[n].attempts == 2 and rows[n].claimed_by == again for n in held_when_killed)
    rel.report("worker_sigkill_then_rerun", samples=tally.samples, lost=tally.lost,
           duplicated=tally.duplicated, written_before_kill=len(before.samples),
           shards_in_flight_at_kill=len(held_when_killed),
           resumed_ledger_mismatch=ledger.mismatch)
