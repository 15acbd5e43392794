"""A reply that ends before the probe can hang up: the probe retries with a longer request, and
when every reply stays short the verdict is inconclusive and `abort_honoured` unknown (null) in
the result, its JSON, the printed table and Postgres, which a job requiring honoured aborts does
not hold against the endpoint. The scripted endpoint stands in for a fast server: its replies
arrive all at once, within the probe's minimum read time, unless the request asks for a long
answer."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from foldem.cli.main import main
from foldem.spec.job import parse_job
from tasks.probe.abort import LONG_ANSWER
from tasks.probe.endpoint_probe import DEFAULT_PROMPT, ProbeOptions, probe_endpoint
from tasks.probe.models import AbortMeasurement, ProbeResult
from tasks.probe.store import check_abort_probes, latest_probe, record_probe
from tasks.store import db
from tests.support.fake_endpoint import FakeEndpoint, serving
from tests.support.scratch_db import scratch_database

SHORT = [f" word{i}" for i in range(16)]  # more than read_tokens (8), but sent in one go
LONG = [f" word{i}" for i in range(400)]
LONG_PACE = 0.002  # 400 tokens in about a second: the probe hangs up well before the end


class FastServer(FakeEndpoint):
    """The scripted endpoint, answering a request for a long answer (the probe's retries) with
    LONG paced, or with a 400 when `refuse_retries` is set; everything else with SHORT at once."""

    refuse_retries = False

    async def chat(self, request: Request) -> Response:
        body = await request.json()  # Starlette caches it for the parent's read
        if LONG_ANSWER in body["messages"][-1]["content"]:
            if self.refuse_retries:
                self.seen.requests.append(body)
                return JSONResponse({"error": {"message": "max_tokens is too large"}},
                                    status_code=400)
            self.script.pace = LONG_PACE
        else:
            self.script.pace = 0.0
        return await super().chat(request)


@pytest.fixture(scope="module")
def server() -> Iterator[FastServer]:
    fake = FastServer()
    with serving(fake.app()) as root:
        fake.port = int(root.rsplit(":", 1)[1])
        yield fake


@pytest.fixture
def fast(server: FastServer) -> FastServer:
    server.reset(tokens=SHORT, by_prompt={LONG_ANSWER: LONG})
    server.refuse_retries = False
    return server


def _options(abort_max_tokens: int) -> ProbeOptions:
    # The capability requests ask for 4 tokens, the timing method's short request for 32.
    return ProbeOptions(capability_max_tokens=4, abort_max_tokens=abort_max_tokens)


def _long_requests(fake: FakeEndpoint) -> list[dict[str, Any]]:
    """The requests to hang up on."""
    return [r for r in fake.seen.requests if r["max_tokens"] not in (4, 32)]


async def test_a_reply_that_ends_too_soon_is_retried_with_a_longer_one(
        fast: FastServer) -> None:
    result = await probe_endpoint(fast.base_url, "m", options=_options(100))
    abort = result.abort
    assert abort.verdict != "inconclusive", abort.detail
    assert result.abort_honoured is (abort.verdict == "honoured")
    assert (abort.attempts, abort.max_tokens) == (2, 100)
    first, second = _long_requests(fast)
    assert first["messages"][-1]["content"] == DEFAULT_PROMPT
    assert second["messages"][-1]["content"] == DEFAULT_PROMPT + LONG_ANSWER


@pytest.mark.parametrize(("abort_max_tokens", "max_tokens_sent"), [
    (100, [100, 100, 100]),  # the model stopped itself: more max_tokens would not help
    (16, [16, 64, 64]),      # the reply used all of max_tokens: four times as many
])
async def test_replies_that_stay_short_are_inconclusive_and_say_why(
        fast: FastServer, abort_max_tokens: int, max_tokens_sent: list[int]) -> None:
    fast.script.by_prompt = {}  # short whatever the prompt
    result = await probe_endpoint(fast.base_url, "m", options=_options(abort_max_tokens))
    abort = result.abort
    assert abort.verdict == "inconclusive" and result.abort_honoured is None
    assert (abort.attempts, abort.max_tokens) == (3, max_tokens_sent[-1])
    assert ("the reply ended after 16, 16 and 16 tokens, before the probe could hang up"
            in abort.detail and "in 3 attempts" in abort.detail), abort.detail
    long = _long_requests(fast)
    assert [r["max_tokens"] for r in long] == max_tokens_sent
    assert [LONG_ANSWER in r["messages"][-1]["content"] for r in long] == [False, True, True]


async def test_a_refused_retry_ends_the_attempts(fast: FastServer) -> None:
    fast.refuse_retries = True
    result = await probe_endpoint(fast.base_url, "m", options=_options(16))
    abort = result.abort
    assert abort.verdict == "inconclusive" and result.abort_honoured is None
    assert abort.attempts == 2 and abort.max_tokens == 16
    assert "a longer retry was refused: (max_tokens 64)" in abort.detail, abort.detail
    assert "max_tokens is too large" in abort.detail


def test_cli_prints_writes_and_stores_unknown(fast: FastServer, tmp_path: Path, pg_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fast.script.by_prompt = {}
    out = tmp_path / "probe.json"
    base_url = fast.base_url
    code = main(["probe", "--base-url", base_url, "--model", f"m-{uuid.uuid4().hex}",
                 "--json", str(out), "--database-url", pg_url, "--require-abort-honoured"])
    printed = capsys.readouterr().out
    assert code == 0, printed  # unknown is not "not honoured"
    row = next(line for line in printed.splitlines() if line.startswith("abort_honoured"))
    assert row.split()[1] == "unknown" and "inconclusive" in row
    assert "could not tell whether aborts are honoured" in printed
    data = json.loads(out.read_text())
    assert data["abort_honoured"] is None and data["abort"]["attempts"] == 3
    with db.get_engine(pg_url).connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT abort_honoured, result->'abort_honoured' FROM endpoint_probes "
            "WHERE model = :m"), {"m": data["model"]}).one()
    assert tuple(stored) == (None, None)
    with db.session_scope(db.get_engine(pg_url)) as session:
        back = latest_probe(session, base_url=base_url, model=data["model"])
    assert back is not None and back.abort_honoured is None


def _inconclusive(base_url: str, *, stored_as: bool | None) -> ProbeResult:
    abort = AbortMeasurement(method="timing", verdict="inconclusive",
                             detail="the reply ended after 16 tokens, before the probe could "
                             "hang up")
    return ProbeResult(base_url=base_url, model="m", probed_at=datetime.now(UTC),
                       streaming=True, usage=True, continuous_usage=False, logprobs=False,
                       abort_honoured=stored_as, abort_method="timing", abort=abort)


def test_a_result_stored_as_false_when_inconclusive_reads_back_unknown() -> None:
    old = _inconclusive("http://h/v1", stored_as=False).model_dump(mode="json")
    old["abort_honoured"] = False  # as results were written before abort_honoured could be null
    result = ProbeResult.model_validate(old)
    assert result.abort_honoured is None
    assert ("abort_honoured", "unknown") == result.table_rows()[-1][:2]


def test_an_inconclusive_probe_does_not_fail_a_job(pg_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    base_url = f"http://{uuid.uuid4().hex}.invalid/v1"
    with db.session_scope(db.get_engine(pg_url)) as session:
        # abort_honoured false, as the probe stored an inconclusive verdict before the fix
        record_probe(session, result=_inconclusive(base_url, stored_as=False))
    job = parse_job({
        "name": "strict", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "gpu", "base_url": base_url, "model": "m",
                       "require_abort_honoured": True}],
        "stages": [{"name": "solve", "template": "{problem}"}]})
    with caplog.at_level(logging.WARNING, logger="foldem.probe"):
        check_abort_probes(job, pg_url)
    assert "could not tell whether aborts stop generation" in caplog.text
    assert "Running anyway" in caplog.text


def test_migration_turns_stored_inconclusive_false_into_null(pg_url: str) -> None:
    def rows(url: str) -> dict[str, tuple[Any, Any]]:
        with db.get_engine(url).connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(sa.text(
                "SELECT result->'abort'->>'verdict', abort_honoured, result->'abort_honoured' "
                "FROM endpoint_probes"))}

    with scratch_database(pg_url, migrated=True) as url:
        db.downgrade(url, "0009")
        # as the probe stored an inconclusive verdict before abort_honoured could be null
        old = _inconclusive("http://h/v1", stored_as=False).model_dump(mode="json")
        old["abort_honoured"] = False
        measured = old | {"abort_honoured": False,
                          "abort": old["abort"] | {"verdict": "not_honoured"}}
        with db.get_engine(url).begin() as conn:
            for result in (old, measured):
                conn.execute(sa.text(
                    "INSERT INTO endpoint_probes (base_url, model, probed_at, abort_honoured, "
                    "result) VALUES ('http://h/v1', 'm', now(), false, CAST(:r AS jsonb))"),
                    {"r": json.dumps(result)})
        db.migrate(url)
        assert rows(url) == {"inconclusive": (None, None), "not_honoured": (False, False)}
        db.downgrade(url, "0009")
        assert rows(url) == {"inconclusive": (False, False), "not_honoured": (False, False)}
