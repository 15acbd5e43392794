"""A rejection's evidence stored next to its sample's text (real Postgres): whatever the model
wrote (NUL, lone surrogates, characters outside the BMP), the quote is the stored text at the
stored offsets."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tasks.engine.evidence import with_evidence
from tasks.records.models import RejectionRecord, StageText
from tasks.store.storage import save_results, start_run
from tests.support.samples import sample_result

STORED_QUOTE = text("""
SELECT r.span_start, r.span_end, r.span_text,
       substr(t.text, r.span_start + 1, r.span_end - r.span_start) AS cut
FROM rejections r JOIN samples s USING (run_id, prompt_id, sample_index)
CROSS JOIN LATERAL (SELECT e ->> 'text' AS text FROM jsonb_array_elements(s.stage_texts) e
                    WHERE e ->> 'stage' = r.stage) t
WHERE r.run_id = :r AND r.prompt_id = :p
""")


@pytest.mark.parametrize(("before", "quote"), [
    ("plain text\n", "2 + 2 = 5"),
    ("\x00\x00 NUL first\n", "2 + 2 = 5"),
    ("lone \udcff surrogate\n", "2 + \ud800 = 5"),
    ("🙂🙂 astral 𝟘\n", "2 + 🙂 = 5"),
    ("\r\n\t\u202e\ufeff\n", "say \x00 2 = 5"),
])
def test_the_stored_quote_is_the_stored_text_at_the_offsets(db_session: Session, before: str,
                                                             quote: str) -> None:
    run_id = f"spans-{uuid.uuid4().hex[:12]}"
    start_run(db_session, run_id=run_id, job_name="unit", spec={}, spec_hash="h",
              code_version="test", samples_expected=1)
    stage_text = before + quote + " and on"
    record = with_evidence(
        RejectionRecord(stage="solve", checkpoint=0, validator="arithmetic",
                        reason_code="arithmetic_error"),
        stage_text, (len(before), len(before) + len(quote)))
    save_results(db_session, results=[sample_result(
        run_id, "p0", 0, "rejected", rejection=record,
        stages=[StageText(stage="solve", text=stage_text)])])
    row = db_session.execute(STORED_QUOTE, {"r": run_id, "p": "p0"}).one()
    assert (row.span_start, row.span_end) == (len(before), len(before) + len(quote))
    assert row.span_text == row.cut
    if quote.isprintable():
        assert row.span_text == quote
