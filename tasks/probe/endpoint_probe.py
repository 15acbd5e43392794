"""`foldem probe`: what an OpenAI-compatible endpoint can do, and whether a disconnect stops it.

    result = await probe_endpoint("http://127.0.0.1:8080/v1", "tiny", api_key=None)

Four short streamed requests check streaming, usage in the last chunk (`include_usage`), usage on
every chunk (vLLM/SGLang `continuous_usage_stats`) and logprobs; then a long request is read for
a few tokens and hung up on, and the server's own numbers (or a second request's latency) show
whether it stopped (tasks/probe/abort.py). foldem's savings exist only where it stops.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from foldem.core.errors import EndpointError
from tasks.probe.abort import ATTEMPTS, measure_with_monitor, measure_with_timing
from tasks.probe.http import ProbeHttp, is_loopback
from tasks.probe.models import AbortMethod, ProbeResult, StreamObservation, honoured_of
from tasks.probe.monitors import ServerMonitor, detect_monitor, monitor_for

DEFAULT_PROMPT = ("Write a very long story about a lighthouse keeper and the ships she watches, "
                  "chapter after chapter. Do not stop early.")


class ProbeOptions(BaseModel):
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="User message of every probe "
                        "request (the replay endpoint needs the text of a recorded problem).")
    capability_max_tokens: int = Field(16, ge=2)
    abort_max_tokens: int = Field(2048, ge=16, description="Length of the request hung up on: "
                                  "long enough to still be running after the settle time.")
    read_tokens: int = Field(8, ge=1, description="Tokens read before hanging up.")
    abort_attempts: int = Field(ATTEMPTS, ge=1, description="Long requests to try while the "
                                "reply ends before the hang-up; each retry asks for a longer "
                                "answer (and more max_tokens when the reply used them all).")
    settle_seconds: float = Field(1.0, gt=0, description="Wait between the hang-up and each of "
                                  "two readings of the server's numbers.")
    abort_method: AbortMethod | None = Field(None, description="Force a method; default: the "
                                             "first status page that answers, else timing.")
    temperature: float = 1.0
    timeout: float = Field(60.0, gt=0, description="Per-request read timeout, seconds.")


def _body(model: str, options: ProbeOptions, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": options.prompt}],
            "max_tokens": max_tokens, "temperature": options.temperature,
            "stream_options": {"include_usage": True}} | extra


def _refused(obs: StreamObservation, what: str) -> str:
    return f"{what} refused (HTTP {obs.status}): {(obs.error or '').strip()[:200]}"


async def _capabilities(http: ProbeHttp, model: str, options: ProbeOptions
                        ) -> tuple[dict[str, bool], list[str]]:
    n = options.capability_max_tokens
    basic = await http.observe(_body(model, options, n))
    if basic.status >= 400:
        raise EndpointError(http.base_url, _refused(basic, "a plain streamed request") + (
            " -- the replay endpoint answers only prompts of its recorded problems: pass one "
            "with --prompt" if "no recorded trace" in (basic.error or "") else ""),
            status=basic.status)
    notes: list[str] = []
    continuous = await http.observe(_body(
        model, options, n, stream_options={"include_usage": True,
                                           "continuous_usage_stats": True}))
    if continuous.status >= 400:
        notes.append(_refused(continuous, "continuous_usage_stats"))
    logprobs = await http.observe(_body(model, options, n, logprobs=True, top_logprobs=1))
    if logprobs.status >= 400:
        notes.append(_refused(logprobs, "logprobs"))
    if not basic.done_marker:
        notes.append("the stream did not end with data: [DONE]")
    if not basic.event_stream:
        notes.append("the response was not text/event-stream")
    found = {
        "streaming": basic.event_stream and basic.content_chunks >= 2,
        "usage": basic.final_usage,
        "continuous_usage": continuous.status < 400 and continuous.content_chunks >= 2
        and continuous.content_chunks_with_usage == continuous.content_chunks,
        "logprobs": logprobs.status < 400 and logprobs.logprobs_seen,
    }
    return found, notes


async def _monitor(http: ProbeHttp, method: AbortMethod | None) -> ServerMonitor | None:
    if method is None:
        return await detect_monitor(http)
    monitor = monitor_for(method, http)
    if monitor is not None and await monitor.snapshot(None) is None:
        raise EndpointError(http.base_url, f"--abort-method {method}: the server's status page "
                            f"for it does not answer at {http.root_url}; pick another method")
    return monitor


async def probe_endpoint(base_url: str, model: str, *, api_key: SecretStr | None = None,
                         options: ProbeOptions | None = None) -> ProbeResult:
    """Probe one endpoint; raises EndpointError (unreachable, key refused, request refused)."""
    options = options or ProbeOptions()
    http = ProbeHttp(base_url, api_key, timeout=options.timeout)
    try:
        found, notes = await _capabilities(http, model, options)
        monitor = await _monitor(http, options.abort_method)
        stream_options = {"include_usage": True}
        if found["continuous_usage"]:  # exact token counts while reading
            stream_options["continuous_usage_stats"] = True
        long_body = _body(model, options, options.abort_max_tokens,
                          stream_options=stream_options)
        if monitor is not None:
            abort = await measure_with_monitor(http, monitor, long_body,
                                               read_tokens=options.read_tokens,
                                               settle=options.settle_seconds,
                                               attempts=options.abort_attempts)
        else:
            short = _body(model, options, max(options.capability_max_tokens, 32))
            abort = await measure_with_timing(http, long_body, short,
                                              read_tokens=options.read_tokens,
                                              attempts=options.abort_attempts)
            if not is_loopback(base_url):
                notes.append("abort judged by timing on a remote service: weak evidence, "
                             "a large shared fleet hides a runaway request")
    finally:
        await http.aclose()
    return ProbeResult(
        base_url=http.base_url, model=model, probed_at=datetime.now(UTC),
        server=monitor.server if monitor is not None else "unknown",
        streaming=found["streaming"], usage=found["usage"],
        continuous_usage=found["continuous_usage"], logprobs=found["logprobs"],
        abort_honoured=honoured_of(abort.verdict), abort_method=abort.method, abort=abort,
        tokens_per_second=abort.tokens_per_second, notes=notes)
