"""The preflight: every endpoint a run needs is checked before the run starts."""

from __future__ import annotations

from collections.abc import Mapping

from foldem.core.errors import EndpointError, LocalModelUnavailableError
from foldem.spec.endpoints import EMBEDDED, LOCAL, REPLAY
from foldem.spec.job import JobSpec
from tasks.endpoints.base import ChatRequest, StreamingEndpoint
from tasks.endpoints.client import EndpointClient, resolve_api_key
from tasks.endpoints.local_model import bundled_model_path, check_server_installed
from tasks.engine.runner import Engine, build_stage_validators, top_logprobs_wanted

#: The tiny request that shows whether an endpoint streams logprobs (a few tokens, not ledgered).
_LOGPROBS_PROBE = ({"role": "user", "content": "Say OK."},)


async def preflight_clients(job: JobSpec,
                            clients: Mapping[str, StreamingEndpoint]
                            ) -> dict[str, EndpointError]:
    """Preflight every client; return the endpoints that failed. Raises the failure of the
    first stage none of whose endpoints answer, or whose step judge does not: a dead server or a
    refused key fails here, with a clear message, unless the stage lists another endpoint that
    works."""
    dead: dict[str, EndpointError] = {}
    for name, client in clients.items():
        try:
            await client.preflight()
        except EndpointError as exc:
            dead[name] = exc
    for stage in job.stages:
        names = [ep.name for ep in job.endpoints_for(stage)]
        if all(n in dead for n in names):
            raise dead[names[0]]
        judges = stage.step_judge.endpoint_names if stage.step_judge else ()
        if judges and all(n in dead for n in judges):
            raise dead[judges[0]]  # every sample of the stage needs its judge
    await _check_logprobs(job, clients, dead)
    return dead


async def _check_logprobs(job: JobSpec, clients: Mapping[str, StreamingEndpoint],
                          dead: Mapping[str, EndpointError]) -> None:
    """A stage whose validators read token confidences needs every live endpoint it lists to
    stream logprobs: without them the check would pass every sample unjudged, silently. One
    tiny request per such endpoint; its first content chunk must carry them."""
    validators = build_stage_validators(job)
    checked: set[str] = set()
    for stage in job.stages:
        k = top_logprobs_wanted(validators[stage.name])
        if k is None:
            continue
        for ep in job.endpoints_for(stage):
            # The replay answers only recorded problems (no probe prompt fits) and sends no
            # logprobs: refused by name, also before it is started (`foldem run`).
            if ep.base_url == REPLAY:
                raise EndpointError(ep.name, f"{_needs(stage.name, k)}, and the replay endpoint "
                                    f"sends none (it replays recorded text only); remove the "
                                    f"validator or use a model server")
            if ep.name in dead or ep.name in checked or ep.name not in clients:
                continue
            checked.add(ep.name)
            await _expect_logprobs(clients[ep.name], k, stage.name)


def _needs(stage: str, k: int) -> str:
    return (f"stage {stage!r} uses the confidence validator, which needs logprobs "
            f"(top_logprobs: {k}) in the stream")


async def _expect_logprobs(client: StreamingEndpoint, k: int, stage: str) -> None:
    name = client.endpoint.name
    needs = _needs(stage, k)
    request = ChatRequest(messages=_LOGPROBS_PROBE, max_tokens=4, temperature=0.0,
                          top_logprobs=k)
    try:
        async with client.stream(request, max_retries=1) as call:
            async for delta in call:
                if delta.confidences:
                    return
                break
    except EndpointError as exc:
        raise EndpointError(name, f"{needs}; asking for them failed: {exc.reason}",
                            status=exc.status) from None
    raise EndpointError(name, f"{needs}, and this endpoint sent none; use an endpoint that "
                        f"streams logprobs (llama.cpp, vLLM, OpenAI) or remove the validator")


async def preflight_run(engine: Engine) -> list[str]:
    """The flow's preflight: fails as `preflight_clients` does; an endpoint that failed but has
    live siblings in every stage that lists it starts the run out of the rotation (its breaker
    open: a trial call after the cooldown). Returns a warning per such endpoint."""
    dead = await preflight_clients(engine.job, engine.clients)
    if engine.router is not None:
        for name, exc in dead.items():
            engine.router.members[name].breaker.force_open(exc.reason)
    return [f"{exc.message}; the run starts without it (a trial call after "
            f"{engine.clients[name].endpoint.breaker.cooldown_seconds:g} s)"
            for name, exc in dead.items()]


async def check_endpoints(job: JobSpec) -> None:
    """Preflight every configured endpoint that foldem does not start itself (the replay, the
    local model server), before a run starts (`foldem run`); see `preflight_clients` for which
    failures stop it. The local model server's installation is checked here too."""
    if any(ep.base_url == LOCAL for ep in job.endpoints):
        check_local_model(job)
    clients = {ep.name: EndpointClient(ep, base_url=ep.base_url, api_key=resolve_api_key(ep))
               for ep in job.endpoints if ep.base_url not in EMBEDDED}
    try:  # the embedded endpoints are not in `clients`: they count as live
        await preflight_clients(job, clients)
    finally:
        for client in clients.values():
            await client.aclose()


def check_local_model(job: JobSpec) -> None:
    """Raise LocalModelUnavailableError when the local model server could not start: xllamacpp
    or the model file missing (before Prefect starts, with what to install)."""
    check_server_installed()
    if job.local.model_path is None:
        bundled_model_path()
    elif not job.resolve_path(job.local.model_path).is_file():
        raise LocalModelUnavailableError(
            f"local.model_path: {job.resolve_path(job.local.model_path)} does not exist")
