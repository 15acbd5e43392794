"""The model an endpoint names in its stream chunks reaches the ledger (`served_model`): behind a
replay of `*` (any recorded generator) it is the recording's generator, so a replayed sample
can be traced to the model that wrote it."""

from __future__ import annotations

from pydantic import SecretStr

from foldem.replay.launcher import ReplayServer
from foldem.spec.endpoints import Endpoint
from tasks.endpoints.base import CallStats, ChatRequest
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.pool import CallAttempt
from tasks.engine.ledger import CallSite, ledger_row
from tasks.records.models import Prompt, WorkItem
from tests.support.replay import replay_fixture
from tests.support.tracedata import trace

TRACE = "gsm8k-gpt3-0-6b_verification"
replay = replay_fixture("gpt3")


def _endpoint(model: str) -> Endpoint:
    return Endpoint.model_validate({"name": "replay", "base_url": "http://placeholder",
                                    "model": model, "timeouts": {"connect": 2,
                                                                 "first_token": 5, "idle": 5,
                                                                 "total": 30}})


async def test_a_wildcard_replay_names_the_recorded_generator(replay: ReplayServer) -> None:
    endpoint = _endpoint("*")
    client = EndpointClient(endpoint, base_url=replay.base_url, api_key=SecretStr("EMPTY"))
    replay.reset_stats()
    stats = CallStats()
    messages = ({"role": "user", "content": trace(TRACE)["problem"]},)
    async with client.stream(ChatRequest(messages, max_tokens=500, temperature=0, seed=1),
                             stats=stats) as call:
        async for _ in call:
            pass
    await client.aclose()
    (request,) = replay.stats().requests
    assert request.model == "*" and request.generator not in ("*", "")
    assert stats.served_model == request.generator

    item = WorkItem(prompt=Prompt(prompt_id="p0", text=trace(TRACE)["problem"]), sample_index=1)
    row = ledger_row(CallSite(run_id="r", item=item, stage="solve"),
                     CallAttempt(endpoint=endpoint, stats=stats))
    assert (row.model, row.served_model) == ("*", request.generator)
