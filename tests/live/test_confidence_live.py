"""Token confidences from the real llama.cpp server reach the confidence validator: the preflight
sees logprobs, and a threshold no trace can meet makes the validator fire on every sample. The
model's answers are never asserted, only the structure."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from foldem.spec.job import parse_job
from tasks.endpoints.client import EndpointClient
from tasks.endpoints.local_model import LocalModelServer
from tasks.engine.runner import Engine, build_stage_validators
from tasks.records.models import Prompt, WorkItem
from tasks.run.preflight import preflight_clients

pytestmark = pytest.mark.integration

PROMPTS = ["Ann has 3 apples and buys 4 more. How many apples does she have?",
           "A book costs 12 dollars. How much do 2 books cost?"]


async def test_logprobs_flow_from_the_server_to_the_validator(
        local_model: LocalModelServer) -> None:
    spec: dict[str, Any] = {
        "name": "live-confidence", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "local", "base_url": local_model.base_url,
                       "model": local_model.alias, "server": "llama.cpp"}],
        "sampling": {"temperature": 0.7, "max_tokens": 64},
        "stages": [{"name": "solve", "template": "{problem}", "expected_tokens": 60,
                    "validators": [{"name": "confidence", "params": {
                        "top_k": 3, "window": 8, "min_tokens": 8,
                        "min_group_confidence": 1000.0}}]}]}
    job = parse_job(spec)
    clients = {ep.name: EndpointClient(ep, base_url=ep.base_url, api_key=SecretStr("x"))
               for ep in job.endpoints}
    try:
        assert await preflight_clients(job, clients) == {}  # llama.cpp streams logprobs
        engine = Engine(job=job, run_id="live-conf", clients=clients,
                        validators=build_stage_validators(job))
        for i, text in enumerate(PROMPTS):
            item = WorkItem(prompt=Prompt(prompt_id=f"p{i}", text=text), sample_index=i)
            result = await engine.run_sample(item)
            assert result.status == "rejected", result.error
            rejection = result.rejection
            assert rejection is not None
            assert (rejection.validator, rejection.reason_code) == ("confidence",
                                                                    "low_confidence")
            # It may fire only once min_tokens confidences arrived: one per token.
            assert rejection.tokens_at_fire is not None and rejection.tokens_at_fire >= 8
            assert "over the last 8 tokens" in rejection.detail
    finally:
        for client in clients.values():
            await client.aclose()
