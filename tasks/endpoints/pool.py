"""Spreading a stage's calls over its endpoints, moving them off a failing one, and pausing
them while every endpoint of the stage is down.

Each stage gets an `EndpointPool` over its endpoints. Each call goes to the healthy endpoint
with the lowest (in-flight calls + 1) / weight, so weights set the shares and a slow endpoint
(more calls in flight) gets fewer new ones. Each endpoint has a circuit breaker
(tasks/endpoints/breaker.py): after a few consecutive failed calls it is out for a cooldown,
then one trial call tells whether it is back.

A call that fails before its first token moves to another endpoint at once (no tokens were paid
for, so nothing is charged twice); each endpoint tried gets its own ledger row. While another
endpoint is left to try, the client does not retry the failing one; the last one left gets the
client's usual retries.

Pause: when every endpoint of the stage is out, a call does not fail: it waits for a trial to
bring one back, and so does a call that failed on an endpoint already out (it was sent before
the trip, or was a failed trial). A dead endpoint thus pauses the run instead of failing its
queue; the calls whose failures tripped the breakers fail, as their retries are spent. Once the
endpoints have been down for `breaker.max_pause_seconds` (default 300 s) the waiting calls fail,
naming each endpoint and since when it is down. A warning is logged once when a pause starts
and once when it ends. This holds for a stage with a single endpoint too. Endpoints shared by
several stages share their breaker and in-flight count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from foldem.core.errors import EndpointError
from foldem.spec.endpoints import Endpoint
from foldem.spec.job import JobSpec
from foldem.spec.stages import Stage
from tasks.endpoints.base import CallStats, ChatRequest, EndpointCall, StreamingEndpoint
from tasks.endpoints.breaker import BreakerState, CircuitBreaker, Clock

__all__ = ["BreakerState", "CallAttempt", "CircuitBreaker", "EndpointPool", "EndpointRouter",
           "PoolMember", "choose"]

log = logging.getLogger("foldem.endpoints")

#: HTTP statuses that say the request is malformed, not that the endpoint is unwell: neither a
#: breaker failure nor worth another endpoint (it would refuse the same request).
REQUEST_FAULTS = frozenset({400, 413, 422})


@dataclass(slots=True)
class PoolMember:
    """One endpoint as the pools see it: its client, load and breaker."""

    client: StreamingEndpoint
    breaker: CircuitBreaker
    in_flight: int = 0
    waiting: int = 0  # calls paused for it to come back
    paused_since: float | None = None  # the pause's warning was logged; breaker clock time
    waited: int = 0  # calls that waited in the current pause
    gave_up_logged: bool = False

    def pause(self, first: bool) -> None:
        """A call waits for it (`first`: the call's first wait for it); the first call of a
        pause logs it."""
        self.waited += first
        if self.paused_since is None:
            self.paused_since = self.breaker.down_since or self.breaker.clock()
            log.warning("endpoint %s %s: %s; calls to it are paused until a trial call "
                        "finds it back (at most %.0f s); %d waiting", self.name,
                        self.breaker.describe_down(), self.breaker.last_error or "out",
                        self.breaker.settings.pause_seconds, self.waiting)

    def resumed(self) -> None:
        """Its breaker closed: the end of a pause logs it."""
        if self.paused_since is not None and self.breaker.state is BreakerState.CLOSED:
            log.warning("endpoint %s is back after %.0f s down; %d calls waited for it",
                        self.name, self.breaker.clock() - self.paused_since, self.waited)
            self.paused_since, self.waited, self.gave_up_logged = None, 0, False

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
        self.signal = signal or Signal()

    def _notify(self, member: PoolMember) -> None:
        member.resumed()
        self.signal.notify()

    async def _checkout(self, tried: frozenset[str], waited: set[str]) -> PoolMember | None:
        """The member for the next attempt, pausing while every untried one is out (until one
        comes back, or they have been down for their `max_pause_seconds`); None when no
        untried member can come back in time. `waited` (the call's own) gathers the endpoints
        the call waited for."""
        while True:
            member = choose(self.members, tried)
            if member is not None:
                return member
            left = [m for m in self.members if m.name not in tried]
            if not left:
                return None
            wake = min(m.breaker.ready_at() for m in left)
            deadline = max(m.breaker.pause_ends() for m in left)
            now = self.clock()
            # wake is infinite while only trials are in flight: their verdict may come any time
            if now >= deadline or deadline < wake < float("inf"):
                for m in left:
                    if m.paused_since is not None and not m.gave_up_logged:
                        m.gave_up_logged = True
                        log.warning("endpoint %s %s, longer than its max_pause_seconds "
                                    "(%.0f s): calls to it fail until a trial finds it back",
                                    m.name, m.breaker.describe_down(),
                                    m.breaker.settings.pause_seconds)
                return None
            for m in left:
                m.waiting += 1
                m.pause(first=m.name not in waited)
                waited.add(m.name)
            try:
                await self.signal.wait(min(wake, deadline) - now)  # a verdict may come sooner
            finally:
                for m in left:
                    m.waiting -= 1

    def _all_out(self) -> EndpointError:
        return EndpointError(", ".join(m.name for m in self.members), (
            "every endpoint of the stage is out of service: "
            + "; ".join(f"{m.name}: {m.breaker.last_error or 'cooling down'} "
                        f"({m.breaker.describe_down()})" for m in self.members)
            + "; calls wait at most max_pause_seconds for an endpoint to come back"),
            retryable=True)

    def _retries_for(self, member: PoolMember, tried: frozenset[str]) -> int | None:
        """0 while another endpoint is left to move to; else the client's own retries."""
        others = [m for m in self.members if m.name not in tried and m is not member]
        return 0 if others else None

    def _settle(self, member: PoolMember, trial: bool, *, failed: bool | None,
                error: str | None = None) -> None:
        """Tell the breaker how the call ended (failed None: abandoned, no verdict)."""
        if failed is None:
            member.breaker.on_abandon(trial)
        else:
            member.breaker.on_result(failed=failed, trial=trial, error=error)
        self._notify(member)

    @asynccontextmanager
    async def stream(self, request: ChatRequest, *, attempts: list[CallAttempt]
                     ) -> AsyncIterator[EndpointCall]:
        """`StreamingEndpoint.stream` on the chosen endpoint, moving to another one while the call
        fails before its first token. Each endpoint tried is appended to `attempts` (the last
        is the stream yielded). Raises EndpointError when no endpoint could take the call."""
        tried: frozenset[str] = frozenset()
        last_error: EndpointError | None = None
        waited: set[str] = set()  # the endpoints the call waited for to come back
        failed_on_down = False  # it failed on an endpoint that was already out: it may pause
        while True:
            member = await self._checkout(tried, waited)
            if member is None and failed_on_down:
                tried, failed_on_down = frozenset(), False  # wait for the trial, then again
                member = await self._checkout(tried, waited)
            if member is None:
                raise self._all_out() if waited or last_error is None else last_error
            attempt = CallAttempt(member.endpoint)
            attempts.append(attempt)
            trial = member.breaker.on_send()
            retries = self._retries_for(member, tried)
            tried |= {member.name}
            member.in_flight += 1
            opened = False
            try:
                async with member.client.stream(request, stats=attempt.stats,
                                                max_retries=retries) as call:
                    opened = True
                    member.breaker.on_first_token(trial)
                    self._notify(member)
                    yield call
            except EndpointError as exc:
                attempt.stats.error = exc.message  # its ledger row says why it failed here
                failed = exc.status not in REQUEST_FAULTS
                was_down = member.breaker.state is not BreakerState.CLOSED
                self._settle(member, trial, failed=failed, error=exc.reason)
                if opened or not failed:
                    raise  # tokens were paid, or any endpoint would refuse the request
                last_error = exc
                failed_on_down |= was_down
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
