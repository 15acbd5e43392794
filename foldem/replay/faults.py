"""Fault injection for the replay endpoint: the failures a real model server shows, on demand.

A SPEC is a comma-separated list of `kind:share[:seconds]`, e.g.
`429:0.1,500:0.05,drop:0.05,stall:0.05:40,malformed:0.05,slow:0.1:3`:

    429        HTTP 429 with Retry-After, before any token     seconds: the Retry-After (1)
    500        HTTP 500, before any token
    drop       the connection closed mid-stream (after >= 1 token)
    stall      no chunk for a while mid-stream, then the rest  seconds: the pause (60, longer
               (if the client is still there)                  than a default 30 s idle timeout)
    malformed  a broken SSE event mid-stream, then the body ends
    slow       the first chunk late (headers at once)          seconds: the delay (2)

`share` is the fraction of requests (0..1, or a percentage such as `5%`); shares add up to at most
1. Which request gets which fault is a pure function of the seed, the request's content (model,
messages, seed, token limit) and how many identical requests came before it since the server
started or its stats were reset (a retry is the next occurrence, so it meets a fresh draw). A
run of the same requests against the same seed meets the same faults, whatever order concurrent
requests arrive in. Mid-stream faults strike at a
content chunk chosen from the same hash, never before the first one, so the tokens sent before
the fault are never zero: retrying such a call would pay for them twice.

A request whose fault struck is marked in /stats: `fault` (the kind) and `fault_after_tokens`
(completion tokens sent before it). A mid-stream fault planned past the point where the client
hung up never strikes and is not marked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Literal, get_args

from fastapi.responses import JSONResponse
from starlette.types import Send

from foldem.core.errors import ConfigError
from foldem.replay.protocol import ChatCompletionRequest, ErrorDetail, ErrorResponse, RequestStats

FaultKind = Literal["429", "500", "drop", "stall", "malformed", "slow"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
DEFAULT_SECONDS: dict[str, float] = {"429": 1.0, "stall": 60.0, "slow": 2.0}
#: What a `malformed` fault writes: an SSE data line that is not JSON.
MALFORMED_EVENT = b'data: {"id": "broken", "choices": [{"delta": {"conte\n\n'


@dataclass(frozen=True, slots=True)
class FaultRule:
    kind: str
    share: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault one request gets: its kind, its duration and where in the stream it strikes."""

    kind: str
    seconds: float
    position: float  # in [0, 1): which content chunk (after the first) a mid-stream fault hits

    @property
    def before_stream(self) -> bool:
        return self.kind in ("429", "500")

    def strikes_at(self, n_chunks: int) -> int:
        """Index of the content chunk a mid-stream fault replaces: 1..n-1 (never the first)."""
        return 1 + int(self.position * max(0, n_chunks - 1))


def _share(text: str, item: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"fault {item!r}: share {text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"fault {item!r}: share must lie between 0 and 1 (or 0% and 100%)")
    return value


def parse_rules(spec: str) -> list[FaultRule]:
    """`kind:share[:seconds],...` -> rules; a ConfigError says which item is wrong."""
    rules: list[FaultRule] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        kind, _, rest = item.partition(":")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"fault {item!r}: unknown kind {kind!r}; "
                              f"kinds: {', '.join(FAULT_KINDS)}")
        share_text, _, seconds_text = rest.partition(":")
        if not share_text:
            raise ConfigError(f"fault {item!r}: write kind:share, e.g. {kind}:0.05")
        seconds = DEFAULT_SECONDS.get(kind, 0.0)
        if seconds_text:
            if kind not in DEFAULT_SECONDS:
                raise ConfigError(f"fault {item!r}: only {', '.join(DEFAULT_SECONDS)} take "
                                  "seconds")
            try:
                seconds = float(seconds_text)
            except ValueError:
                raise ConfigError(f"fault {item!r}: seconds {seconds_text!r} is not a number"
                                  ) from None
            if not 0 <= seconds <= 3600:
                raise ConfigError(f"fault {item!r}: seconds must lie between 0 and 3600")
        if any(r.kind == kind for r in rules):
            raise ConfigError(f"fault kind {kind!r} is given twice")
        rules.append(FaultRule(kind, _share(share_text, item), seconds))
    if sum(r.share for r in rules) > 1 + 1e-9:
        raise ConfigError(f"fault shares add up to {sum(r.share for r in rules):g}; at most 1")
    return rules


def request_key(req: ChatCompletionRequest) -> str:
    """What makes two requests "the same request" for the fault plan."""
    return req.model_dump_json(include={"model", "messages", "seed", "max_tokens",
                                        "max_completion_tokens"})


def _uniforms(seed: int, key: str, occurrence: int) -> tuple[float, float]:
    text = f"{seed}\0{occurrence}\0{key}"
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()
    scale = float(2 ** 64)
    return (int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:], "big") / scale)


class FaultPlan:
    """Which request gets which fault: deterministic in (seed, request, occurrence)."""

    def __init__(self, rules: list[FaultRule], seed: int = 0) -> None:
        self.rules = rules
        self.seed = seed
        self._occurrences: dict[str, int] = {}

    def reset(self) -> None:
        """Forget earlier requests (with /stats/reset): the next run draws the same faults."""
        self._occurrences.clear()

    @classmethod
    def parse(cls, spec: str, seed: int = 0) -> FaultPlan:
        return cls(parse_rules(spec), seed)

    def __bool__(self) -> bool:
        return any(r.share > 0 for r in self.rules)

    def describe(self) -> str:
        return ",".join(f"{r.kind}:{r.share:g}" + (f":{r.seconds:g}" if r.kind in DEFAULT_SECONDS
                                                    else "") for r in self.rules)

    def pick(self, key: str) -> Fault | None:
        """The fault of the next request with this key (see `request_key`), or None."""
        digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()
        occurrence = self._occurrences.get(digest, 0)
        self._occurrences[digest] = occurrence + 1
        u, position = _uniforms(self.seed, digest, occurrence)
        edge = 0.0
        for rule in self.rules:
            edge += rule.share
            if u < edge:
                return Fault(rule.kind, rule.seconds, position)
        return None


def _mark(record: RequestStats, kind: str) -> None:
    record.fault = kind
    record.fault_after_tokens = record.completion_tokens


def status_response(fault: Fault, record: RequestStats) -> JSONResponse:
    """The 429 or 500 answer of a request whose fault strikes before the stream."""
    _mark(record, fault.kind)
    record.ended_at = record.started_at
    if fault.kind == "429":
        body = ErrorResponse(error=ErrorDetail(
            message="injected fault: rate limit reached, retry later", type="rate_limit_error",
            code="rate_limit_exceeded"))
        return JSONResponse(body.model_dump(), status_code=429,
                            headers={"retry-after": f"{fault.seconds:g}"})
    body = ErrorResponse(error=ErrorDetail(message="injected fault: internal server error",
                                           type="server_error"))
    return JSONResponse(body.model_dump(), status_code=500)


class StreamFaults:
    """The mid-stream hooks of one response. With no fault (or a status fault) they do nothing."""

    def __init__(self, fault: Fault | None, record: RequestStats, n_chunks: int) -> None:
        self.fault = fault if fault is not None and not fault.before_stream else None
        self.record = record
        self.strike_at = self.fault.strikes_at(n_chunks) if self.fault else -1
        self.cut = False  # the response ended abnormally: write nothing more

    async def before_first_chunk(self) -> None:
        if self.fault is not None and self.fault.kind == "slow":
            _mark(self.record, "slow")
            await asyncio.sleep(self.fault.seconds)

    async def before_chunk(self, index: int, send: Send) -> bool:
        """Called before content chunk `index` goes out; True: the stream ends here."""
        if index != self.strike_at or self.fault is None or self.fault.kind == "slow":
            return False
        kind = self.fault.kind
        _mark(self.record, kind)
        if kind == "stall":
            await asyncio.sleep(self.fault.seconds)  # cancelled at once if the client leaves
            return False
        self.cut = True
        if kind == "malformed":
            await send({"type": "http.response.body", "body": MALFORMED_EVENT,
                        "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # drop: return without finishing the body; uvicorn then closes the connection.
        return True


class _ExpectedDrop(logging.Filter):
    """uvicorn logs an error when a response ends unfinished: for a `drop` fault that is the
    point, so the message is dropped instead of filling the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def quiet_expected_errors() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ExpectedDrop) for f in logger.filters):
        logger.addFilter(_ExpectedDrop())
