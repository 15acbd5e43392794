"""`foldem probe`: the right answers on the replay endpoint in both modes (a disconnect honoured,
and ignored with --ignore-disconnect), the verdict rules, the metrics parsers, storage in
Postgres and the check a job makes before trusting an endpoint's aborts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from foldem.cli.main import main
from foldem.core.errors import EndpointError, EndpointUnreachableError
from foldem.replay.launcher import ReplayServer
from tasks.probe.abort import judge_counters, judge_timing
from tasks.probe.endpoint_probe import ProbeOptions, probe_endpoint
from tasks.probe.http import ProbeHttp, error_message, root_url_of
from tasks.probe.models import AbortMeasurement, ProbeResult, ServerSnapshot
from tasks.probe.monitors import (
    LlamaSlotsMonitor,
    llamacpp_metrics_monitor,
    parse_prometheus,
    vllm_monitor,
)
from tasks.probe.store import latest_probe, record_probe, require_abort_honoured
from tasks.store import db
from tests.support.replay import replay_fixture, write_traces

# Made-up text: a long reply, so a request is still streaming when the probe hangs up.
PROBLEM = "Count the sheep jumping over the fence, one line per sheep, for a long while."
STEPS = [f"Sheep number {i} jumps over the fence and lands softly in the meadow."
         for i in range(1, 301)]
FAST = ProbeOptions(prompt=PROBLEM, settle_seconds=0.5)


def _long_trace(directory: Path) -> Path:
    return write_traces(directory / "long.jsonl", [{
        "id": "long-1", "dataset": "made-up", "generator": "g", "problem": PROBLEM,
        "reference_answer": None, "steps": STEPS, "separator": "\n",
        "final_answer_correct": True, "first_error_step": None}])


#: One server that honours disconnects, one that ignores them.
replay = replay_fixture(_long_trace, tokens_per_second=200,
                        params=[{"ignore_disconnect": False}, {"ignore_disconnect": True}],
                        ids=["honours", "ignores-disconnect"])


async def test_probe_on_the_replay_endpoint(replay: ReplayServer) -> None:
    result = await probe_endpoint(replay.base_url, "*", options=FAST)
    assert (result.streaming, result.usage, result.continuous_usage, result.logprobs) == (
        True, True, True, False)
    assert result.server == "replay" and result.abort_method == "replay_stats"
    expected = not replay.ignore_disconnect
    assert result.abort_honoured is expected
    assert result.abort.verdict == ("honoured" if expected else "not_honoured")
    assert result.abort.tokens_read_before_close >= FAST.read_tokens
    assert result.abort.server_tokens_after_close is not None
    if expected:
        assert result.abort.server_tokens_after_close <= 16
        assert result.abort.busy_after == 0
    else:  # 1 s at 200 tokens/s after the hang-up
        assert result.abort.server_tokens_after_close > 50
        assert result.abort.busy_after == 1


def test_cli_prints_writes_json_and_stores(replay: ReplayServer, tmp_path: Path, pg_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.json"
    args = ["probe", "--base-url", replay.base_url, "--model", "*", "--prompt", PROBLEM,
            "--settle", "0.5", "--json", str(out), "--database-url", pg_url,
            "--require-abort-honoured"]
    code = main(args)
    honoured = not replay.ignore_disconnect
    assert code == (0 if honoured else 1)
    printed = capsys.readouterr().out
    assert "abort_honoured" in printed and "replay_stats" in printed
    data = json.loads(out.read_text())
    for key in ("streaming", "usage", "continuous_usage", "logprobs", "abort_honoured"):
        assert isinstance(data[key], bool), key
    assert data["abort_honoured"] is honoured and data["abort_method"] == "replay_stats"
    with db.session_scope(db.get_engine(pg_url)) as session:
        stored = latest_probe(session, base_url=replay.base_url, model="*")
    assert stored is not None and stored.abort_honoured is honoured


async def test_prompt_the_replay_does_not_know_is_explained(replay: ReplayServer) -> None:
    with pytest.raises(EndpointError, match="--prompt"):
        await probe_endpoint(replay.base_url, "*", options=ProbeOptions(prompt="hello there"))


async def test_nothing_listening_is_unreachable() -> None:
    with pytest.raises(EndpointUnreachableError, match="cannot connect"):
        await probe_endpoint("http://127.0.0.1:9/v1", "m")


# ---------------------------------------------------------------------------- verdict rules

IDLE = ServerSnapshot(busy=0, generated=100)
RUNNING = ServerSnapshot(busy=1, generated=110)


@pytest.mark.parametrize(("during", "at_close", "after", "later", "natural", "verdict"), [
    (RUNNING, RUNNING, ServerSnapshot(busy=0, generated=113),
     ServerSnapshot(busy=0, generated=113), False, "honoured"),
    (RUNNING, RUNNING, ServerSnapshot(busy=1, generated=300),
     ServerSnapshot(busy=1, generated=500), False, "not_honoured"),
    (RUNNING, RUNNING, ServerSnapshot(busy=0, generated=113),
     ServerSnapshot(busy=0, generated=113), True, "inconclusive"),   # would have ended anyway
    (IDLE, IDLE, IDLE, IDLE, False, "inconclusive"),                  # request never seen
    (None, RUNNING, IDLE, IDLE, False, "inconclusive"),
])
def test_server_wide_counters(during: ServerSnapshot | None, at_close: ServerSnapshot,
                              after: ServerSnapshot, later: ServerSnapshot, natural: bool,
                              verdict: str) -> None:
    got, detail = judge_counters(before=IDLE, during=during, at_close=at_close, after=after,
                                 later=later, own_request=False, natural_end_possible=natural)
    assert got == verdict, detail


@pytest.mark.parametrize(("later", "verdict"), [
    (ServerSnapshot(busy=0, generated=12, finished=False), "honoured"),
    (ServerSnapshot(busy=1, generated=400, finished=False), "not_honoured"),
    (ServerSnapshot(busy=0, generated=900, finished=True), "not_honoured"),  # ran to its end
    (ServerSnapshot(busy=0, generated=10, finished=True), "inconclusive"),  # done before hang-up
])
def test_own_request_counter(later: ServerSnapshot, verdict: str) -> None:
    mine = ServerSnapshot(busy=1, generated=10, finished=False)
    got, detail = judge_counters(before=IDLE, during=mine, at_close=mine, after=later,
                                 later=later, own_request=True, natural_end_possible=False)
    assert got == verdict, detail


@pytest.mark.parametrize(("baseline", "after_close", "natural", "verdict"), [
    (0.2, 0.25, False, "honoured"),
    (0.2, 3.0, False, "not_honoured"),  # waited for a slot the abandoned request still held
    (0.2, 0.25, True, "inconclusive"),
])
def test_timing(baseline: float, after_close: float, natural: bool, verdict: str) -> None:
    got, _ = judge_timing(baseline=baseline, after_close=after_close,
                          natural_end_possible=natural)
    assert got == verdict


# ----------------------------------------------------------------------- status page parsers

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1234.0
vllm:generation_tokens_total{engine="1",model_name="m"} 6.0
vllm:cache_usage_perc NaN
"""
LLAMA_METRICS = """\
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 321
llamacpp:tokens_predicted_total 300
llamacpp:requests_processing 1
llamacpp:requests_deferred 0
"""
LLAMA_SLOTS = json.dumps([
    {"id": 0, "n_ctx": 4096, "is_processing": True, "id_task": 7,
     "next_token": [{"has_next_token": True, "n_remain": 90, "n_decoded": 10}]},
    {"id": 1, "n_ctx": 4096, "is_processing": False},
])


class _Pages(ProbeHttp):
    """ProbeHttp whose GETs answer from a dict instead of the network."""

    def __init__(self, pages: dict[str, str]) -> None:
        super().__init__("http://127.0.0.1:1/v1", None)
        self.pages = pages

    async def get(self, path: str, *, timeout: float = 5.0) -> httpx.Response | None:
        return httpx.Response(200, text=self.pages[path]) if path in self.pages else None


def test_parse_prometheus_sums_label_sets_and_skips_nan() -> None:
    values = parse_prometheus(VLLM_METRICS)
    assert values["vllm:generation_tokens_total"] == 1240.0
    assert values["vllm:num_requests_running"] == 2.0
    assert "vllm:cache_usage_perc" not in values


@pytest.mark.parametrize(("factory", "page", "text", "busy", "generated"), [
    (vllm_monitor, "/metrics", VLLM_METRICS, 3, 1240.0),
    (llamacpp_metrics_monitor, "/metrics", LLAMA_METRICS, 1, 321.0),
    (LlamaSlotsMonitor, "/slots", LLAMA_SLOTS, 1, None),
])
async def test_monitors_read_their_pages(factory: type, page: str, text: str, busy: int,
                                         generated: float | None) -> None:
    http = _Pages({page: text})
    try:
        snap = await factory(http).snapshot(None)
        assert snap is not None and (snap.busy, snap.generated) == (busy, generated)
        assert await factory(_Pages({page: "<html>not it</html>"})).snapshot(None) is None
    finally:
        await http.aclose()


@pytest.mark.parametrize(("base", "root"), [("http://h:8000/v1", "http://h:8000"),
                                            ("http://h:8000/v1/", "http://h:8000"),
                                            ("https://h/api", "https://h/api")])
def test_root_url(base: str, root: str) -> None:
    assert root_url_of(base) == root


def test_error_message_reads_openai_errors() -> None:
    assert error_message('{"error": {"message": "model not found", "code": 404}}') == \
        "model not found"
    assert error_message("plain text") == "plain text"


# ----------------------------------------------------------------------------------- storage

def _result(base_url: str, honoured: bool, when: datetime | None = None) -> ProbeResult:
    abort = AbortMeasurement(method="timing", verdict="honoured" if honoured else "not_honoured",
                             detail="made up")
    return ProbeResult(base_url=base_url, model="m", probed_at=when or datetime.now(UTC),
                       streaming=True, usage=True, continuous_usage=False, logprobs=False,
                       abort_honoured=honoured, abort_method="timing", abort=abort)


def test_store_and_read_back_newest(db_session: Session) -> None:
    url = f"http://{uuid.uuid4().hex}.invalid/v1"
    old = datetime.now(UTC) - timedelta(days=1)
    record_probe(db_session, result=_result(url, honoured=False, when=old))
    row = record_probe(db_session, result=_result(url + "/", honoured=True))
    assert row > 0
    newest = latest_probe(db_session, base_url=url, model="m")
    assert newest is not None and newest.abort_honoured is True
    assert latest_probe(db_session, base_url=url, model="other") is None
    assert require_abort_honoured(db_session, endpoint="e", base_url=url, model="m") == newest


@pytest.mark.parametrize(("stored", "max_age", "message"), [
    (None, None, "never been probed"),
    (False, None, "not honoured"),
    (True, timedelta(hours=1), "older than"),
])
def test_a_job_refuses_an_endpoint(db_session: Session, stored: bool | None,
                                   max_age: timedelta | None, message: str) -> None:
    url = f"http://{uuid.uuid4().hex}.invalid/v1"
    if stored is not None:
        when = datetime.now(UTC) - timedelta(days=2)
        record_probe(db_session, result=_result(url, honoured=stored, when=when))
    with pytest.raises(EndpointError, match=message):
        require_abort_honoured(db_session, endpoint="e", base_url=url, model="m",
                               max_age=max_age)


def test_job_requiring_honoured_aborts_refuses_an_unprobed_endpoint(pg_url: str) -> None:
    from foldem.core.errors import EndpointError
    from foldem.spec.job import parse_job
    from tasks.probe.store import check_abort_probes

    job = parse_job({
        "name": "strict", "prompts": {"path": "unused.jsonl"},
        "endpoints": [{"name": "gpu", "base_url": "http://never-probed.invalid:8000/v1",
                       "model": "m", "require_abort_honoured": True}],
        "stages": [{"name": "solve", "template": "{problem}"}]})
    with pytest.raises(EndpointError) as err:
        check_abort_probes(job, pg_url)
    assert "has never been probed" in err.value.message and "foldem probe" in err.value.message
