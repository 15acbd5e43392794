"""Spreading a stage's calls over its endpoints, and moving them off a failing one.

A stage that lists several endpoints gets an `EndpointPool`. Each call goes to the healthy
endpoint with the lowest (in-flight calls + 1) / weight, so weights set the shares and a slow
endpoint (more calls in flight) gets fewer new ones. Each endpoint has a circuit breaker: after
`failures_to_trip` consecutive failed calls (errors and timeouts, before or after the first token;
never rejections or early exits, never a request the endpoint refused as malformed) it is out for
a cooldown, then one trial call is let through (half-open): success brings it back, failure
doubles the cooldown (up to `max_cooldown_seconds`).

A call that fails before its first token moves to another endpoint at once (no tokens were paid
for, so nothing is charged twice); each endpoint tried gets its own ledger row. While another
endpoint is left to try, the client does not retry the failing one; the last one left gets the
client's usual retries. When every endpoint is out, a call waits for the earliest to come back,
at most `breaker.max_wait_seconds`, then its sample fails with the reason.

A stage with a single endpoint behaves as before: no breaker (there is nowhere to move a call
to, and pausing the only endpoint would only slow the run); the client's retries are all there
is. Endpoints shared by several stages share their breaker and in-flight count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from foldem.core.errors import EndpointError
from foldem.spec.endpoints import Breaker, Endpoint
from foldem.spec.job import JobSpec
from foldem.spec.sections import Stage
from tasks.endpoints.base import CallStats, ChatRequest, EndpointCall, StreamingEndpoint

#: HTTP statuses that say the request is malformed, not that the endpoint is unwell: neither a
#: breaker failure nor worth another endpoint (it would refuse the same request).
REQUEST_FAULTS = frozenset({400, 413, 422})

Clock = Callable[[], float]


@dataclass(slots=True)
class PoolMember:
    """One endpoint as the pools see it: its client, load and breaker."""

    client: StreamingEndpoint
    breaker: CircuitBreaker
    in_flight: int = 0

    @property
    def endpoint(self) -> Endpoint:
        return self.client.endpoint

    @property
    def name(self) -> str:
        return self.client.endpoint.name


@dataclass(slots=True)
class CallAttempt:
    """One endpoint's part of a call: becomes one ledger row."""

    endpoint: Endpoint
    stats: CallStats = field(default_factory=CallStats)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def choose(members: Sequence[PoolMember], exclude: frozenset[str] = frozenset()
           ) -> PoolMember | None:
    """The available member with the lowest (in_flight + 1) / weight; ties: spec order."""
    best: PoolMember | None = None
    best_load = float("inf")
    for m in members:
        if m.name in exclude or not m.breaker.available():
            continue
        load = (m.in_flight + 1) / m.endpoint.weight
        if load < best_load:
            best, best_load = m, load
    return best


class Signal:
    """Wakes every waiter once when a breaker changes; shared by the pools of a router, since
    an endpoint's verdict in one pool can free the waiters of another."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
        except TimeoutError:
            pass


class EndpointPool:
    """The endpoints of one stage target; `stream()` is `StreamingEndpoint.stream` with
    routing, failover before the first token and the breakers."""

    def __init__(self, members: Sequence[PoolMember], *, clock: Clock = time.monotonic,
                 signal: Signal | None = None) -> None:
        self.members = list(members)
        self.clock = clock
        self.guarded = len(self.members) > 1  # breakers only where a call can move
        self.signal = signal or Signal()

    def _notify(self) -> None:
        self.signal.notify()

    async def _checkout(self, tried: frozenset[str], deadline: float) -> PoolMember | None:
        """The member for the next attempt, waiting (until `deadline`) while every untried
        one is out; None when no untried member can come back in time."""
        while True:
            if not self.guarded:
                return None if tried else self.members[0]
            member = choose(self.members, tried)
            if member is not None:
                return member
            left = [m for m in self.members if m.name not in tried]
            wake = min((m.breaker.ready_at() for m in left), default=float("inf"))
            now = self.clock()
            # wake is infinite while only trials are in flight: their verdict may come any time
            if not left or now >= deadline or deadline < wake < float("inf"):
                return None
            await self.signal.wait(min(wake, deadline) - now)  # a verdict may come sooner

    def _all_out(self) -> EndpointError:
        return EndpointError(", ".join(m.name for m in self.members), (
            "every endpoint of the stage is out of service: "
            + "; ".join(f"{m.name}: {m.breaker.last_error or 'cooling down'}"
                        for m in self.members)), retryable=True)

    def _retries_for(self, member: PoolMember, tried: frozenset[str]) -> int | None:
        """0 while another endpoint is left to move to; else the client's own retries."""
        others = [m for m in self.members if m.name not in tried and m is not member]
        return 0 if self.guarded and others else None

    def _settle(self, member: PoolMember, trial: bool, *, failed: bool | None,
                error: str | None = None) -> None:
        """Tell the breaker how the call ended (failed None: abandoned, no verdict)."""
        if not self.guarded:
            return
        if failed is None:
            member.breaker.on_abandon(trial)
        else:
            member.breaker.on_result(failed=failed, trial=trial, error=error)
        self._notify()

    @asynccontextmanager
    async def stream(self, request: ChatRequest, *, attempts: list[CallAttempt]
                     ) -> AsyncIterator[EndpointCall]:
        """`StreamingEndpoint.stream` on the chosen endpoint, moving to another one while the call
        fails before its first token. Each endpoint tried is appended to `attempts` (the last
        is the stream yielded). Raises EndpointError when no endpoint could take the call."""
        tried: frozenset[str] = frozenset()
        last_error: EndpointError | None = None
        deadline = self.clock() + max(m.endpoint.breaker.max_wait_seconds for m in self.members)
        while True:
            member = await self._checkout(tried, deadline)
            if member is None:
                raise last_error or self._all_out()
            attempt = CallAttempt(member.endpoint)
            attempts.append(attempt)
            trial = member.breaker.on_send() if self.guarded else False
            retries = self._retries_for(member, tried)
            tried |= {member.name}
            member.in_flight += 1
            opened = False
            try:
                async with member.client.stream(request, stats=attempt.stats,
                                                max_retries=retries) as call:
                    opened = True
                    if self.guarded:
                        member.breaker.on_first_token(trial)
                        self._notify()
                    yield call
            except EndpointError as exc:
                attempt.stats.error = exc.message  # its ledger row says why it failed here
                failed = exc.status not in REQUEST_FAULTS
                self._settle(member, trial, failed=failed, error=exc.reason)
                if opened or not failed:
                    raise  # tokens were paid, or any endpoint would refuse the request
                last_error = exc
                continue
            except BaseException:
                self._settle(member, trial, failed=None)
                raise
            else:
                self._settle(member, trial, failed=False)
                return
            finally:
                member.in_flight -= 1


class EndpointRouter:
    """The pools of a job: one member per endpoint (shared by every stage that calls it), one
    pool per distinct endpoint list."""

    def __init__(self, job: JobSpec, clients: Mapping[str, StreamingEndpoint], *,
                 clock: Clock = time.monotonic) -> None:
        self.job = job
        self.members = {name: PoolMember(client, CircuitBreaker(client.endpoint.breaker, clock))
                        for name, client in clients.items()}
        self._pools: dict[tuple[str, ...], EndpointPool] = {}
        self._clock = clock
        self._signal = Signal()

    def pool_for(self, stage: Stage) -> EndpointPool:
        return self.pool_for_names(tuple(ep.name for ep in self.job.endpoints_for(stage)))

    def pool_for_names(self, key: tuple[str, ...]) -> EndpointPool:
        """The pool over these endpoints (e.g. a step judge's)."""
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = EndpointPool([self.members[n] for n in key],
                                                   clock=self._clock, signal=self._signal)
        return pool

    def breaker_trips(self) -> dict[str, int]:
        """Times each endpoint's breaker tripped in this process, for the endpoints that have
        one in use (listed by a stage with several endpoints, or tripped at preflight)."""
        guarded = {ep.name for st in self.job.stages
                   if len(eps := self.job.endpoints_for(st)) > 1 for ep in eps}
        return {name: m.breaker.trips for name, m in self.members.items()
                if name in guarded or m.breaker.trips}
