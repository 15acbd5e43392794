"""A made-up run with what an audit page must show, saved in a real database: samples of every
status, rejections cut in flight and after the stream ended, evidence spans (valid, missing,
out of range), priced and unpriced calls, and a sample whose text is hostile HTML.

Spans and prices are written with UPDATEs, as the code that records them does not exist in
every checkout; the columns are the schema's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tasks.records.models import RejectionRecord, SampleResult, StageText
from tasks.store.storage import finish_run, start_run
from tests.support.samples import ledger_entry, sample_result

#: Model text that would run script if the page did not escape it.
HOSTILE = ('Let me answer. <script>window.__pwned = 1</script> and '
           '<img src=x onerror="window.__pwned = 2"> then </pre></details><b>bold</b> 2 + 2 = 5')
ARITHMETIC_TEXT = ("Natalia sold 48 / 2 = 24 clips in May.\n"
                   "Altogether she sold 48 + 24 = 73 clips")
ARITHMETIC_SPAN = "48 + 24 = 73"
LOOP_TEXT = "She has 5 apples.\n" + "She has 5 apples, so she has 5 apples.\n" * 6
REFERENCE_TEXT = "Each box holds 6 eggs.\n3 boxes hold 3 * 6 = 18 eggs.\n#### 18"
ACCEPTED_TEXT = "James buys 2 packs of 12 = 24 pens.\n#### 24"


@dataclass(frozen=True)
class AuditRun:
    run_id: str
    rejected: int
    accepted: int
    superseded: int
    failed: int
    #: prompt id -> the text its rejection's span covers
    spans: dict[str, str]


def _rejected(run_id: str, prompt_id: str, text: str, validator: str, reason: str, *,
              cut: bool, tokens: int, detail: str = "", step: int | None = 1) -> SampleResult:
    return sample_result(
        run_id, prompt_id, status="rejected", problem=f"Word problem {prompt_id}",
        reference_answer="72", stages=[StageText(stage="solve", text=text, aborted=cut)],
        rejection=RejectionRecord(stage="solve", checkpoint=2, validator=validator,
                                  reason_code=reason, detail=detail, step_index=step,
                                  tokens_at_fire=tokens, fraction_at_fire=tokens / 120),
        ledger=[ledger_entry(run_id, prompt_id, completion_tokens=tokens, aborted=cut,
                             abort_reason="rejected" if cut else None, expected_tokens=120,
                             tokens_saved=120 - tokens if cut else 0,
                             finish_reason=None if cut else "stop")])


def build_audit_samples(run_id: str, extra_rejected: int = 0) -> list[SampleResult]:
    """The samples of the made-up run (`extra_rejected` more arithmetic rejections, to make a
    run bigger than the page's caps)."""
    results = [
        _rejected(run_id, "p-arith", ARITHMETIC_TEXT, "arithmetic", "arithmetic_error",
                  cut=True, tokens=21, detail="48 + 24 is 72, not 73"),
        _rejected(run_id, "p-loop", LOOP_TEXT, "repetition", "loop", cut=True, tokens=60,
                  detail="the same sentence 6 times"),
        _rejected(run_id, "p-ref", REFERENCE_TEXT, "reference_answer", "wrong_answer",
                  cut=False, tokens=30, detail="18 is not the reference answer 72", step=None),
        _rejected(run_id, "p-hostile", HOSTILE, "arithmetic", "arithmetic_error", cut=True,
                  tokens=25, detail='<script>window.__pwned = 3</script> "quoted" & more'),
        _rejected(run_id, "p-badspan", ARITHMETIC_TEXT, "arithmetic", "arithmetic_error",
                  cut=True, tokens=21),
        *(_rejected(run_id, f"p-more-{i:03d}", ARITHMETIC_TEXT, "arithmetic",
                    "arithmetic_error", cut=True, tokens=21) for i in range(extra_rejected)),
    ]
    for i in range(3):
        results.append(sample_result(
            run_id, f"p-ok-{i}", status="accepted", answer="24", early_exit=True,
            stages=[StageText(stage="solve", text=ACCEPTED_TEXT, aborted=True,
                              final_answer="24")],
            ledger=[ledger_entry(run_id, f"p-ok-{i}", completion_tokens=14, aborted=True,
                                 abort_reason="early_exit", expected_tokens=120,
                                 tokens_saved=106, prompt_tokens=50)]))
    results.append(sample_result(
        run_id, "p-ok-0", 1, status="superseded",
        stages=[StageText(stage="solve", text="James buys 2 packs", aborted=True)],
        ledger=[ledger_entry(run_id, "p-ok-0", 1, completion_tokens=5, aborted=True,
                             abort_reason="agreement", expected_tokens=120, tokens_saved=115)]))
    results.append(sample_result(
        run_id, "p-fail", status="failed", error="endpoint replay: connection reset",
        ledger=[ledger_entry(run_id, "p-fail", completion_tokens=0,
                             error="connection reset")]))
    return results


def save_audit_run(session: Session, run_id: str, extra_rejected: int = 0) -> AuditRun:
    """Save the made-up run (finished: completed) with spans on p-arith, p-ref and p-hostile,
    an out-of-range span on p-badspan, none on p-loop; accepted calls priced, the rest not."""
    from tasks.store.storage import save_results

    made = build_audit_samples(run_id, extra_rejected)
    start_run(session, run_id=run_id, job_name="audit-test",
              spec={"export": {"dir": "out/{job}/{run_id}"}}, spec_hash="h",
              code_version="test", samples_expected=len(made))
    save_results(session, results=made)
    spans = {"p-arith": (ARITHMETIC_TEXT, ARITHMETIC_SPAN),
             "p-ref": (REFERENCE_TEXT, "#### 18"),
             "p-hostile": (HOSTILE, "<script>window.__pwned = 1</script>")}
    for prompt_id, (text, span) in spans.items():
        start = text.index(span)
        session.execute(sa.text(
            "UPDATE rejections SET span_start = :s, span_end = :e, span_text = :t "
            "WHERE run_id = :r AND prompt_id = :p"),
            {"s": start, "e": start + len(span), "t": span, "r": run_id, "p": prompt_id})
    session.execute(sa.text(
        "UPDATE rejections SET span_start = 500, span_end = 510, span_text = 'gone' "
        "WHERE run_id = :r AND prompt_id = 'p-badspan'"), {"r": run_id})
    session.execute(sa.text(
        "UPDATE ledger SET price_input_per_mtok = 0.15, price_output_per_mtok = 0.6, "
        "price_source = 'job_spec', cached_prompt_tokens = 10, cost_usd = :c "
        "WHERE run_id = :r AND prompt_id LIKE 'p-ok-%' AND sample_index = 0"),
        {"c": Decimal("0.0000159"), "r": run_id})
    finish_run(session, run_id=run_id, status="completed")
    by_status = {s: sum(r.status == s for r in made)
                 for s in ("rejected", "accepted", "superseded", "failed")}
    return AuditRun(run_id=run_id, spans={p: s for p, (_, s) in spans.items()}, **by_status)
