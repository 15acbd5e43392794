"""Claiming shards with advisory locks (tasks/run/claims.py) and working through them with peers
(tasks/run/shard_pool.py), on real Postgres connections: no shard is ever run twice, and a claim
dies with its connection — a killed holder frees its shards at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
import sqlalchemy as sa

from foldem import PROJECT_ROOT
from foldem.core.errors import RunConflictError
from tasks.records.models import Prompt, WorkItem
from tasks.run.claims import PlannedShard, ShardClaims, ShardRow, plan_shards
from tasks.run.lifecycle import begin_run
from tasks.run.shard_pool import lanes_for, shard_streams, work_through
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import run_shards
from tests.support.jobs import job_dict

SHARDS = 6


def _items(prompts: int, samples: int) -> list[WorkItem]:
    return [WorkItem(prompt=Prompt(prompt_id=str(p), text=f"problem {p}"), sample_index=i)
            for p in range(prompts) for i in range(samples)]


@pytest.fixture
def run_id(pg_url: str) -> str:
    """A run with SHARDS shards of 2 items, recorded the way the flow records them."""
    from foldem.spec.job import JobSpec

    rid = f"claims-{uuid.uuid4().hex[:10]}"
    job = JobSpec.model_validate(job_dict("http://127.0.0.1:9/v1", limit=SHARDS, samples=2))
    shards = plan_shards(_items(SHARDS, 2), 2)
    begin_run(pg_url, job, run_id=rid, samples_expected=2 * SHARDS, flow_run_id=None,
              shards=[s.row for s in shards])
    return rid


@pytest.fixture
def two(pg_url: str, run_id: str) -> Iterator[tuple[ShardClaims, ShardClaims]]:
    a = ShardClaims(pg_url, run_id, owner="a", backoff=0.05, max_backoff=0.2)
    b = ShardClaims(pg_url, run_id, owner="b", backoff=0.05, max_backoff=0.2)
    yield a, b
    a.close()
    b.close()


def _rows(url: str, run_id: str) -> dict[int, sa.Row[tuple[object, ...]]]:
    with get_engine(url).connect() as conn:
        return {r.shard_no: r for r in conn.execute(
            sa.select(run_shards).where(run_shards.c.run_id == run_id))}


@pytest.mark.parametrize(("items", "size", "sizes"), [
    (12, 2, [2] * 6), (7, 3, [3, 3, 1]), (3, 8, [3]), (0, 4, []),
])
def test_plan_cuts_the_whole_work_list_in_order(items: int, size: int, sizes: list[int]) -> None:
    work = _items(items, 1)
    shards = plan_shards(work, size)
    assert [len(s.items) for s in shards] == sizes
    assert [i for s in shards for i in s.items] == work
    assert [s.shard_no for s in shards] == list(range(len(sizes)))


@pytest.mark.parametrize(("prompts", "samples", "size", "sizes"), [
    (6, 4, 8, [8, 8, 8]), (5, 3, 8, [6, 6, 3]), (3, 4, 3, [4, 4, 4]), (4, 1, 3, [3, 1]),
])
def test_plan_keeps_a_prompts_samples_together_under_agreement(
        prompts: int, samples: int, size: int, sizes: list[int]) -> None:
    work = _items(prompts, samples)
    shards = plan_shards(work, size, whole_prompts=True)
    assert [len(s.items) for s in shards] == sizes
    assert [i for s in shards for i in s.items] == work
    owner = {}
    for s in shards:
        for i in s.items:
            assert owner.setdefault(i.prompt.prompt_id, s.shard_no) == s.shard_no


def test_a_shard_under_agreement_streams_k_plus_spare_per_prompt() -> None:
    from foldem.spec.job import JobSpec

    data = job_dict("http://127.0.0.1:9/v1", samples=4) | {"shard_size": 8}
    assert shard_streams(JobSpec.model_validate(data)) == 8
    data["early_exit"] = {"agreement": 2, "spare": 1}
    assert shard_streams(JobSpec.model_validate(data)) == 2 * 3


@pytest.mark.parametrize(("streams", "shard_size", "lanes"), [
    (8, 8, 2), (16, 8, 3), (4, 32, 2), (64, 8, 9), (1, 1, 2),
])
def test_lanes_fill_the_streams_plus_one(streams: int, shard_size: int, lanes: int) -> None:
    assert lanes_for(streams, shard_size) == lanes


def test_a_claimed_shard_is_nobody_elses(two: tuple[ShardClaims, ShardClaims],
                                         pg_url: str, run_id: str) -> None:
    a, b = two
    assert a.try_claim(0) and a.try_claim(0)  # holding it already is having it
    assert not b.try_claim(0)
    assert b.held_by_peers([0, 1]) == [0] and a.held_by_peers([0]) == []
    a.finish(0)
    assert not b.try_claim(0), "a done shard is never claimed again"
    assert a.try_claim(1)
    a.release(1)  # failed there: free for a peer, still pending
    assert b.try_claim(1)
    rows = _rows(pg_url, run_id)
    assert (rows[0].status, rows[0].claimed_by, rows[0].attempts) == ("done", "a", 1)
    assert (rows[1].status, rows[1].claimed_by, rows[1].attempts) == ("pending", "b", 2)
    assert b.remaining() == [1, 2, 3, 4, 5]
    assert not a.try_claim(SHARDS), "not a shard of this run"


def test_closing_the_connection_frees_every_claim(two: tuple[ShardClaims, ShardClaims]) -> None:
    a, b = two
    assert a.try_claim(2) and a.try_claim(3)
    a.close()
    assert b.try_claim(2) and b.try_claim(3)


def test_a_holder_killed_with_sigkill_frees_its_shard_at_once(
        pg_url: str, run_id: str) -> None:
    code = ("import sys, time; from tasks.run.claims import ShardClaims\n"
            "c = ShardClaims(sys.argv[1], sys.argv[2], owner='doomed')\n"
            "assert c.try_claim(4); print('claimed', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, pg_url, run_id], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, text=True)
    survivor = ShardClaims(pg_url, run_id, owner="survivor")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        assert not survivor.try_claim(4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        while not survivor.try_claim(4):  # Postgres ends the session when the socket closes
            assert time.monotonic() - killed < 5, "the dead holder's claim was not freed"
            time.sleep(0.02)
        print(f"claim free {1000 * (time.monotonic() - killed):.0f} ms after SIGKILL")
    finally:
        proc.kill()
        survivor.close()


def test_a_dropped_connection_keeps_its_claims_unless_a_peer_took_them(
        two: tuple[ShardClaims, ShardClaims], pg_url: str) -> None:
    a, b = two
    assert a.try_claim(0) and a.try_claim(1)

    def drop_a() -> None:  # as a database restart or a network blip would
        pid = a._call(lambda conn: conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        with get_engine(pg_url).connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"),
                                {"p": pid}).scalar()  # waits until the session has ended
            conn.commit()

    drop_a()  # nobody takes anything meanwhile: the heartbeat reconnects and re-locks
    assert a.check() == set()
    assert a.held == {0, 1} and not b.try_claim(0) and not b.try_claim(1)
    drop_a()
    assert b.try_claim(1)  # a peer is faster than a's reconnect
    assert a.check() == {1}, "the shard a peer took is reported lost"
    assert a.held == {0} and not b.try_claim(0)


def test_another_cut_of_the_same_run_is_refused(pg_url: str, run_id: str) -> None:
    from tasks.run.claims import register_shards

    other = [ShardRow(0, 3, "0/0"), ShardRow(1, 3, "1/1")]
    with pytest.raises(RunConflictError, match="shards"), \
            session_scope(get_engine(pg_url)) as session:
        register_shards(session, run_id=run_id, shards=other)


async def _peers(pg_url: str, run_id: str, fail_in: Mapping[str, set[int]] | None = None
                 ) -> tuple[Counter[int], dict[str, object]]:
    """Two flow runs' worth of work_through on the same run, concurrently; counts every start
    of a shard's work (a shard run twice would count 2)."""
    shards = plan_shards(_items(SHARDS, 2), 2)
    started: Counter[int] = Counter()
    shares: dict[str, object] = {}

    async def one(owner: str, delay: float) -> None:
        claims = ShardClaims(pg_url, run_id, owner=owner)

        async def run_shard(s: PlannedShard) -> dict[str, int]:
            started[s.shard_no] += 1
            await asyncio.sleep(0.05)
            if s.shard_no in (fail_in or {}).get(owner, set()):
                raise RuntimeError(f"shard {s.shard_no} broke at {owner}")
            return {"accepted": len(s.items)}

        await asyncio.sleep(delay)
        try:
            shares[owner] = await work_through(claims, shards, run_shard, lanes=2, poll=0.05)
        finally:
            claims.close()

    await asyncio.gather(one("a", 0), one("b", 0.01))
    return started, shares


def test_two_peers_split_the_shards_without_running_one_twice(pg_url: str, run_id: str) -> None:
    started, shares = asyncio.run(_peers(pg_url, run_id))
    assert started == Counter(range(SHARDS))  # each shard ran exactly once
    rows = _rows(pg_url, run_id)
    assert {r.status for r in rows.values()} == {"done"}
    by = Counter(r.claimed_by for r in rows.values())
    assert set(by) == {"a", "b"}, by
    done = [n for share in shares.values() for n in share.done]  # type: ignore[attr-defined]
    assert sorted(done) == list(range(SHARDS))


def test_a_shard_that_fails_at_one_peer_is_finished_by_the_other(pg_url: str,
                                                                  run_id: str) -> None:
    started, shares = asyncio.run(_peers(pg_url, run_id, fail_in={"a": {0, 1}}))
    rows = _rows(pg_url, run_id)
    assert {r.status for r in rows.values()} == {"done"}
    assert shares["a"].failures.keys() <= {0, 1}  # type: ignore[attr-defined]
    for n in shares["a"].failures:  # type: ignore[attr-defined]
        assert started[n] == 2 and rows[n].claimed_by == "b" and rows[n].attempts == 2
    assert all(started[n] == 1 for n in range(SHARDS)
               if n not in shares["a"].failures)  # type: ignore[attr-defined]


def test_a_shard_failing_everywhere_ends_both_peers(pg_url: str, run_id: str) -> None:
    started, shares = asyncio.run(_peers(pg_url, run_id, fail_in={"a": {3}, "b": {3}}))
    assert started[3] == 2  # tried once by each, then given up: no endless loop
    rows = _rows(pg_url, run_id)
    assert rows[3].status == "pending" and rows[3].attempts == 2
    assert [n for n, r in rows.items() if r.status != "done"] == [3]
