"""Endpoint limits that hold across processes: Prefect global concurrency limits.

Every process that talks to the same Prefect API shares them, so two flow runs or two workers
calling one model server together stay within its `limits:` (docs/ENDPOINTS.md):

- `max_streams` is a concurrency limit: a slot is held (under a lease) for the whole stream.
- `requests_per_minute` and `tokens_per_minute` are rate limits (limits with slot decay): a call
  takes 1 slot, resp. its prompt tokens plus the stage's expected (else max) completion tokens,
  and the slots drain back at the configured rate. The token figure is reserved before the call
  and never settled afterwards: an aborted stream used less, so the limit errs on the safe side.

Why not `prefect.concurrency.asyncio.concurrency()`: it opens a Prefect client and starts a
lease-renewal thread per acquisition, measured at 90-350 ms per acquire+release here, against
~20 ms for the same two API calls on one long-lived client. With a stream per sample that
matters, so this module uses the client's lease API directly: one client per run, one task that
renews every lease this process holds, and one waiter per limit polling the API at a time (the
rest queue in-process, as Prefect's own acquisition service does). The limit objects are the same
ones `concurrency()` uses and appear on the UI's Concurrency page.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from pydantic import BaseModel

from foldem.core.errors import ConfigError, FoldemError
from foldem.spec.endpoints import Endpoint

log = logging.getLogger("foldem.limits")

#: A lease outlives a crashed process by at most this long; held leases are renewed at a third.
LEASE_SECONDS = 60.0
#: Longest pause between two polls of a full limit (Prefect's Retry-After can say 30 s).
MAX_POLL_SECONDS = 1.0
_LOCKED = 423


class LimitSpec(BaseModel):
    """One Prefect global concurrency limit as foldem configures it."""

    name: str
    limit: int
    slot_decay_per_second: float = 0.0  # > 0: a rate limit


def limit_base_name(endpoint: Endpoint) -> str:
    """`limits.limit_name`, else `foldem:<host:port/path>:<model>` without the scheme (http and
    https reach the same server), '/' replaced (Prefect forbids it in names)."""
    if endpoint.limits.limit_name:
        return endpoint.limits.limit_name
    parts = urlsplit(endpoint.base_url)
    where = (parts.netloc.lower() + parts.path) if parts.netloc else endpoint.base_url
    return re.sub(r"[/%&<>]", "_", f"foldem:{where.rstrip('/')}:{endpoint.model}")


def _rate_capacity(per_minute: int, burst_seconds: float) -> int:
    return max(1, math.ceil(per_minute * burst_seconds / 60))


def limit_specs(endpoint: Endpoint) -> list[LimitSpec]:
    """The limits an endpoint's `limits:` section asks for (none when it is empty)."""
    cfg, base = endpoint.limits, limit_base_name(endpoint)
    specs = []
    if cfg.max_streams:
        specs.append(LimitSpec(name=f"{base}:streams", limit=cfg.max_streams))
    for suffix, per_minute in (("requests-per-minute", cfg.requests_per_minute),
                               ("tokens-per-minute", cfg.tokens_per_minute)):
        if per_minute:
            specs.append(LimitSpec(name=f"{base}:{suffix}",
                                   limit=_rate_capacity(per_minute, cfg.burst_seconds),
                                   slot_decay_per_second=per_minute / 60))
    return specs


def ensure_limits(specs: Sequence[LimitSpec]) -> None:
    """Create or update the limits in the Prefect API (idempotent; the run start calls it).
    The last job to start wins when two configure one server differently: say so in the log."""
    if not specs:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            for spec in specs:
                wanted = {"limit": spec.limit, "slot_decay_per_second": spec.slot_decay_per_second}
                try:
                    current = client.read_global_concurrency_limit_by_name(spec.name)
                except ObjectNotFound:
                    try:
                        client.create_global_concurrency_limit(
                            GlobalConcurrencyLimitCreate(name=spec.name, **wanted))
                        continue
                    except ObjectAlreadyExists:  # another process created it meanwhile
                        current = client.read_global_concurrency_limit_by_name(spec.name)
                if (current.limit, current.slot_decay_per_second) != (
                        spec.limit, spec.slot_decay_per_second):
                    log.warning("concurrency limit %r: limit %s, decay %s/s -> %s, %s/s (this "
                                "job's endpoint limits)", spec.name, current.limit,
                                current.slot_decay_per_second, spec.limit,
                                spec.slot_decay_per_second)
                    client.update_global_concurrency_limit(
                        spec.name, GlobalConcurrencyLimitUpdate(**wanted))
                if not current.active:
                    log.warning("concurrency limit %r is inactive in Prefect: not enforced "
                                "until it is activated again", spec.name)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot set up the endpoint limits in the Prefect API "
                          f"({type(exc).__name__}: {exc}); is the Prefect server reachable?"
                          ) from None


class LimitsSession:
    """One Prefect client and one lease-renewal loop for every limit a run uses in this
    process. Create it in the run's event loop; `aclose()` releases what is still held."""

    def __init__(self, *, holder: dict[str, Any] | None = None) -> None:
        self._holder = holder  # {"type": "flow_run", "id": ...}: shown by Prefect for a lease
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._leases: set[UUID] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Lock] = {}

    async def _api(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                from prefect.client.orchestration import get_client

                client = get_client()
                await client.__aenter__()
                self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for lease_id in list(self._leases):
            await self._release(lease_id)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    async def _poll(self, name: str, request: Callable[[], Awaitable[httpx.Response]],
                    on_orphan: Callable[[httpx.Response], None] | None = None) -> httpx.Response:
        """Send `request()` until the limit grants it; one poller per limit at a time (the
        others queue on the lock). Each request runs as its own task: when the caller is
        cancelled mid-request, `on_orphan` gets the answer if it was a grant."""
        async with self._queues.setdefault(name, asyncio.Lock()):
            while True:
                sent = asyncio.ensure_future(request())
                try:
                    return await asyncio.shield(sent)
                except asyncio.CancelledError:
                    sent.add_done_callback(lambda done: _granted(done, on_orphan))
                    raise
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != _LOCKED:
                        raise FoldemError(f"Prefect refused a slot of limit {name!r}: HTTP "
                                          f"{exc.response.status_code} {exc.response.text[:200]}"
                                          ) from None
                    retry_after = float(exc.response.headers.get("Retry-After", 1.0))
                except httpx.HTTPError as exc:
                    raise FoldemError(f"endpoint limit {name!r}: the Prefect API failed "
                                      f"({type(exc).__name__}: {exc})") from None
                await asyncio.sleep(min(retry_after, MAX_POLL_SECONDS))

    async def take_rate(self, name: str, slots: int) -> None:
        """Wait until the rate limit `name` grants `slots`; they drain back by themselves."""
        client = await self._api()
        await self._poll(name, lambda: client.increment_concurrency_slots(
            names=[name], slots=slots, mode="rate_limit"))

    async def acquire_slot(self, name: str) -> UUID:
        """Hold one slot of `name` under a lease renewed until `release_slot`."""
        from prefect.client.schemas.objects import ConcurrencyLeaseHolder

        client = await self._api()
        holder = ConcurrencyLeaseHolder.model_validate(self._holder) if self._holder else None
        response = await self._poll(name, lambda: client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS,
            holder=holder), on_orphan=self._release_orphan)
        lease_id = UUID(response.json()["lease_id"])
        self._leases.add(lease_id)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())
        return lease_id

    def _release_orphan(self, response: httpx.Response) -> None:
        self._in_background(self._release(UUID(response.json()["lease_id"])))

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def release_slot(self, lease_id: UUID) -> None:
        """Give the slot back. Shielded: a cancelled stream still returns its slot."""
        await asyncio.shield(self._in_background(self._release(lease_id)))

    async def _release(self, lease_id: UUID) -> None:
        self._leases.discard(lease_id)
        try:
            await (await self._api()).release_concurrency_slots_with_lease(lease_id)
        except httpx.HTTPError as exc:  # the lease expires by itself within LEASE_SECONDS
            log.warning("could not release concurrency lease %s: %s", lease_id, exc)

    async def _renew_forever(self) -> None:
        while self._leases:
            await asyncio.sleep(LEASE_SECONDS / 3)
            client = await self._api()
            for lease_id in list(self._leases):
                try:
                    await client.renew_concurrency_lease(lease_id, lease_duration=LEASE_SECONDS)
                except httpx.HTTPError as exc:
                    if lease_id in self._leases:
                        log.warning("could not renew concurrency lease %s: %s", lease_id, exc)


def _granted(done: asyncio.Future[httpx.Response],
             then: Callable[[httpx.Response], None] | None) -> None:
    """Hand an orphaned request's grant to `then` (a refusal or an error needs nothing)."""
    if not done.cancelled() and done.exception() is None and then is not None:
        then(done.result())


class EndpointLimiter:
    """The cross-process limits of one endpoint; `hold()` wraps each call."""

    def __init__(self, endpoint: Endpoint, session: LimitsSession) -> None:
        self.endpoint = endpoint
        self.session = session
        self.specs = limit_specs(endpoint)
        base = limit_base_name(endpoint)
        by_name = {s.name: s for s in self.specs}
        self._streams = f"{base}:streams" if f"{base}:streams" in by_name else None
        self._requests = (f"{base}:requests-per-minute"
                          if f"{base}:requests-per-minute" in by_name else None)
        tokens = by_name.get(f"{base}:tokens-per-minute")
        self._tokens = tokens.name if tokens else None
        self._token_capacity = tokens.limit if tokens else 0

    @property
    def counts_tokens(self) -> bool:
        """Whether `hold()` needs the call's token estimate."""
        return self._tokens is not None

    @asynccontextmanager
    async def hold(self, tokens: int) -> AsyncIterator[None]:
        """A stream slot for the whole block, then the rate slots just before the request
        (taking them first would let requests queued behind the stream limit burst out)."""
        lease = await self.session.acquire_slot(self._streams) if self._streams else None
        try:
            if self._requests:
                await self.session.take_rate(self._requests, 1)
            if self._tokens:  # a call larger than the bucket takes the whole bucket
                await self.session.take_rate(self._tokens,
                                             max(1, min(tokens, self._token_capacity)))
            yield
        finally:
            if lease is not None:
                await self.session.release_slot(lease)


def build_limiters(endpoints: Sequence[Endpoint], *,
                   holder: dict[str, Any] | None = None) -> dict[str, EndpointLimiter]:
    """Ensure the Prefect limits of every endpoint that has `limits:` and return a limiter per
    such endpoint name (empty when none has: then no Prefect call is made per stream)."""
    limited = [ep for ep in endpoints if ep.limits.configured]
    if not limited:
        return {}
    ensure_limits([spec for ep in limited for spec in limit_specs(ep)])
    session = LimitsSession(holder=holder)
    return {ep.name: EndpointLimiter(ep, session) for ep in limited}
