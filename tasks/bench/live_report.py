"""DIR/report.md and its two PNG charts for `foldem bench live` (style and colours of
tasks/reports/charts.py, as tasks/bench/replay_report.py: rejections red/orange, never green;
every title names the benchmark and its scope)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.reports.charts import (
    DPI,
    NEUTRAL,
    NEUTRAL_LIGHT,
    REJECTION_SHADES,
    _figure,
    _style,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def bench_scope(s: dict[str, Any]) -> str:
    """What every chart title names: this benchmark, its mode and its size."""
    slots = f"{s['slots']} slot" + ("s" if s["slots"] != 1 else "")
    return f"live SmolLM2-135M, {s['mode']} mode, {slots}, {s['samples']} samples"


def _tokens_chart(s: dict[str, Any], scope: str) -> Figure:
    fig = _figure(6.5, 3.8)
    ax = fig.add_subplot()
    labels = ["generate then filter", "in-flight rejection"]
    xs = [0, 1]
    width = 0.38
    ledger = [s["tokens_full"], s["tokens_msifr"]]
    server = [s["server_tokens_full"], s["server_tokens_msifr"]]
    ax.bar([x - width / 2 for x in xs], ledger, width, label="ledger (client)", color=NEUTRAL)
    ax.bar([x + width / 2 for x in xs], server, width, label="server (tokens_predicted_total)",
           color=NEUTRAL_LIGHT)
    ax.annotate(f"-{_pct(s['token_reduction'])}", (1 - width / 2, ledger[1]), ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(xs, labels, fontsize=9)
    ax.set_ylabel("completion tokens (model's tokenizer)")
    ax.legend(fontsize=8, frameon=False)
    _style(ax, f"Tokens, ledger and server\n{scope}")
    return fig


def _validators_chart(s: dict[str, Any], scope: str) -> Figure:
    full, msifr = s["per_validator"]["full"], s["per_validator"]["msifr"]
    names = sorted(set(full) | set(msifr), key=lambda n: -(full.get(n, 0) + msifr.get(n, 0)))
    names = names or ["(none)"]
    fig = _figure(6.5, 0.5 * len(names) + 1.9)
    ax = fig.add_subplot()
    ys = range(len(names))
    h = 0.38
    # Both bars are rejections, so both red/orange: the shade tells the run apart.
    ax.barh([y - h / 2 for y in ys], [full.get(n, 0) for n in names], h,
            color=REJECTION_SHADES[3], label="generate then filter")
    ax.barh([y + h / 2 for y in ys], [msifr.get(n, 0) for n in names], h,
            color=REJECTION_SHADES[0], label="in flight")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("samples rejected (stage: solve)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    _style(ax, f"Rejections by validator\n{scope}", grid="x")
    return fig


def _abort_line(a: dict[str, Any]) -> str:
    if a["check"] == "per call":
        return (f"{a['total']:,} over {a['aborted_calls']} aborted calls (per call: p50 "
                f"{a['p50']}, p99 {a['p99']}, max {a['max']})")
    return (f"{a['total']:,} over {a['aborted_calls']} aborted calls (the run's remainder; "
            "several slots: not attributable per call)")


def write_report(s: dict[str, Any], out: Path) -> list[Path]:
    """Write the charts and report.md into `out`; returns the files written."""
    scope = bench_scope(s)
    charts = {"tokens.png": ("Tokens, ledger and server", _tokens_chart(s, scope)),
              "rejections_by_validator.png": ("Rejections by validator",
                                              _validators_chart(s, scope))}
    for name, (_, fig) in charts.items():
        fig.savefig(out / name, dpi=DPI)
    a = s["tokens_after_abort"]
    own = s["own_text_verdicts_equal"]
    rep = s["reproduced"]
    lines = [
        "# Live benchmark (llama.cpp, SmolLM2-135M-Instruct)", "",
        f"{s['prompts']} GSM8K test prompts x {s['samples_per_prompt']} sample(s), "
        f"{s['mode']} mode, {s['slots']} slot(s), {s['threads']} thread(s), max_tokens "
        f"{s['max_tokens']}; {s['elapsed_seconds']} s in all.", "",
        "| figure | generate then filter | in flight |", "|---|---|---|",
        f"| completion tokens (ledger) | {s['tokens_full']:,} | {s['tokens_msifr']:,} |",
        f"| completion tokens (server) | {s['server_tokens_full']:,} | "
        f"{s['server_tokens_msifr']:,} |",
        f"| server decode seconds | {s['server_decode_seconds_full']} | "
        f"{s['server_decode_seconds_msifr']} |",
        f"| wall seconds | {s['wall_seconds_full']} | {s['wall_seconds_msifr']} |",
        f"| kept | {s['kept_full']} | {s['kept_msifr']} |",
        f"| accepted per hour | {s['accepted_per_hour_full']} | "
        f"{s['accepted_per_hour_msifr']} |", "",
        f"- token reduction: {_pct(s['token_reduction'])}",
        f"- tokens decoded after the hang-up: {_abort_line(a)}",
        f"- ledger + tokens after abort == server: {s['ledger_equals_server']} "
        f"(count sources: {s['count_sources']})",
        f"- kept equal to post-hoc: {s['kept_equal_to_posthoc']} (kept sets equal: "
        f"{s['kept_sets_equal']}; in-flight verdict = post-hoc verdict on its own text: "
        f"{own['equal']}/{own['samples']})",
        f"- same text in both runs (a cut text: the baseline's beginning): "
        f"{s['same_text']['same_text']}/{s['same_text']['samples']}",
    ]
    if rep is not None:
        lines.append(f"- reproduced: {rep['identical']}/{rep['checked']} samples generated a "
                     "third time wrote the same text")
    lines += ["", "## Rejections by validator", "", "| validator | generate then filter | "
              "in flight |", "|---|---|---|"]
    pv = s["per_validator"]
    for name in sorted(set(pv["full"]) | set(pv["msifr"])):
        lines.append(f"| {name} | {pv['full'].get(name, 0)} | {pv['msifr'].get(name, 0)} |")
    ids = s["run_ids"]
    lines += ["", f"Runs: `{ids['full']}`, `{ids['msifr']}`.", "", "## Charts", ""]
    lines += [f"![{title}]({name})" for name, (title, _) in charts.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "report.md", *(out / n for n in charts)]
