"""Probe results in Postgres (table `endpoint_probes`, migration 0002), and the check a job
makes before it trusts an endpoint's aborts.

The Core table is defined here for now; it belongs in tasks/store/schema.py beside the others (see
the hand-over notes), after which this module imports it from there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from foldem.core.errors import EndpointError
from foldem.spec.endpoints import EMBEDDED
from foldem.spec.job import JobSpec
from tasks.probe.models import ProbeResult
from tasks.store.schema import endpoint_probes

log = logging.getLogger("foldem.probe")


def _key(base_url: str) -> str:
    return base_url.rstrip("/")  # the job spec strips the slash too: one spelling per endpoint


def record_probe(session: Session, *, result: ProbeResult) -> int:
    """Store one probe result; returns its row id. The caller's session commits."""
    row_id = session.execute(insert(endpoint_probes).values(
        base_url=_key(result.base_url), model=result.model, probed_at=result.probed_at,
        abort_honoured=result.abort_honoured, result=result.model_dump(mode="json"),
    ).returning(endpoint_probes.c.id)).scalar_one()
    return int(row_id)


def latest_probe(session: Session, *, base_url: str, model: str) -> ProbeResult | None:
    """The newest stored probe of this endpoint and model, if any."""
    data = session.execute(
        select(endpoint_probes.c.result)
        .where(endpoint_probes.c.base_url == _key(base_url), endpoint_probes.c.model == model)
        .order_by(endpoint_probes.c.probed_at.desc(), endpoint_probes.c.id.desc())
        .limit(1)).scalar_one_or_none()
    return ProbeResult.model_validate(data) if data is not None else None


def require_abort_honoured(session: Session, *, endpoint: str, base_url: str, model: str,
                           max_age: timedelta | None = None) -> ProbeResult:
    """The newest probe, unless it is missing, too old, or measured that aborts do not stop
    generation: then EndpointError saying what to do. For endpoints whose job spec sets
    `require_abort_honoured: true`.

    A probe that could not tell (`abort_honoured` null: inconclusive) passes with a warning: it
    measured nothing, so it is no evidence against the endpoint, and failing every job behind a
    server too fast to probe would only teach people to turn the check off."""
    probe = latest_probe(session, base_url=base_url, model=model)
    command = f"foldem probe --base-url {_key(base_url)} --model {model}"
    if probe is None:
        raise EndpointError(endpoint, f"the job requires aborts to be honoured, but {base_url} "
                            f"(model {model}) has never been probed: run `{command}`")
    if max_age is not None and datetime.now(UTC) - probe.probed_at > max_age:
        raise EndpointError(endpoint, f"the last probe of {base_url} is from "
                            f"{probe.probed_at:%Y-%m-%d %H:%M} UTC, older than {max_age}: "
                            f"run `{command}` again")
    when = f"{probe.probed_at:%Y-%m-%d %H:%M} UTC"
    if probe.abort_honoured is None:
        log.warning("endpoint %r: the last probe of %s (%s, via %s) could not tell whether "
                    "aborts stop generation: %s. Running anyway; probe again for a verdict: "
                    "`%s` with a larger --max-tokens or a --prompt with a long answer",
                    endpoint, base_url, when, probe.abort_method, probe.abort.detail, command)
        return probe
    if not probe.abort_honoured:
        raise EndpointError(endpoint, f"aborts are not honoured by {base_url} (probe of "
                            f"{when}: {probe.abort.verdict} via "
                            f"{probe.abort_method}: {probe.abort.detail}); tokens 'saved' "
                            "there would not be saved. Fix the server or set "
                            "require_abort_honoured: false")
    return probe


def check_abort_probes(job: JobSpec, database_url: str) -> None:
    """Refuse a job whose endpoints require honoured aborts but were never probed, or whose
    newest probe measured that aborts are not honoured (an inconclusive probe only warns: see
    `require_abort_honoured`). The endpoints foldem starts itself are exempt: the replay
    endpoint and the local llama.cpp server start fresh on a new port each run, and honour
    aborts, as the tests measure."""
    from tasks.store.db import get_engine, session_scope

    for ep in job.endpoints:
        if ep.require_abort_honoured and ep.base_url not in EMBEDDED:
            with session_scope(get_engine(database_url)) as session:
                require_abort_honoured(session, endpoint=ep.name, base_url=ep.base_url,
                                       model=ep.model)
