"""The endpoint client over real HTTP: usage detection, retries only before the first token,
timeouts, explicit close, stream limits. Against a scripted server and the replay endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import SecretStr

from foldem.core.errors import EndpointAuthError, EndpointError, EndpointUnreachableError
from foldem.replay.launcher import ReplayServer
from foldem.spec.endpoints import Endpoint
from tasks.endpoints.base import CallStats, ChatRequest
from tasks.endpoints.client import EndpointClient
from tests.support.fake_endpoint import FakeEndpoint, closed_port
from tests.support.replay import replay_fixture
from tests.support.tracedata import trace

MESSAGES = ({"role": "user", "content": "What is two plus two?"},)


def client_for(url: str, *, key: str = "EMPTY", **endpoint: object) -> EndpointClient:
    timeouts = endpoint.pop("timeouts", {"connect": 2, "first_token": 5, "idle": 5, "total": 30})
    ep = Endpoint.model_validate({"name": "t", "base_url": "http://placeholder", "model": "m",
                                  "timeouts": timeouts, **endpoint})
    return EndpointClient(ep, base_url=url, api_key=SecretStr(key))


async def collect(client: EndpointClient, **kw: object) -> tuple[str, CallStats]:
    stats = CallStats()
    text = ""
    async with client.stream(ChatRequest(MESSAGES, max_tokens=50, temperature=0,
                                         **kw), stats=stats) as call:  # type: ignore[arg-type]
        async for delta in call:
            text += delta.text
    return text, stats


@pytest.mark.parametrize(("usage", "refuse", "source", "asked_continuous"), [
    ("continuous", False, "server_usage", True),
    ("final", False, "server_usage", True),
    ("final", True, "server_usage", False),  # refused option: falls back, still gets usage
    ("none", False, "tokenizer_estimate", True),
])
async def test_usage_detection(fake: FakeEndpoint, usage: str, refuse: bool, source: str,
                               asked_continuous: bool) -> None:
    fake.reset(usage=usage, refuse_continuous=refuse)
    client = client_for(fake.base_url)
    text, stats = await collect(client)
    assert text == "".join(fake.script.tokens)
    assert stats.count_source == source
    assert stats.completion_tokens > 0 and stats.finish_reason == "stop"
    if source == "server_usage":
        assert stats.completion_tokens == len(fake.script.tokens)
    last = fake.seen.requests[-1]["stream_options"]
    assert last["include_usage"] is True
    assert ("continuous_usage_stats" in last) is asked_continuous
    assert stats.attempts == 1
    await client.aclose()


@pytest.mark.parametrize(("usage", "cached", "recorded"), [
    ("final", 3, 3), ("continuous", 4, 4), ("final", None, None),
    ("none", 3, None),  # no usage at all: nothing said about the cache either
])
async def test_cached_prompt_tokens_come_from_the_servers_usage(
        fake: FakeEndpoint, usage: str, cached: int | None, recorded: int | None) -> None:
    fake.reset(usage=usage, cached_tokens=cached)
    client = client_for(fake.base_url)
    _, stats = await collect(client)
    assert stats.cached_prompt_tokens == recorded
    await client.aclose()


async def test_plain_client_sends_the_endpoints_extra_body(fake: FakeEndpoint) -> None:
    fake.reset()
    client = client_for(fake.base_url, extra_body={"grammar": 'root ::= "4"', "top_k": 1})
    await collect(client)
    sent = fake.seen.requests[-1]
    assert (sent["grammar"], sent["top_k"]) == ('root ::= "4"', 1)
    assert sent["model"] == "m" and sent["stream"] is True  # foldem's own fields stay
    await client.aclose()


async def test_retries_429_with_retry_after_before_first_token(fake: FakeEndpoint) -> None:
    fake.reset(statuses=[429, 503], retry_after="0")
    client = client_for(fake.base_url, max_retries=3)
    text, stats = await collect(client)
    assert text.endswith("#### 4") and stats.attempts == 3
    await client.aclose()


async def test_gives_up_after_max_retries(fake: FakeEndpoint) -> None:
    fake.reset(statuses=[500] * 10, retry_after="0")
    client = client_for(fake.base_url, max_retries=2)
    stats = CallStats()
    with pytest.raises(EndpointError) as err:
        async with client.stream(ChatRequest(MESSAGES, max_tokens=5, temperature=0),
                                 stats=stats):
            pass
    assert err.value.status == 500 and err.value.retryable
    assert stats.attempts == 3 and len(fake.seen.requests) == 3
    await client.aclose()


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_are_not_retried(fake: FakeEndpoint, status: int) -> None:
    fake.reset(statuses=[status])
    client = client_for(fake.base_url, max_retries=3)
    with pytest.raises(EndpointError):
        await collect(client)
    assert len(fake.seen.requests) == 1
    await client.aclose()


async def test_wrong_key_is_an_auth_error(fake: FakeEndpoint) -> None:
    fake.reset(auth_key="right")
    client = client_for(fake.base_url, key="wrong")
    with pytest.raises(EndpointAuthError):
        await client.preflight()
    with pytest.raises(EndpointAuthError):
        await collect(client)
    await client.aclose()


async def test_dead_endpoint_fails_preflight_fast() -> None:
    client = client_for(f"http://127.0.0.1:{closed_port()}/v1")
    t0 = time.perf_counter()
    with pytest.raises(EndpointUnreachableError) as err:
        await client.preflight()
    assert time.perf_counter() - t0 < 5
    assert "cannot connect" in err.value.message
    await client.aclose()


async def test_a_call_that_never_connected_costs_no_prompt_tokens() -> None:
    """Connection refused: nothing reached the server, so no prompt was processed; the ledger
    must not count the prompt as sent (a call that reached it and then failed still does)."""
    client = client_for(f"http://127.0.0.1:{closed_port()}/v1", max_retries=1)
    stats = CallStats()
    with pytest.raises(EndpointError) as err:
        async with client.stream(ChatRequest(MESSAGES, max_tokens=5, temperature=0),
                                 stats=stats):
            pass
    assert "never reached the server, 2 attempts" in err.value.message
    assert (stats.prompt_tokens, stats.completion_tokens, stats.reached_server) == (None, 0, False)
    assert stats.attempts == 2
    await client.aclose()


async def test_a_call_that_reached_the_server_keeps_its_prompt_estimate(
        fake: FakeEndpoint) -> None:
    fake.reset(first_delay=3.0)
    client = client_for(fake.base_url, max_retries=0,
                        timeouts={"connect": 2, "first_token": 0.5, "idle": 0.5, "total": 10})
    stats = CallStats()
    with pytest.raises(EndpointError):
        async with client.stream(ChatRequest(MESSAGES, max_tokens=5, temperature=0),
                                 stats=stats):
            pass
    assert stats.reached_server and stats.prompt_tokens and stats.prompt_tokens > 0
    await client.aclose()


@pytest.mark.parametrize(("script", "fragment"), [
    ({"first_delay": 3.0}, "no first token"),
    ({"stall_after": 2}, "idle timeout"),
    ({"malformed_after": 2}, "malformed stream event"),
])
async def test_stalls_and_broken_streams_end_with_a_clear_error(
        fake: FakeEndpoint, script: dict[str, object], fragment: str) -> None:
    fake.reset(**script)
    client = client_for(fake.base_url, max_retries=0,
                        timeouts={"connect": 2, "first_token": 0.5, "idle": 0.5, "total": 10})
    stats = CallStats()
    t0 = time.perf_counter()
    with pytest.raises(EndpointError) as err:
        async with client.stream(ChatRequest(MESSAGES, max_tokens=5, temperature=0),
                                 stats=stats) as call:
            async for _ in call:
                pass
    assert fragment in err.value.message
    assert time.perf_counter() - t0 < 5
    await client.aclose()


async def test_concurrent_streams_are_bounded(fake: FakeEndpoint) -> None:
    fake.reset(pace=0.02)
    client = client_for(fake.base_url, max_concurrent_streams=2)
    await asyncio.gather(*(collect(client) for _ in range(6)))
    assert fake.seen.max_active == 2 and len(fake.seen.requests) == 6
    await client.aclose()


replay = replay_fixture("gpt3", tokens_per_second=50)


ABORTED_TRACE = "gsm8k-gpt3-0-6b_verification"


async def stream_and_reject(server: ReplayServer, *, lag: float = 0.0,
                            at_step_boundary: bool = True) -> tuple[CallStats, Any]:
    """Play ABORTED_TRACE and reject it: at its first step boundary, or after the first token
    with the loop blocked for `lag` seconds first. Returns the client's stats and the server's
    record of the request."""
    client = client_for(server.base_url)
    server.reset_stats()
    stats = CallStats()
    messages = ({"role": "user", "content": trace(ABORTED_TRACE)["problem"]},)
    async with client.stream(ChatRequest(messages, max_tokens=500, temperature=0, seed=1),
                             stats=stats) as call:
        async for delta in call:
            time.sleep(lag)  # blocks the loop, as a busy process would
            if not at_step_boundary or "\n" in delta.text:
                break  # reject
    await asyncio.sleep(0.3)  # any token the server still sent would show up by now
    (req,) = server.stats().requests
    await client.aclose()
    return stats, req


async def test_abort_closes_the_stream_at_the_server(replay: ReplayServer) -> None:
    stats, req = await stream_and_reject(replay)
    assert req.disconnected and req.finish_reason is None
    assert stats.completion_tokens == req.completion_tokens
    first = trace(ABORTED_TRACE)["steps"][0] + "\n"
    assert stats.text == first or stats.text.startswith(first)


unpaced_replay = replay_fixture("gpt3")


@pytest.mark.parametrize("lag", [0.0, 0.3])
async def test_a_lagging_client_still_counts_every_token_the_server_sent(
        unpaced_replay: ReplayServer, lag: float) -> None:
    """Unpaced, the server writes far ahead of the reader; the client then stalls (`lag`, as a
    busy process does) before it rejects. The half-close stops the server and the drain reads
    to its end, so the ledger equals what the server says it sent, to the token."""
    stats, req = await stream_and_reject(unpaced_replay, lag=lag, at_step_boundary=False)
    assert stats.completion_tokens == req.completion_tokens
    if lag:  # stalled, the server got ahead: it read on after the rejection (with no lag a
        # client that reads in bulk may hang up before the server's second token)
        assert stats.completion_tokens > 1


class _Socket:
    def __init__(self) -> None:
        self.shut: list[int] = []

    def shutdown(self, how: int) -> None:
        self.shut.append(how)


class _Stream:
    def __init__(self, sock: _Socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None


@pytest.mark.parametrize(("url", "half_closes"), [
    ("http://vllm:8000/v1/chat/completions", True),  # self-hosted: EOF is a disconnect
    ("https://api.openai.com/v1/chat/completions", False),  # an edge proxy: close in full
])
def test_half_close_only_over_plain_http(url: str, half_closes: bool) -> None:
    import socket
    from types import SimpleNamespace

    import httpx2

    from tasks.endpoints.stream_call import StreamCall

    sock = _Socket()
    http_response = SimpleNamespace(url=httpx2.URL(url),
                                    extensions={"network_stream": _Stream(sock)})
    call = StreamCall(aiter_empty(), None, SimpleNamespace(http_response=http_response),
                      CallStats(), 0.0, 5.0, "t")
    assert call._half_close() is half_closes
    assert sock.shut == ([socket.SHUT_WR] if half_closes else [])


async def aiter_empty() -> Any:
    return
    yield


def _llamacpp_chunk(content: str | None, predicted: int | None) -> Any:
    from foldem.core.chat_stream import read_chunk

    timings = ({"prompt_n": 30, "cache_n": 8, "predicted_n": predicted}
               if predicted is not None else None)
    return read_chunk(json.dumps(
        {"id": "c1", "model": "smollm2", "timings": timings,
         "choices": [{"index": 0, "delta": {"content": content} if content else {}}]}).encode())


async def test_a_cut_llamacpp_stream_is_counted_by_its_timings() -> None:
    """llama.cpp sends no usage for a stream cut short; asked for `timings_per_token` it sends
    its running count of decoded tokens in every chunk, which is the count, in the model's own
    tokens (a character split over two tokens arrives as one chunk that added two)."""
    from types import SimpleNamespace

    from tasks.endpoints.stream_call import StreamCall

    async def chunks() -> Any:
        for content, predicted in [(" lighthouse", 2), ("é", 4), (" keeper", 5)]:
            yield _llamacpp_chunk(content, predicted)

    stats = CallStats()
    call = StreamCall(chunks(), _llamacpp_chunk("A", 1), SimpleNamespace(), stats, 0.0, 5.0,
                      "t")
    tokens = [delta.tokens async for delta in call]
    call.finalize()
    assert tokens == [1, 1, 2, 1] and call.saw_timings
    assert (stats.completion_tokens, stats.prompt_tokens) == (5, 38)
    assert stats.cached_prompt_tokens == 8  # its cache_n: the prompt's tokens reused
    assert stats.count_source == "server_timings"


async def test_llamacpp_is_asked_for_timings_once_detected(fake: FakeEndpoint) -> None:
    fake.reset()
    told = client_for(fake.base_url, server="llama.cpp")
    auto = client_for(fake.base_url)
    request = ChatRequest(MESSAGES, max_tokens=5, temperature=0)
    assert told._body(request)["extra_body"] == {"timings_per_token": True}
    assert "extra_body" not in auto._body(request)  # OpenAI would refuse the field
    auto._timings = None
    await collect(auto)  # the fake endpoint is no llama.cpp: nothing learnt
    assert "extra_body" not in auto._body(request)
    await told.aclose()
    await auto.aclose()
