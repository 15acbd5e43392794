"""The run summary as the Prefect UI shows it (markdown) and as the terminal prints it."""

from __future__ import annotations

from tasks.records.models import EndpointFigures, RunSummary, StageFigures
from tasks.reports.summary import summary_markdown, summary_text


def _summary(**extra: object) -> RunSummary:
    return RunSummary.model_validate({
        "run_id": "nightly-1", "samples": 10, "accepted": 6, "rejected": 3, "failed": 1,
        "prompt_tokens": 500, "completion_tokens": 2000, "tokens_saved": 700, "calls": 14,
        "rejections_by_validator": {"arithmetic": 2, "well_posed": 1},
        "rejections_by_stage": {"problem": 1, "solve": 2},
        "stages": [StageFigures(stage="problem", reached=10, passed=9, rejected=1),
                   StageFigures(stage="solve", reached=9, passed=6, rejected=2, failed=1)],
        "endpoints": [EndpointFigures(endpoint="vllm-a", calls=9, mean_ttft_ms=40.0),
                      EndpointFigures(endpoint="vllm-b", calls=5, failed_calls=2)],
        **extra})


def test_markdown_has_the_stage_funnel_validators_and_endpoints() -> None:
    md = summary_markdown(_summary(), job_name="gsm8k")
    assert md.startswith("# gsm8k: completed\n")
    assert "| problem | 10 | 9 | 1 | 0 |" in md and "| solve | 9 | 6 | 2 | 1 |" in md
    assert "| arithmetic | 2 |" in md
    assert "| vllm-b | 5 | 2 |" in md


def test_closing_facts_are_list_items_not_one_paragraph() -> None:
    md = summary_markdown(_summary(quality_gate="passed", near_duplicates_removed=2,
                                   exported_to="out/nightly-1"), job_name="gsm8k")
    tail = md.splitlines()[-3:]
    assert tail == ["- Near-duplicates removed: 2.", "- Quality gate: passed.",
                    "- Accepted samples exported to `out/nightly-1` (JSONL/Parquet, chat and "
                    "plain forms, manifest.json)."]


def test_terminal_text_names_the_run_and_counts() -> None:
    text = summary_text(_summary())
    assert text.splitlines()[0] == "run nightly-1: completed"
    assert "accepted          6" in text and "arithmetic" in text


def test_replay_figure_says_whose_it_is() -> None:
    """A peer's (or a resumed session's) replay endpoint served only that flow run: the figure
    is labelled as the flow run's, beside the run's ledger total."""
    s = _summary(server_tokens_sent=1200)
    for text in (summary_text(s), summary_markdown(s, job_name="gsm8k")):
        assert "this flow run started sent it 1,200 completion tokens" in text
        assert "the run's ledger, all flow runs and sessions: 2,000" in text


def test_agreement_figures_show_only_when_agreement_stopped_samples() -> None:
    plain_md, plain_text = summary_markdown(_summary(), job_name="g"), summary_text(_summary())
    assert "agreement" not in plain_md.lower() and "superseded" not in plain_text
    s = _summary(samples=14, superseded=4, agreement_cut_calls=1, agreement_tokens_saved=1234,
                 stages=[StageFigures(stage="solve", reached=11, passed=6, rejected=3,
                                      failed=1, superseded=1)])
    md = summary_markdown(s, job_name="g")
    assert "## Early exit by agreement" in md and "| 4 | 1 | 1,234 |" in md
    assert "| stage | reached | passed | rejected | failed | superseded |" in md
    assert "| solve | 11 | 6 | 3 | 1 | 1 |" in md
    text = summary_text(s)
    assert "superseded        4" in text and "1 streams cut, ~1,234 tokens saved" in text
