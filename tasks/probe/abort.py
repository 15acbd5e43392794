"""Does hanging up on a stream stop the server? Measured, two ways.

Counter method (a monitor from tasks/probe/monitors.py answers): read the server's own numbers
before the request, while it streams, right after the probe closes the connection, and twice
more after a settle time. The server honoured the abort when it went back to idle and its
counter stopped. Exact on the replay endpoint (a per-request count); server-wide on vLLM and
llama.cpp, so probe an otherwise idle server.

Timing method (no status page): time a short request alone, then again right after hanging up
on a long one. A server still generating the abandoned reply makes the second request wait
(one slot) or share compute (several slots). Indirect evidence: a server with spare capacity
hides a runaway request, so the verdict says which method produced it.

A reply that ends before the probe can hang up (a fast server, a terse model) measures nothing:
the probe retries with a longer request (LONG_ANSWER appended to the prompt; max_tokens times
four when the reply used it all), ATTEMPTS in all, before it reports `inconclusive`.

Either way, if the abandoned request would have ended by itself during the observation, the
result is `inconclusive` (and `abort_honoured` unknown, null): raise `max_tokens`.

One module past 300 lines on purpose: the two methods share the attempt loop, the retries with
longer requests and the verdict, which must agree with each other.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from foldem.core.errors import EndpointError
from tasks.probe.http import ProbeHttp, error_message
from tasks.probe.models import AbortMeasurement, ServerSnapshot, Verdict
from tasks.probe.monitors import ServerMonitor

#: Tokens a server may still send after the hang-up before we call it "kept generating"
#: (chunks already in flight; llama.cpp frees a slot within ~4 tokens, measured).
OWN_REQUEST_SLACK_TOKENS = 16
MIN_SETTLE_SECONDS = 0.05
#: Keep reading at least this long: tokens often arrive in bursts, and a rate taken from one
#: burst is far too high.
MIN_READ_SECONDS = 0.1
#: Long requests sent before giving up on a reply that ends before the hang-up point.
ATTEMPTS = 3
#: Appended to the user message of a retry. The prompt stays in the message: the replay endpoint
#: finds its recorded problem by containment.
LONG_ANSWER = ("\n\nAnswer at great length: several thousand words, every detail spelled "
               "out. Do not stop early.")
#: max_tokens grows by this when a reply used all of it (no use when the model stopped itself).
LONGER = 4


@dataclass(slots=True)
class LongStreamRead:
    """What the probe saw of the long request before hanging up."""

    request_id: str | None
    tokens_read: int
    ended_by_itself: bool
    rate: float | None  # tokens per second while reading


async def read_then_hang_up(http: ProbeHttp, body: dict[str, Any], read_tokens: int,
                            monitor: ServerMonitor | None = None
                            ) -> tuple[LongStreamRead, ServerSnapshot | None]:
    """Open the long stream, read at least `read_tokens` tokens for at least MIN_READ_SECONDS,
    take a monitor reading while still connected, then close. Returns what was read and the
    in-flight reading."""
    tokens, first_at, request_id, during = 0, None, None, None
    ended, elapsed = True, 0.0
    async with http.stream_chat(body) as stream:
        if stream.response.status_code >= 400:
            text = (await stream.response.aread()).decode("utf-8", errors="replace")
            raise EndpointError(http.base_url, f"the long request was refused (HTTP "
                                f"{stream.response.status_code}): {error_message(text)} -- a "
                                "smaller --max-tokens may fit the model's context")
        async with aclosing(stream.chunks()) as chunks:
            async for chunk in chunks:
                request_id = request_id or chunk.id
                if not any(c.delta is not None and c.delta.content for c in chunk.choices):
                    continue
                if chunk.usage is not None and chunk.usage.completion_tokens is not None:
                    tokens = chunk.usage.completion_tokens  # continuous usage: server's count
                else:
                    tokens += 1  # one token per chunk on the servers we know
                now = time.perf_counter()
                first_at = first_at or now
                if tokens >= read_tokens and now - first_at >= MIN_READ_SECONDS:
                    ended = False
                    elapsed = now - first_at
                    if monitor is not None:  # still connected: closing the reader hangs up
                        during = await monitor.snapshot(request_id)
                    break
    # Leaving the block closed the connection: that is the abort under test.
    rate = (tokens - 1) / elapsed if elapsed > 0 and tokens > 1 else None
    return LongStreamRead(request_id, tokens, ended, rate), during


@dataclass(slots=True)
class LongAttempts:
    """The long request(s) sent to hang up on: the last one is the one measured."""

    body: dict[str, Any]  # the request of the last attempt
    read: LongStreamRead
    before: ServerSnapshot  # the monitor's reading right before the last attempt
    during: ServerSnapshot | None
    ended_after: list[int] = field(default_factory=list)  # tokens of each reply that ended
    refused: str | None = None  # why the server refused a longer retry

    @property
    def measured(self) -> bool:
        return not self.read.ended_by_itself and self.refused is None

    @property
    def sent(self) -> int:
        """Long requests sent, a refused one included."""
        return len(self.ended_after) + (not self.read.ended_by_itself) + (self.refused is not None)

    def why_unmeasured(self, read_tokens: int) -> str:
        counts = self.ended_after
        tokens = counts[0] if len(counts) == 1 else (
            ", ".join(str(n) for n in counts[:-1]) + f" and {counts[-1]}")
        attempts = "1 attempt" if len(counts) == 1 else f"{len(counts)} attempts"
        text = (f"the reply ended after {tokens} tokens, before the probe could hang up (it "
                f"hangs up after {read_tokens} tokens and {MIN_READ_SECONDS:g} s), in {attempts} "
                f"(max_tokens {self.body['max_tokens']}")
        text += ", the retries asking for a long answer)" if len(counts) > 1 else ")"
        if self.refused:
            text += f"; a longer retry was refused: {self.refused}"
        return text + ": raise --max-tokens, or pass a --prompt whose answer is long"


def longer_request(body: dict[str, Any], read: LongStreamRead) -> dict[str, Any]:
    """The retry after a reply that ended by itself: ask for a long answer and, when the reply
    used all of max_tokens, allow four times as many."""
    messages = [dict(m) for m in body["messages"]]
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    content = str(messages[last_user]["content"])
    if not content.endswith(LONG_ANSWER):
        messages[last_user]["content"] = content + LONG_ANSWER
    max_tokens = body["max_tokens"]
    if read.tokens_read >= max_tokens:
        max_tokens *= LONGER
    return body | {"messages": messages, "max_tokens": max_tokens}


async def hang_up_on_a_long_reply(http: ProbeHttp, body: dict[str, Any], read_tokens: int,
                                  monitor: ServerMonitor | None = None,
                                  attempts: int = ATTEMPTS) -> LongAttempts:
    """`read_then_hang_up`, retried with a longer request (`longer_request`) while the reply
    ends before the hang-up point, `attempts` requests in all. A refused first request raises
    EndpointError (the caller's settings); a refused retry ends the attempts."""
    last: LongAttempts | None = None
    for _ in range(attempts):
        if last is not None:
            body = longer_request(body, last.read)
        before = (await monitor.snapshot(None) if monitor is not None else None) \
            or ServerSnapshot()
        try:
            read, during = await read_then_hang_up(http, body, read_tokens, monitor)
        except EndpointError as err:
            if last is None:
                raise
            last.refused = f"(max_tokens {body['max_tokens']}) {err.reason}"
            return last
        ended = (last.ended_after if last is not None else []) + (
            [read.tokens_read] if read.ended_by_itself else [])
        last = LongAttempts(body, read, before, during, ended)
        if not read.ended_by_itself:
            break
    assert last is not None, "attempts >= 1"
    return last


def remaining_seconds(read: LongStreamRead, max_tokens: int) -> float:
    """How long the abandoned request would still run at the measured rate (inf: unknown)."""
    if read.rate is None or read.rate <= 0:
        return float("inf")
    return max(0, max_tokens - read.tokens_read) / read.rate


def would_have_ended(read: LongStreamRead, max_tokens: int, within: float) -> bool:
    """At the measured rate, would the abandoned request have finished within `within` s?"""
    return remaining_seconds(read, max_tokens) < within


def settle_for(read: LongStreamRead, max_tokens: int, settle: float) -> float:
    """The wait before each reading: at most `settle`, and short enough that both readings
    fall in the first half of the time the request would still run (a fast server finishes a
    long request in a second), but never under 50 ms."""
    return max(MIN_SETTLE_SECONDS, min(settle, remaining_seconds(read, max_tokens) / 4))


def judge_counters(*, before: ServerSnapshot, during: ServerSnapshot | None,
                   at_close: ServerSnapshot, after: ServerSnapshot, later: ServerSnapshot,
                   own_request: bool, natural_end_possible: bool) -> tuple[Verdict, str]:
    """The verdict from five readings of a server's own numbers (pure, for tests)."""
    if own_request:
        unseen = during is None or (during.busy == 0 and not during.finished)
    else:
        unseen = during is None or (during.busy is not None and before.busy is not None
                                    and during.busy <= before.busy)
    if unseen:
        return "inconclusive", ("the server's numbers did not show the probe's request while it "
                                "streamed (another client's traffic, or the page lags)")
    growth_after = (later.generated - at_close.generated
                    if later.generated is not None and at_close.generated is not None else None)
    still_growing = (later.generated - after.generated
                     if later.generated is not None and after.generated is not None else None)
    if own_request:
        kept = growth_after or 0
        if later.finished and kept <= OWN_REQUEST_SLACK_TOKENS:
            return "inconclusive", ("the reply was complete before the hang-up; use a longer "
                                    "reply (max_tokens, prompt)")
        if kept > OWN_REQUEST_SLACK_TOKENS or later.busy:
            end = "ran to its end" if later.finished else "was still generating"
            return "not_honoured", (f"the server generated {kept:g} tokens for the request after "
                                    f"the hang-up and {end}")
        return "honoured", f"the request stopped {kept:g} token(s) after the hang-up"
    busy_after = later.busy is not None and before.busy is not None and later.busy > before.busy
    if busy_after or (later.busy is None and (still_growing or 0) > 0):
        return "not_honoured", (f"{later.busy} request(s) still generating"
                                f"{after_close_text(growth_after)} after the hang-up "
                                f"(before the probe: {before.busy})")
    if natural_end_possible:
        return "inconclusive", ("the server went idle, but at the measured rate the request "
                                "would have ended by itself by then: raise --max-tokens")
    return "honoured", (f"back to {later.busy} running request(s)"
                        f"{after_close_text(growth_after)} after the hang-up")


def after_close_text(growth: float | None) -> str:
    return "" if growth is None else f" ({growth:g} token(s) counted)"


def judge_timing(*, baseline: float, after_close: float, natural_end_possible: bool
                 ) -> tuple[Verdict, str]:
    """The verdict from a short request's duration alone and right after the hang-up."""
    numbers = f"a short request took {after_close:.2f} s after the hang-up, {baseline:.2f} s alone"
    if after_close > 2.0 * baseline + 0.25:
        if natural_end_possible:
            return "inconclusive", f"{numbers}, but the long request may have been ending anyway"
        return "not_honoured", f"{numbers}: the server was still busy with the abandoned request"
    if natural_end_possible:
        return "inconclusive", (f"{numbers}, but the long request would have ended by itself "
                                "by then: raise --max-tokens")
    return "honoured", f"{numbers} (indirect: a server with spare capacity hides a runaway)"


async def measure_with_monitor(http: ProbeHttp, monitor: ServerMonitor, body: dict[str, Any],
                               *, read_tokens: int, settle: float,
                               attempts: int = ATTEMPTS) -> AbortMeasurement:
    got = await hang_up_on_a_long_reply(http, body, read_tokens, monitor, attempts)
    body, read, before, during = got.body, got.read, got.before, got.during
    tried = {"attempts": got.sent, "max_tokens": body["max_tokens"]}
    if not got.measured:
        return AbortMeasurement(method=monitor.method, verdict="inconclusive",
                                tokens_read_before_close=read.tokens_read,
                                detail=got.why_unmeasured(read_tokens), **tried)
    at_close = await monitor.snapshot(read.request_id) or ServerSnapshot()
    settle = settle_for(read, body["max_tokens"], settle)
    await asyncio.sleep(settle)
    after = await monitor.snapshot(read.request_id) or ServerSnapshot()
    await asyncio.sleep(settle)
    later = await monitor.snapshot(read.request_id) or ServerSnapshot()
    verdict, detail = judge_counters(
        before=before, during=during, at_close=at_close, after=after, later=later,
        own_request=monitor.own_request,
        natural_end_possible=would_have_ended(read, body["max_tokens"], 2 * settle))
    growth = (later.generated - at_close.generated
              if later.generated is not None and at_close.generated is not None else None)
    predicted = (later.predicted - before.predicted
                 if later.predicted is not None and before.predicted is not None else None)
    if predicted is not None and not later.busy:
        # The request was counted when the server dropped it: everything it decoded, less
        # what the probe read, came after the hang-up (or sat unread in the socket).
        growth = max(predicted - read.tokens_read, 0)
    else:
        predicted = None  # still running: not counted yet
    return AbortMeasurement(
        method=monitor.method, verdict=verdict, detail=detail,
        tokens_read_before_close=read.tokens_read, server_tokens_after_close=growth,
        server_tokens_predicted=predicted,
        busy_before=before.busy, busy_during=during.busy if during else None,
        busy_after=later.busy, settle_seconds=2 * settle, tokens_per_second=read.rate, **tried)


async def measure_with_timing(http: ProbeHttp, body: dict[str, Any], short_body: dict[str, Any],
                              *, read_tokens: int, attempts: int = ATTEMPTS) -> AbortMeasurement:
    alone = [(await http.observe(short_body)).seconds for _ in range(2)]
    baseline = min(alone)
    got = await hang_up_on_a_long_reply(http, body, read_tokens, attempts=attempts)
    body, read = got.body, got.read
    tried = {"attempts": got.sent, "max_tokens": body["max_tokens"]}
    if not got.measured:
        return AbortMeasurement(method="timing", verdict="inconclusive", baseline_seconds=baseline,
                                tokens_read_before_close=read.tokens_read,
                                detail=got.why_unmeasured(read_tokens), **tried)
    after_close = (await http.observe(short_body)).seconds
    natural = would_have_ended(read, body["max_tokens"], after_close + baseline)
    verdict, detail = judge_timing(baseline=baseline, after_close=after_close,
                                   natural_end_possible=natural)
    return AbortMeasurement(method="timing", verdict=verdict, detail=detail,
                            tokens_read_before_close=read.tokens_read, baseline_seconds=baseline,
                            after_close_seconds=after_close, tokens_per_second=read.rate,
                            **tried)
