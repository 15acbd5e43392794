"""The charts of `foldem report --out` and `foldem bench replay`, read back from their
matplotlib objects: every title names the run or scope, axis labels say endpoint and model,
and the colours keep one meaning (accepted green, rejected red/orange, failed grey)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from tasks.bench import replay_report
from tasks.reports import charts
from tasks.reports.rows import (
    AnalyticsReport,
    FireRow,
    LatencyRow,
    RunRow,
    TokenRow,
    ValidatorRow,
)

GREEN = charts.ACCEPTED.lower()
SHADES = {c.lower() for c in charts.REJECTION_SHADES}
VALIDATORS = ["arithmetic", "repetition", "reference_answer", "negative_values", "final_answer"]


def _report() -> AnalyticsReport:
    return AnalyticsReport(
        scope="run gsm8k-1 (the latest; choose with --run ID or --since DATE)",
        runs=[RunRow(run_id="gsm8k-1", job_name="gsm8k", status="completed",
                     started_at=datetime(2026, 3, 1, tzinfo=UTC), samples=10, accepted=5,
                     rejected=4, failed=1)],
        validators=[ValidatorRow(stage="solve", validator=v, rejections=5 - i, pct_of_stage=10.0,
                                 pct_of_rejections=20.0, reasons="x 1")
                    for i, v in enumerate(VALIDATORS)],
        tokens=[TokenRow(stage="solve", count_source="server_usage", calls=10, aborted_calls=2,
                         prompt_tokens=100, completion_tokens=1000,
                         completion_tokens_rejected=300, completion_tokens_failed=100,
                         tokens_saved=200)],
        fire_by_fraction=[FireRow(bucket="0.25-0.50", validator=v, rejections=1, in_flight=1)
                          for v in VALIDATORS],
        fire_by_tokens=[FireRow(bucket="32-63", validator=v, rejections=1, in_flight=0)
                        for v in VALIDATORS],
        latency=[LatencyRow(endpoint="replay", model=m, calls=5, errors=0, retries=0,
                            p50_ttft_ms=10.0, p95_ttft_ms=20.0, p50_duration_ms=100.0,
                            p95_duration_ms=200.0) for m in ("*", "gpt3-6b_finetuning")])


def _titles(fig: Figure) -> list[str]:
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    if fig._suptitle is not None:  # noqa: SLF001 - matplotlib has no public getter before 3.10
        titles.append(fig._suptitle.get_text())  # noqa: SLF001
    return [t for t in titles if t]


def _bar_colours(fig: Figure) -> set[str]:
    return {to_hex(p.get_facecolor()) for ax in fig.axes for p in ax.patches}


def _legend_colours(fig: Figure) -> dict[str, str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return {text.get_text(): to_hex(handle.get_facecolor())
            for legend in legends
            for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)}


def test_every_report_chart_names_its_run() -> None:
    figures = charts.build_charts(_report())
    assert set(figures) == {"rejections", "tokens", "fire_points", "fire_tokens", "latency"}
    for key, fig in figures.items():
        assert any("run gsm8k-1" in t for t in _titles(fig)), (key, _titles(fig))
        assert not any("latest; choose" in t for t in _titles(fig)), key


def test_rejections_are_never_green() -> None:
    figures = charts.build_charts(_report())
    for key in ("rejections", "fire_points", "fire_tokens"):
        colours = _bar_colours(figures[key])
        assert GREEN not in colours, key
        assert colours <= SHADES, (key, colours)


def test_token_chart_uses_one_colour_per_outcome() -> None:
    legend = _legend_colours(charts.build_charts(_report())["tokens"])
    assert legend["accepted samples"] == charts.ACCEPTED.lower()
    assert legend["rejected samples"] == charts.REJECTED.lower()
    assert legend["failed samples"] == charts.FAILED.lower()


def test_latency_labels_say_endpoint_and_model() -> None:
    fig = charts.build_charts(_report())["latency"]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["replay\nany model", "replay\ngpt3-6b_finetuning"]


@pytest.mark.parametrize(("endpoint", "model", "label"), [
    ("replay", "*", "replay · any model"), ("vllm", "Qwen/Qwen2.5-7B", "vllm · Qwen/Qwen2.5-7B")])
def test_endpoint_label(endpoint: str, model: str, label: str) -> None:
    assert charts.endpoint_label(endpoint, model) == label


def _group(full: int, msifr: int) -> dict[str, Any]:
    return {"tokens_full": full, "tokens_msifr": msifr, "token_reduction": 1 - msifr / full}


def test_replay_bench_charts_name_the_benchmark_and_keep_rejections_off_green() -> None:
    trace = SimpleNamespace(id="t1", first_error_step=1)
    row = SimpleNamespace(status="rejected", completion_tokens=40, step_index=2)
    full = SimpleNamespace(rows={"t1": SimpleNamespace(status="accepted", completion_tokens=100,
                                                       step_index=None)})
    results: Any = {"full": full, "msifr": SimpleNamespace(rows={"t1": row})}
    summary = {"traces": 1200, "per_dataset": {"gsm8k": _group(1000, 600)},
               "per_generator": {"gpt3-6b": _group(500, 300), "gpt3-175b": _group(500, 300)},
               "per_validator": {"arithmetic": {"rejected": 5, "on_clean": 1,
                                                "on_wrong_step": 3}}}
    figures = replay_report.build_charts(summary, [trace], results)  # type: ignore[list-item]
    for name, fig in figures.items():
        assert any("replay benchmark, 1,200 traces" in t for t in _titles(fig)), name
    assert GREEN not in _bar_colours(figures["rejections_by_validator.png"])
    assert GREEN not in _bar_colours(figures["rejection_position.png"])
    assert set(_legend_colours(figures["rejections_by_validator.png"]).values()) <= SHADES
