"""The circuit breaker of one endpoint, and how long the endpoint has been down.

After `failures_to_trip` consecutive failed calls (errors and timeouts, before or after the first
token; never rejections or early exits, never a request the endpoint refused as malformed) the
endpoint is out for a cooldown, then one trial call is let through (half-open): success brings
it back, failure doubles the cooldown (up to `max_cooldown_seconds`). From the trip until a call
succeeds again the endpoint is down (`down_since`): the pool pauses the calls that would go to it
for at most `max_pause_seconds` of that (tasks/endpoints/pool.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum

from foldem.spec.endpoints import Breaker

Clock = Callable[[], float]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # cooled down: one trial call is (or may be) in flight


class CircuitBreaker:
    """Consecutive-failure breaker of one endpoint; times come from `clock` (monotonic s)."""

    def __init__(self, settings: Breaker, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.cooldown = settings.cooldown_seconds
        self.open_until = 0.0
        self.trial_in_flight = False
        self.trips = 0
        self.last_error: str | None = None
        self.down_since: float | None = None  # `clock` time of the trip; None while up
        self.down_since_utc: datetime | None = None

    def ready_at(self) -> float:
        """When a call may next be sent here (now or earlier: it may be sent now)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            return self.open_until
        return float("inf") if self.trial_in_flight else 0.0

    def available(self) -> bool:
        return self.ready_at() <= self.clock()

    def down_for(self) -> float:
        """Seconds since the endpoint went down (0 while it is up)."""
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    def pause_ends(self) -> float:
        """When calls stop waiting for it to come back (`clock` time)."""
        since = self.down_since if self.down_since is not None else self.clock()
        return since + self.settings.pause_seconds

    def describe_down(self) -> str:
        """`down since 07:01:02 UTC (312 s)`, for a log line or a sample's error."""
        if self.down_since_utc is None:
            return "up"
        return (f"down since {self.down_since_utc:%H:%M:%S} UTC "
                f"({self.down_for():.0f} s)")

    def on_send(self) -> bool:
        """A call is sent here now; True when it is the half-open trial."""
        if self.state is BreakerState.OPEN and self.clock() >= self.open_until:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def on_first_token(self, trial: bool) -> None:
        """The endpoint answers: a trial that got this far brings it back at once, so the
        others need not wait for the trial's whole stream."""
        if trial and self.state is BreakerState.HALF_OPEN:
            self.trial_in_flight = False
            self._close()

    def on_result(self, *, failed: bool, trial: bool, error: str | None = None) -> None:
        """The call ended. Results of calls sent before a trip do not move an open breaker."""
        if trial:
            self.trial_in_flight = False
        if not failed:
            self.consecutive_failures = 0
            if trial and self.state is BreakerState.HALF_OPEN:
                self._close()
            return
        self.last_error = error
        self.consecutive_failures += 1
        if trial and self.state is BreakerState.HALF_OPEN:
            self.cooldown = min(self.cooldown * 2, self.settings.max_cooldown_seconds)
            self._open()
        elif (self.state is BreakerState.CLOSED
              and self.consecutive_failures >= self.settings.failures_to_trip):
            self.trips += 1
            self._open()

    def force_open(self, error: str) -> None:
        """Take the endpoint out now (it failed its preflight); a trial follows the cooldown."""
        self.last_error, self.trips = error, self.trips + 1
        self._open()

    def on_abandon(self, trial: bool) -> None:
        """The call was cancelled before a verdict: a trial slot is free for the next call."""
        if trial:
            self.trial_in_flight = False

    def _open(self) -> None:
        if self.state is BreakerState.CLOSED:
            self.down_since, self.down_since_utc = self.clock(), datetime.now(UTC)
        self.state = BreakerState.OPEN
        self.open_until = self.clock() + self.cooldown

    def _close(self) -> None:
        self.state, self.cooldown = BreakerState.CLOSED, self.settings.cooldown_seconds
        self.down_since = self.down_since_utc = None
