"""One flow run's share of a run: claim free shards, a few at a time, until none is left.

Every flow run of a run id (one, or several peers on several workers) runs `work_through` over
the same fixed shards. It keeps up to `lanes` shards in flight — enough to keep the endpoints'
stream limits busy, few enough that the shards are spread over the peers instead of all being
taken by whoever started first. When nothing is left to claim it waits for the shards peers
hold: if a peer dies its locks are freed and this flow run takes those shards over, so a run
finishes as long as one of its flow runs lives. It stops when every shard is done, or when the
only shards left are ones that failed here (tried once per flow run) and no peer holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foldem.spec.job import JobSpec
from tasks.run.claims import PlannedShard, ShardClaims

log = logging.getLogger("foldem.shard_pool")

RunShard = Callable[[PlannedShard], Coroutine[Any, Any, Mapping[str, int]]]


@dataclass
class Share:
    """What this flow run did of the run."""

    done: list[int] = field(default_factory=list)  # shards it finished
    failures: dict[int, BaseException] = field(default_factory=dict)  # shards that failed here
    lost: list[int] = field(default_factory=list)  # shards a peer took over (see claims.py)
    counts: Counter[str] = field(default_factory=Counter)  # accepted / rejected / failed / skipped

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (f"this flow run finished {len(self.done)} shards ({counts or 'no samples'})"
                + (f"; {len(self.failures)} failed here" if self.failures else "")
                + (f"; {len(self.lost)} taken over by a peer" if self.lost else ""))


def lanes_for(streams: int, shard_size: int) -> int:
    """Shards in flight at once: the samples of all but one fill the endpoints' streams, the
    extra one keeps them full while a shard waits for its last, slowest samples."""
    return max(2, -(-streams // shard_size) + 1)


def shard_streams(job: JobSpec) -> int:
    """How many of a shard's samples stream at once, at most: all of them; under early exit by
    agreement (shards of whole prompts), per prompt the k that could agree plus the spare."""
    rule = job.early_exit
    if rule is None:
        return job.shard_size
    prompts = max(1, job.shard_size // job.samples_per_prompt)
    return prompts * min(job.samples_per_prompt, rule.agreement + rule.spare)


async def work_through(claims: ShardClaims, shards: Sequence[PlannedShard], run_shard: RunShard,
                       *, lanes: int, poll: float = 1.0, heartbeat: float = 5.0) -> Share:
    """Claim and run shards until none is left for this flow run; see the module docstring."""
    by_no = {s.shard_no: s for s in shards}
    running: dict[int, asyncio.Task[Mapping[str, int]]] = {}
    tried: set[int] = set()
    abandoned: set[int] = set()  # running here when a peer took them over: results ignored
    share = Share()
    last_beat = time.monotonic()
    waiting_since: float | None = None
    try:
        while True:
            for shard_no, task in list(running.items()):
                if not task.done():
                    continue
                del running[shard_no]
                if task.cancelled() or shard_no in abandoned:
                    continue
                error = task.exception()
                if error is None:
                    await asyncio.to_thread(claims.finish, shard_no)
                    share.done.append(shard_no)
                    share.counts.update(task.result())
                else:
                    share.failures[shard_no] = error
                    await asyncio.to_thread(claims.release, shard_no)
            if time.monotonic() - last_beat >= heartbeat:
                last_beat = time.monotonic()
                for shard_no in await asyncio.to_thread(claims.check):
                    if shard_no in running:
                        running[shard_no].cancel()
                        abandoned.add(shard_no)
                    tried.discard(shard_no)
                    share.lost.append(shard_no)
            remaining = await asyncio.to_thread(claims.remaining)
            if not remaining and not running:
                break
            for shard_no in remaining:
                if len(running) >= lanes:
                    break
                if shard_no in tried or shard_no in running or shard_no not in by_no:
                    continue
                if await asyncio.to_thread(claims.try_claim, shard_no):
                    tried.add(shard_no)
                    abandoned.discard(shard_no)
                    running[shard_no] = asyncio.create_task(run_shard(by_no[shard_no]))
            if running:
                waiting_since = None
                await asyncio.wait(running.values(), timeout=poll,
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            failed_here = [n for n in remaining if n in tried]
            if len(failed_here) == len(remaining) and not await asyncio.to_thread(
                    claims.held_by_peers, failed_here):
                break  # only shards that failed here are left, and no peer is on them
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.info("run %s: waiting for %d shards that peers hold", claims.run_id,
                         len(remaining))
            await asyncio.sleep(poll)
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
    return share
