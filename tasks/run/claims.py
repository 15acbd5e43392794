"""Shards of a run shared by several workers: fixed shards, claimed with advisory locks.

A run's work list (every prompt x sample index, in prompt order) is cut into shards of the
job's `shard_size` over the *whole* list, so every flow run of a run id — the first, a peer on
another machine, a resume after a crash — computes the same shards. The first one records them
in `run_shards`; the others find them there (and refuse to go on if they cut differently). Under
early exit by agreement the cuts fall between prompts: a prompt's samples share one shard, so
its agreement is decided in one process.

Claiming a shard is taking a session-level `pg_try_advisory_lock` on the flow run's own
connection, then checking in `run_shards` that the shard is not done yet. Finishing it marks it
done, then unlocks. There are no leases or timers: the lock lives exactly as long as the
connection, and a process killed with SIGKILL closes its socket, so Postgres ends the session
and frees its shards at once — a peer or a re-run takes them over without waiting. Inside a
shard, samples already in a final state are skipped, so a shard half-done by a killed worker
resumes without duplicates.

If the claims connection drops (a database restart), it is opened again and the shards held are
locked again. A shard a peer took meanwhile is reported as lost (`take_lost`): its holder must
stop working on it. The claims connection must be a real session: not through PgBouncer in
transaction pooling mode, which would hand the lock to another client's session.

One module past 300 lines on purpose: the lock protocol (claim, finish, release, re-lock after
a dropped connection, take-over detection) is correct only as a whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from foldem.core.errors import DatabaseError, RunConflictError
from tasks.records.models import WorkItem
from tasks.store.db import describe_location, normalize_url
from tasks.store.embedded_pg import one_line
from tasks.store.schema import run_shards, runs

log = logging.getLogger("foldem.claims")
T = TypeVar("T")

#: Server-side TCP keepalives for the claims connection: a worker whose machine vanishes
#: (no FIN, no RST) loses its claims after ~idle + interval x count seconds, not hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3


@dataclass(frozen=True, slots=True)
class ShardRow:
    """A shard as `run_shards` records it: enough to tell whether two cuts agree."""

    shard_no: int
    samples: int
    first_item: str  # "prompt_id/sample_index"


@dataclass(frozen=True, slots=True)
class PlannedShard:
    shard_no: int
    items: Sequence[WorkItem]

    @property
    def row(self) -> ShardRow:
        first = self.items[0]
        return ShardRow(self.shard_no, len(self.items),
                        f"{first.prompt.prompt_id}/{first.sample_index}")


@dataclass(frozen=True, slots=True)
class RunState:
    status: str
    shards_left: int


def plan_shards(items: Sequence[WorkItem], size: int, *,
                whole_prompts: bool = False) -> list[PlannedShard]:
    """The run's fixed shards: `items` must be the whole work list, not just what is left.

    `whole_prompts` (early exit by agreement, which counts a prompt's samples together): a
    prompt's samples are never split; a shard takes whole prompts up to `size` samples (a
    prompt with more samples than that is a shard of its own)."""
    if not whole_prompts:
        return [PlannedShard(n, items[start:start + size])
                for n, start in enumerate(range(0, len(items), size))]
    per_prompt = Counter(i.prompt.prompt_id for i in items)
    cuts: list[list[WorkItem]] = []
    for item in items:
        pid = item.prompt.prompt_id
        last = cuts[-1] if cuts else None
        if last is not None and (last[-1].prompt.prompt_id == pid
                                 or len(last) + per_prompt[pid] <= size):
            last.append(item)  # the same prompt, or the next one fits whole
        else:
            cuts.append([item])
    return [PlannedShard(n, cut) for n, cut in enumerate(cuts)]


def register_shards(session: Session, *, run_id: str, shards: Sequence[ShardRow]) -> None:
    """Record the run's shards (a no-op for those already there); RunConflictError if the run
    was cut into different shards before (another prompt file, limit or shard size)."""
    if shards:
        session.execute(insert(run_shards).values([
            {"run_id": run_id, "shard_no": s.shard_no, "samples": s.samples,
             "first_item": s.first_item} for s in shards]).on_conflict_do_nothing())
    stored = {ShardRow(r.shard_no, r.samples, r.first_item) for r in session.execute(
        sa.select(run_shards.c.shard_no, run_shards.c.samples, run_shards.c.first_item)
        .where(run_shards.c.run_id == run_id))}
    if stored != set(shards):
        raise RunConflictError(
            run_id, f"its work list was cut into {len(stored)} shards before, and this job cuts "
            f"it into {len(shards)} different ones (did the prompt file change?). Resume it "
            "with the prompts it was started with, or start a new run with another --run-id")


def reopen_shards(session: Session, *, run_id: str) -> None:
    """Mark the run's finished shards pending again (a resume that retries failed samples):
    their samples already final are skipped when each shard runs."""
    session.execute(sa.update(run_shards).where(run_shards.c.run_id == run_id,
                                                run_shards.c.status == "done")
                    .values(status="pending", finished_at=None))


def lock_key(run_id: str, what: str) -> int:
    """A signed 64-bit advisory-lock key for (run, what); collisions are ~2^-64 per pair."""
    digest = hashlib.blake2b(f"foldem\0{run_id}\0{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ShardClaims:
    """One flow run's claims on a run's shards, over its own Postgres connection.

    Blocking calls, safe from several threads (one lock around the connection): call them with
    `asyncio.to_thread` from async code. `close()` drops the connection and every claim with it.
    """

    def __init__(self, database_url: str, run_id: str, *, owner: str | None = None,
                 retries: int = 6, backoff: float = 0.5, max_backoff: float = 16.0) -> None:
        self.run_id = run_id
        self.owner = owner or this_process()
        self.host = this_process()
        self._url = normalize_url(database_url)
        self._engine = sa.create_engine(self._url, poolclass=NullPool, connect_args={
            "connect_timeout": 10, "application_name": "foldem-claims", "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE, "keepalives_interval": KEEPALIVE_INTERVAL,
            "keepalives_count": KEEPALIVE_COUNT})
        self._retries, self._backoff, self._max_backoff = retries, backoff, max_backoff
        self._lock = threading.RLock()
        self._conn: sa.Connection | None = None
        self.held: set[int] = set()
        self._finalizing = False
        self._lost: set[int] = set()

    # -------------------------------------------------------------------------- connection

    def _connect(self) -> sa.Connection:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql(f"SET tcp_keepalives_idle = {KEEPALIVE_IDLE}; "
                             f"SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL}; "
                             f"SET tcp_keepalives_count = {KEEPALIVE_COUNT}")
        return conn

    def _reconnect(self) -> sa.Connection:
        """A new session; the shards held are locked again, or reported lost if a peer took
        them (or finished them) while the old session was gone."""
        if self._conn is not None:
            self._conn.invalidate()
        self._conn = conn = self._connect()
        for shard_no in sorted(self.held):
            if not (self._try_lock(conn, lock_key(self.run_id, f"shard:{shard_no}"))
                    and self._status(conn, shard_no) != "done"):
                self.held.discard(shard_no)
                self._lost.add(shard_no)
                log.warning("run %s: shard %d was taken over while the claims connection was "
                            "down; this worker stops working on it", self.run_id, shard_no)
        if self._finalizing and not self._try_lock(conn, lock_key(self.run_id, "finalize")):
            self._finalizing = False
        return conn

    def _call(self, action: Callable[[sa.Connection], T]) -> T:
        """Run `action` on the claims connection, reconnecting with backoff if it dropped."""
        delay = self._backoff
        with self._lock:
            for attempt in range(self._retries + 1):
                try:
                    conn = self._conn if self._conn is not None else self._reconnect()
                    return action(conn)
                except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                    if self._conn is not None:
                        self._conn.invalidate()
                        self._conn = None
                    if attempt >= self._retries:
                        raise DatabaseError(
                            f"lost the claims connection to Postgres at "
                            f"{describe_location(self._url)}: "
                            f"{one_line(str(exc.orig), make_url(self._url).password)}"
                        ) from None
                    log.warning("claims connection failed (%s); reconnecting in %.1f s",
                                one_line(str(exc.orig), make_url(self._url).password), delay)
                    time.sleep(delay)
                    delay = min(self._max_backoff, delay * 2)
        raise AssertionError("unreachable")

    @staticmethod
    def _try_lock(conn: sa.Connection, key: int) -> bool:
        return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())

    @staticmethod
    def _unlock(conn: sa.Connection, key: int) -> None:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    def _status(self, conn: sa.Connection, shard_no: int) -> str | None:
        return conn.execute(sa.select(run_shards.c.status).where(
            run_shards.c.run_id == self.run_id, run_shards.c.shard_no == shard_no)).scalar()

    # ------------------------------------------------------------------------------- shards

    def try_claim(self, shard_no: int) -> bool:
        """Claim a shard if nobody holds it and it is not done; True if this worker has it."""
        key = lock_key(self.run_id, f"shard:{shard_no}")

        def claim(conn: sa.Connection) -> bool:
            if shard_no in self.held:
                return True
            if not self._try_lock(conn, key):
                return False
            if self._status(conn, shard_no) != "pending":  # done, or not a shard of the run
                self._unlock(conn, key)
                return False
            conn.execute(sa.update(run_shards).where(
                run_shards.c.run_id == self.run_id, run_shards.c.shard_no == shard_no)
                .values(claimed_by=self.owner, claimed_on=self.host, claimed_at=sa.func.now(),
                        attempts=run_shards.c.attempts + 1))
            self.held.add(shard_no)
            return True

        return self._call(claim)

    def finish(self, shard_no: int) -> None:
        """Mark a shard done (all its samples are in a final state), then free it."""

        def done(conn: sa.Connection) -> None:
            conn.execute(sa.update(run_shards).where(
                run_shards.c.run_id == self.run_id, run_shards.c.shard_no == shard_no)
                .values(status="done", finished_at=sa.func.now()))
            self._release(conn, shard_no)

        self._call(done)

    def release(self, shard_no: int) -> None:
        """Free a shard without marking it done (it failed here; a peer may try it)."""
        self._call(lambda conn: self._release(conn, shard_no))

    def _release(self, conn: sa.Connection, shard_no: int) -> None:
        if shard_no in self.held:
            self._unlock(conn, lock_key(self.run_id, f"shard:{shard_no}"))
            self.held.discard(shard_no)

    def held_by_peers(self, shard_nos: Sequence[int]) -> list[int]:
        """Those of the shards (not held here) that another session holds right now."""
        def probe(conn: sa.Connection) -> list[int]:
            busy = []
            for shard_no in shard_nos:
                key = lock_key(self.run_id, f"shard:{shard_no}")
                if shard_no in self.held:
                    continue
                if self._try_lock(conn, key):
                    self._unlock(conn, key)
                else:
                    busy.append(shard_no)
            return busy

        return self._call(probe)

    def remaining(self) -> list[int]:
        """The shards not done yet, in order (held by anyone or by no one)."""
        return self._call(lambda conn: list(conn.execute(
            sa.select(run_shards.c.shard_no).where(run_shards.c.run_id == self.run_id,
                                                   run_shards.c.status != "done")
            .order_by(run_shards.c.shard_no)).scalars()))

    def check(self) -> set[int]:
        """A heartbeat: reconnects if the connection dropped; returns the shards lost since
        the last call (taken over by a peer meanwhile), which this worker must stop."""
        self._call(lambda conn: conn.execute(sa.text("SELECT 1")))
        return self.take_lost()

    def take_lost(self) -> set[int]:
        with self._lock:
            lost, self._lost = self._lost, set()
            return lost

    # --------------------------------------------------------------------------- finishing

    def try_finalize(self) -> bool:
        """Take the run's finalize lock (one flow run at a time dedups, gates and exports)."""
        key = lock_key(self.run_id, "finalize")

        def take(conn: sa.Connection) -> bool:
            self._finalizing = self._finalizing or self._try_lock(conn, key)
            return self._finalizing

        return self._call(take)

    def run_state(self) -> RunState:
        def read(conn: sa.Connection) -> RunState:
            status = conn.execute(sa.select(runs.c.status)
                                  .where(runs.c.run_id == self.run_id)).scalar()
            left = conn.execute(sa.select(sa.func.count()).select_from(run_shards).where(
                run_shards.c.run_id == self.run_id, run_shards.c.status != "done")).scalar()
            return RunState(status=str(status), shards_left=int(left or 0))

        return self._call(read)

    def close(self) -> None:
        """Drop the connection: Postgres frees every lock it held."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.held.clear()
            self._finalizing = False
            self._engine.dispose()
