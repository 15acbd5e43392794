"""Rejection evidence end to end: the `generate` flow over the replay endpoint (real HTTP) into
embedded Postgres. Every stored span quotes the stage text exactly as `samples.stage_texts`
holds it, the analyst query shows it, and judging in flight or after the fact points at the
same text."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from foldem import PROJECT_ROOT
from foldem.replay.launcher import ReplayServer
from tasks.store.db import get_engine, libpq_url
from tests.support.jobs import PACE, job_dict, run_flow, write_job
from tests.support.replay import replay_fixture

pytestmark = pytest.mark.integration

replay = replay_fixture("gpt3", tokens_per_second=PACE * 4)

VALIDATORS = [{"name": "arithmetic"}, {"name": "repetition"}, {"name": "negative_values"},
              {"name": "hallucination"}, {"name": "final_answer"}, {"name": "reference_answer"}]

# Each rejection with the text of its stage, and the stage text cut where the span says.
EVIDENCE = """
SELECT r.prompt_id, r.sample_index, r.validator, r.reason_code, r.span_start, r.span_end,
       r.span_text, t.text AS stage_text,
       substr(t.text, r.span_start + 1, r.span_end - r.span_start) AS cut
FROM rejections r JOIN samples s USING (run_id, prompt_id, sample_index)
CROSS JOIN LATERAL (SELECT e ->> 'text' AS text FROM jsonb_array_elements(s.stage_texts) e
                    WHERE e ->> 'stage' = r.stage) t
WHERE r.run_id = :r ORDER BY r.prompt_id, r.sample_index
"""


def evidence(db_url: str, run_id: str) -> dict[tuple[str, int], Any]:
    with get_engine(db_url).connect() as conn:
        return {(r.prompt_id, r.sample_index): r
                for r in conn.execute(text(EVIDENCE), {"r": run_id})}


def run(tmp_path: Path, replay: ReplayServer, own_pg_url: str, run_id: str, *,
        in_flight: bool) -> dict[tuple[str, int], Any]:
    job = job_dict(replay.base_url, limit=6, samples=4, name=f"ev-{run_id}",
                   validators=VALIDATORS)
    job["in_flight"] = in_flight
    job["replay"]["tokens_per_second"] = PACE * 4
    job["stages"][0]["early_exit"] = False  # both judge the whole text: the same rejections
    summary = run_flow(write_job(tmp_path, job, f"{run_id}.yaml"), run_id, own_pg_url)
    assert summary.status == "completed" and summary.rejected > 0
    return evidence(own_pg_url, run_id)


def test_spans_quote_the_stored_stage_text(prefect_api: None, own_pg_url: str,
                                           replay: ReplayServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    in_flight = run(tmp_path, replay, own_pg_url, "ev-in-flight", in_flight=True)
    post_hoc = run(tmp_path, replay, own_pg_url, "ev-post-hoc", in_flight=False)

    for rows in (in_flight, post_hoc):
        spanned = [r for r in rows.values() if r.span_start is not None]
        assert len(spanned) >= 3, "too few rejections with a span to say anything"
        for r in spanned:
            assert r.cut == r.span_text == r.stage_text[r.span_start:r.span_end], r
            assert 0 < len(r.span_text) <= 500
        # Only a rejection no text explains lacks a span.
        assert {r.reason_code for r in rows.values() if r.span_start is None} <= {
            "no_final_answer"}

    # The same sample (the replay serves it the same recording) rejected both ways: the same
    # verdict points at the same text.
    both = in_flight.keys() & post_hoc.keys()
    assert any(in_flight[key].span_start is not None for key in both)
    for key in both:
        a, b = in_flight[key], post_hoc[key]
        assert (a.validator, a.reason_code, a.span_start, a.span_end, a.span_text) == (
            b.validator, b.reason_code, b.span_start, b.span_end, b.span_text), key

    psql = shutil.which("psql")
    if psql is None:
        return
    out = subprocess.run(
        [psql, libpq_url(own_pg_url), "-X", "--csv", "-v", "ON_ERROR_STOP=1", "-v",
         "run_id=ev-in-flight", "-f", str(PROJECT_ROOT / "sql/queries/rejection_evidence.sql")],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    # The run's dedup may also reject near duplicates of samples that earlier runs in this
    # database kept (stage 'dedup', a whole sample, no span): the query lists them too.
    shown = [r for r in csv.DictReader(io.StringIO(out.stdout)) if r["stage"] != "dedup"]
    assert len(shown) == len(in_flight)
    for row in shown:
        if row["span_text"]:
            assert row["quoted_exactly"] == "t"
            assert f"[[{row['span_text']}]]".replace("\n", "\\n") in row["in_context"]
