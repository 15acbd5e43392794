"""A server's own view of its work, read while the probe hangs up on a request.

Each monitor turns one status page into a `ServerSnapshot` (requests being generated, a
cumulative generated-token count):

* replay endpoint  GET /stats    per-request token counts: exact, for our request alone
* vLLM             GET /metrics  vllm:num_requests_running (+waiting), vllm:generation_tokens_total
* llama.cpp        GET /slots    slots with is_processing (on by default), and from /metrics
                                 when it answers: n_decode_total, tokens_predicted_total
* llama.cpp        GET /metrics  llamacpp:requests_processing, llamacpp:n_decode_total,
                                 llamacpp:tokens_predicted_total (only with --metrics)

llama.cpp counts a request's tokens in tokens_predicted_total when it ends or is cancelled, so
that counter's growth over the probe, less the tokens the probe read, is exactly what the server
decoded after the hang-up (on an otherwise idle server).

`detect_monitor` tries them in that order; none found means the probe falls back to timing.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from foldem.replay.protocol import ReplayStats
from tasks.probe.http import ProbeHttp
from tasks.probe.models import AbortMethod, ServerKind, ServerSnapshot


class ServerMonitor(Protocol):
    method: AbortMethod
    server: ServerKind
    #: True when `generated` counts only the probe's request (exact); False: server-wide.
    own_request: bool

    async def snapshot(self, request_id: str | None) -> ServerSnapshot | None: ...


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name: value summed over its label sets}."""
    values: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            rest = rest.rpartition("}")[2]
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            values[name.strip()] = values.get(name.strip(), 0.0) + value
    return values


class ReplayMonitor:
    method: AbortMethod = "replay_stats"
    server: ServerKind = "replay"
    own_request = True

    def __init__(self, http: ProbeHttp) -> None:
        self.http = http

    async def snapshot(self, request_id: str | None) -> ServerSnapshot | None:
        response = await self.http.get("/stats")
        if response is None:
            return None
        try:
            stats = ReplayStats.model_validate_json(response.content)
        except ValidationError:
            return None
        if request_id is None:
            running = sum(1 for r in stats.requests if r.ended_at is None)
            return ServerSnapshot(busy=running, generated=stats.total_completion_tokens)
        mine = next((r for r in stats.requests if r.request_id == request_id), None)
        if mine is None:
            return ServerSnapshot(busy=0, generated=0)
        return ServerSnapshot(busy=int(mine.ended_at is None), generated=mine.completion_tokens,
                              finished=mine.finish_reason is not None)


@dataclass(slots=True)
class MetricsMonitor:
    """A Prometheus /metrics page: a busy gauge (sum of `busy_names`) and a token counter."""

    http: ProbeHttp
    _: KW_ONLY
    method: AbortMethod
    server: ServerKind
    busy_names: tuple[str, ...]
    counter_names: tuple[str, ...]
    predicted_name: str | None = None
    own_request: ClassVar[bool] = False

    async def snapshot(self, request_id: str | None) -> ServerSnapshot | None:
        response = await self.http.get("/metrics")
        if response is None:
            return None
        values = parse_prometheus(response.text)
        if not any(name in values for name in self.busy_names):
            return None
        busy = sum(int(values.get(name, 0)) for name in self.busy_names)
        counter = next((values[n] for n in self.counter_names if n in values), None)
        predicted = values.get(self.predicted_name) if self.predicted_name else None
        return ServerSnapshot(busy=busy, generated=counter, predicted=predicted)


def vllm_monitor(http: ProbeHttp) -> MetricsMonitor:
    return MetricsMonitor(http, method="vllm_metrics", server="vllm",
                          busy_names=("vllm:num_requests_running", "vllm:num_requests_waiting"),
                          counter_names=("vllm:generation_tokens_total",
                                         "vllm:generation_tokens"))


def llamacpp_metrics_monitor(http: ProbeHttp) -> MetricsMonitor:
    # n_decode_total grows with every decode step; tokens_predicted_total only when a request
    # ends, so it cannot show a request that keeps running.
    return MetricsMonitor(http, method="llamacpp_metrics", server="llama.cpp",
                          busy_names=("llamacpp:requests_processing",
                                      "llamacpp:requests_deferred"),
                          counter_names=("llamacpp:n_decode_total",
                                         "llamacpp:tokens_predicted_total"),
                          predicted_name=LLAMACPP_PREDICTED)


LLAMACPP_PREDICTED = "llamacpp:tokens_predicted_total"


class _Slot(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int
    is_processing: bool


_SLOTS = TypeAdapter(list[_Slot])


class LlamaSlotsMonitor:
    method: AbortMethod = "llamacpp_slots"
    server: ServerKind = "llama.cpp"
    own_request = False

    def __init__(self, http: ProbeHttp) -> None:
        self.http = http
        self._metrics = llamacpp_metrics_monitor(http)
        self._has_metrics: bool | None = None  # /metrics is off unless the server enables it

    async def snapshot(self, request_id: str | None) -> ServerSnapshot | None:
        response = await self.http.get("/slots")
        if response is None:
            return None
        try:
            slots = _SLOTS.validate_json(response.content)
        except ValidationError:
            return None
        if not slots:
            return None
        # n_decoded restarts with each task and a finished slot keeps its last value: not a
        # counter, so the busy count comes from here and the counters from /metrics.
        busy = sum(s.is_processing for s in slots)
        counters = None
        if self._has_metrics is not False:
            counters = await self._metrics.snapshot(request_id)
            self._has_metrics = counters is not None
        if counters is None:
            return ServerSnapshot(busy=busy)
        return ServerSnapshot(busy=busy, generated=counters.generated,
                              predicted=counters.predicted)


def monitor_for(method: AbortMethod, http: ProbeHttp) -> ServerMonitor | None:
    """The monitor behind a method name (None for timing)."""
    factories: dict[str, Any] = {
        "replay_stats": ReplayMonitor, "vllm_metrics": vllm_monitor,
        "llamacpp_slots": LlamaSlotsMonitor, "llamacpp_metrics": llamacpp_metrics_monitor}
    factory = factories.get(method)
    return factory(http) if factory is not None else None


async def detect_monitor(http: ProbeHttp) -> ServerMonitor | None:
    """The first monitor whose status page answers with what it expects."""
    order: tuple[AbortMethod, ...] = ("replay_stats", "vllm_metrics", "llamacpp_slots",
                                      "llamacpp_metrics")
    for method in order:
        monitor = monitor_for(method, http)
        if monitor is not None and await monitor.snapshot(None) is not None:
            return monitor
    return None
