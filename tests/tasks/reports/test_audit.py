"""The audit page's data (tasks/reports/audit.py) and its HTML (tasks/reports/audit_page.py) on
real Postgres: spans and prices shown when recorded and said to be absent when not, the cut
point, the caps on big runs, hostile model text escaped, and nothing fetched from elsewhere.
`foldem report --html` writes the same page."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from foldem.cli.main import main
from tasks.records.models import RunSummary
from tasks.reports.analytics import RunNotFoundError
from tasks.reports.audit import SampleCaps, build_audit
from tasks.reports.audit_page import render_audit_html, run_audit_path, write_audit_page
from tasks.reports.audit_rows import AuditPage, AuditSample
from tasks.reports.audit_text import text_pieces, valid_span
from tasks.reports.summary import summary_markdown, summary_text
from tasks.store import db
from tasks.store.storage import start_run
from tests.support.audit_run import (
    ARITHMETIC_SPAN,
    ARITHMETIC_TEXT,
    HOSTILE,
    LOOP_TEXT,
    AuditRun,
    save_audit_run,
)
from tests.support.scratch_db import scratch_database


@pytest.fixture(scope="module")
def audit_url(pg_url: str) -> Iterator[str]:
    with scratch_database(pg_url, migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def made(audit_url: str) -> AuditRun:
    with db.session_scope(db.get_engine(audit_url)) as session:
        return save_audit_run(session, f"audit-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def session(audit_url: str) -> Iterator[Session]:
    with db.session_scope(db.get_engine(audit_url)) as s:
        yield s


@pytest.fixture
def page(session: Session, made: AuditRun) -> AuditPage:
    return build_audit(session, run_id=made.run_id)


def by_prompt(page: AuditPage, prompt_id: str, index: int = 0) -> AuditSample:
    return next(s for s in page.samples if (s.prompt_id, s.sample_index) == (prompt_id, index))


def test_every_sample_is_listed_with_its_status(page: AuditPage, made: AuditRun) -> None:
    counts = {c.status: (c.total, c.listed) for c in page.counts}
    assert counts == {"rejected": (made.rejected, made.rejected),
                      "accepted": (made.accepted, made.accepted),
                      "superseded": (made.superseded, made.superseded),
                      "failed": (made.failed, made.failed)}
    assert page.omitted == 0
    assert [s.status for s in page.samples][:made.rejected] == ["rejected"] * made.rejected
    assert page.validators == ["arithmetic", "reference_answer", "repetition"]
    assert page.summary.samples == len(page.samples)
    assert [st.stage for st in page.summary.stages] == ["solve"]


def test_span_is_highlighted_in_the_text_cut_where_the_stream_stopped(page: AuditPage) -> None:
    sample = by_prompt(page, "p-arith")
    assert sample.rejection is not None
    assert (sample.rejection.validator, sample.rejection.tokens_at_fire) == ("arithmetic", 21)
    [stage] = sample.stages
    assert stage.rejected_here and stage.cut
    assert [p.text for p in stage.pieces if p.kind == "span"] == [ARITHMETIC_SPAN]
    assert "".join(p.text for p in stage.pieces) == ARITHMETIC_TEXT  # nothing lost or added
    assert stage.end_note.startswith("✂ stream cut here after 21 tokens: rejected by arithmetic")
    assert "expected ~120, ~99 not generated" in stage.end_note
    assert sample.tail == ARITHMETIC_TEXT.replace("\n", " ⏎ ")  # short: all of it

    ref = by_prompt(page, "p-ref")
    assert not ref.stages[0].cut
    assert ref.stages[0].end_note == ("stream ended (stop) after 30 tokens; the rejection fired "
                                      "on the complete text")
    assert [p.text for p in ref.stages[0].pieces if p.kind == "span"] == ["#### 18"]


def test_missing_or_bad_spans_and_prices_are_said_to_be_absent(page: AuditPage) -> None:
    loop = by_prompt(page, "p-loop")
    assert loop.rejection is not None and loop.rejection.span_start is None
    assert loop.rejection.span_note == "the validator recorded no span"
    assert all(p.kind == "text" for p in loop.stages[0].pieces)
    bad = by_prompt(page, "p-badspan")
    assert bad.rejection is not None
    assert bad.rejection.span_note.startswith("span 500-510 is outside the stored text")
    assert all(p.kind == "text" for p in bad.stages[0].pieces)

    assert loop.cost_usd is None and not loop.cost_partial
    ok = by_prompt(page, "p-ok-0")
    assert ok.cost_usd == pytest.approx(0.0000159)
    assert page.cost.calls == len(page.samples) and page.cost.priced_calls == 3
    assert page.cost.cost_usd == pytest.approx(3 * 0.0000159)
    [line] = page.cost.lines
    assert (line.price_sources, line.cached_prompt_tokens) == ("job_spec", 30)

    superseded = by_prompt(page, "p-ok-0", 1)
    assert superseded.stages[0].end_note.startswith(
        "✂ stream cut here after 5 tokens: enough samples of the prompt already agreed")
    failed = by_prompt(page, "p-fail")
    assert failed.error == "endpoint replay: connection reset"


def test_html_shows_spans_cut_marks_and_prices(page: AuditPage) -> None:
    doc = render_audit_html(page)
    assert f'<mark class="span" title="the span that triggered the rejection">' \
           f"{ARITHMETIC_SPAN}</mark>" in doc
    assert doc.count('<span class="end cut">✂ stream cut here') == \
        sum(s.stages[-1].cut for s in page.samples if s.stages)
    assert "no price known" in doc and "$0.000016" in doc
    assert "3 of " in doc and "calls priced: a lower bound" in doc
    for key in ("rejections", "tokens", "fire_points"):
        assert re.search(rf'<figure data-chart="{key}"><svg\b', doc), key
    for option in ("rejected", "accepted", "superseded", "failed", "arithmetic", "repetition"):
        assert f'<option value="{option}">' in doc


def test_hostile_model_text_is_escaped_and_nothing_is_fetched(page: AuditPage) -> None:
    doc = render_audit_html(page)
    assert "__pwned" in doc  # the text is there ...
    assert doc.count("<script") == 1  # ... but the only script element is the page's own
    assert "<img" not in doc and "<b>bold</b>" not in doc
    assert html.escape(HOSTILE[:40], quote=False) in doc
    assert "&lt;script&gt;window.__pwned = 3&lt;/script&gt;" in doc  # the reason, too
    nonce = re.search(r"script-src 'nonce-([\w-]+)'", doc)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in doc
    assert "default-src 'none'" in doc
    # no resource from anywhere else: no src/href to a URL, no CSS import or url()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", doc)
    assert "@import" not in doc and not re.search(r"url\((?!#)", doc)  # url(#id): in the SVG


def test_caps_bound_a_big_run_and_take_each_validator_in_turn(audit_url: str) -> None:
    with db.session_scope(db.get_engine(audit_url)) as session:
        big = save_audit_run(session, f"audit-big-{uuid.uuid4().hex[:8]}", extra_rejected=40)
        page = build_audit(session, run_id=big.run_id,
                           caps=SampleCaps(rejected=3, accepted=1), text_limit=50)
    counts = {c.status: (c.total, c.listed) for c in page.counts}
    assert counts["rejected"] == (big.rejected, 3) and counts["accepted"] == (3, 1)
    assert page.omitted == big.rejected - 3 + 2
    # one of each validator before a second of any
    assert sorted(s.rejection.validator for s in page.samples if s.rejection) == \
        ["arithmetic", "reference_answer", "repetition"]
    loop = by_prompt(page, "p-loop")
    assert [p.kind for p in loop.stages[0].pieces] == ["text", "omitted", "text"]
    assert LOOP_TEXT.endswith(loop.stages[0].pieces[-1].text)  # the end, where it was cut
    doc = render_audit_html(page)
    assert f"{page.omitted} samples are not listed" in doc


def test_text_pieces_keep_head_span_and_end_of_a_long_text() -> None:
    text = "a" * 1000 + "SPAN" + "b" * 1000 + "END"
    span = valid_span(text, 1000, 1004)
    pieces = text_pieces(text, span, limit=200)
    assert [p.kind for p in pieces] == ["text", "omitted", "text", "span", "text", "omitted",
                                        "text"]
    assert pieces[0].text == "a" * 40 and pieces[3].text == "SPAN"
    assert pieces[-1].text.endswith("END")
    assert pieces[1].text == f"… {1000 - 30 - 40:,} characters not shown …"
    kept = sum(len(p.text) for p in pieces if p.kind != "omitted")
    assert kept <= 200 + 4
    assert text_pieces("short", None, 200)[0].text == "short"
    assert valid_span("abc", 2, 2) is None and valid_span("abc", 1, 4) is None
    assert valid_span("abc", None, 2) is None and valid_span("abc", 0, 3) == (0, 3)


def test_write_audit_page_and_its_default_place(session: Session, made: AuditRun,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_audit_path(session, run_id=made.run_id) == \
        Path(f"out/audit-test/{made.run_id}/audit.html")
    written = write_audit_page(session, run_id=made.run_id, path=tmp_path / "a" / "page.html")
    assert written.is_absolute() and written.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in written.parent.iterdir()] == ["page.html"]  # no temporary left
    with pytest.raises(RunNotFoundError):
        build_audit(session, run_id="no-such-run")


def test_foldem_report_html(audit_url: str, made: AuditRun, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--database-url", audit_url, "--run", made.run_id, "--html"]) == 0
    page = tmp_path / "out" / "audit-test" / made.run_id / "audit.html"
    out = capsys.readouterr().out
    assert f"audit page of run {made.run_id}: {page}  ({page.as_uri()})" in out
    assert ARITHMETIC_SPAN in page.read_text()

    assert main(["report", "--database-url", audit_url, "--run", made.run_id,
                 "--html", "elsewhere.html"]) == 0
    assert (tmp_path / "elsewhere.html").exists()
    assert main(["report", "--database-url", audit_url, "--since", "2026-01-01",
                 "--html"]) == 2
    assert "--html writes one run's audit page" in capsys.readouterr().err


def test_the_run_summary_links_the_audit_page(tmp_path: Path) -> None:
    page = tmp_path / "out" / "nightly-1" / "audit.html"
    summary = RunSummary(run_id="nightly-1", samples=4, accepted=3, rejected=1, failed=0,
                         prompt_tokens=10, completion_tokens=40, tokens_saved=5,
                         audit_page=str(page))
    md = summary_markdown(summary, job_name="gsm8k")
    assert (f"- Audit page (every sample, why each was rejected, where its stream was cut): "
            f"[{page.as_uri()}]({page.as_uri()}) ([rejected samples only]"
            f"({page.as_uri()}#status=rejected)); on disk at `{page}`.") in md.splitlines()
    assert f"  audit page {page}  ({page.as_uri()})" in summary_text(summary).splitlines()
    assert "audit page" not in summary_text(summary.model_copy(update={"audit_page": None}))


def test_a_run_without_samples_has_a_page_that_says_so(session: Session) -> None:
    run_id = f"audit-empty-{uuid.uuid4().hex[:8]}"
    start_run(session, run_id=run_id, job_name="audit-test", spec={}, spec_hash="h",
              code_version="test", samples_expected=8)
    page = build_audit(session, run_id=run_id)
    assert (page.samples, page.counts, page.omitted) == ([], [], 0)
    doc = render_audit_html(page)
    assert "No stage was reached" in doc and "<b id=\"shown\">0</b>" in doc
    assert "no price known" in doc
