"""DIR/report.md and its PNG charts for `foldem bench replay` (style and colours of
tasks/reports/charts.py: rejections red/orange, never green; every title names the benchmark)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foldem.core.traces import Trace
from tasks.bench.replay_runs import ModeResult
from tasks.reports.charts import (
    DPI,
    FAILED,
    NEUTRAL,
    NEUTRAL_LIGHT,
    REJECTED,
    REJECTION_SHADES,
    _figure,
    _style,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MODE_LABELS = {"full": "generate then filter", "msifr": "in-flight rejection",
                "answer": "+ stop at final answer", "agreement": "+ agreement of k samples",
                "combined": "+ both early exits"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _tokens_chart(groups: dict[str, dict[str, Any]], title: str) -> Figure:
    names = list(groups)
    fig = _figure(max(5.0, 1.2 * len(names) + 2), 3.6)
    ax = fig.add_subplot()
    xs = range(len(names))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [groups[n]["tokens_full"] for n in names], width,
           label="generate then filter", color=NEUTRAL_LIGHT)
    ax.bar([x + width / 2 for x in xs], [groups[n]["tokens_msifr"] for n in names], width,
           label="in-flight rejection", color=NEUTRAL)
    for x, n in zip(xs, names, strict=True):
        ax.annotate(f"-{_pct(groups[n]['token_reduction'])}", (x + width / 2,
                    groups[n]["tokens_msifr"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names, rotation=20 if len(names) > 4 else 0, ha="right"
                  if len(names) > 4 else "center", fontsize=8)
    ax.set_ylabel("completion tokens (o200k)")
    ax.legend(fontsize=8, frameon=False)
    _style(ax, title)
    return fig


def _validators_chart(per_validator: dict[str, dict[str, Any]], scope: str) -> Figure:
    names = list(per_validator) or ["(none)"]
    rows = [per_validator.get(n, {}) for n in names]
    clean = [r.get("on_clean", 0) for r in rows]
    wrong = [r.get("on_wrong_step", 0) for r in rows]
    other = [r.get("rejected", 0) - c - w for r, c, w in zip(rows, clean, wrong, strict=True)]
    fig = _figure(6.5, 0.45 * len(names) + 1.6)
    ax = fig.add_subplot()
    # All three are rejections, so all red/orange: the shade says how right the rejection was.
    ax.barh(names, wrong, color=REJECTED, label="labelled wrong step")
    ax.barh(names, other, left=wrong, color=REJECTION_SHADES[3], label="no step label")
    ax.barh(names, clean, left=[w + o for w, o in zip(wrong, other, strict=True)],
            color=REJECTION_SHADES[2], hatch="//", edgecolor="white",
            label="clean trace (false rejection)")
    ax.invert_yaxis()
    ax.set_xlabel("traces rejected in flight (stage: solve)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    _style(ax, f"Rejections by validator — {scope}", grid="x")
    return fig


def _fire_chart(traces: Sequence[Trace], full: ModeResult, msifr: ModeResult,
                scope: str) -> Figure:
    fractions, relative = [], []
    for t in traces:
        row, base = msifr.rows[t.id], full.rows[t.id]
        if row.status != "rejected" or not base.completion_tokens:
            continue
        fractions.append(row.completion_tokens / base.completion_tokens)
        if row.step_index is not None and t.first_error_step is not None \
                and t.first_error_step >= 0:
            relative.append(row.step_index - t.first_error_step)
    fig = _figure(9.0, 3.4)
    left, right = fig.subplots(1, 2)
    left.hist(fractions or [0], bins=20, range=(0, 1), color=REJECTED)
    left.set_xlabel("share of the full trace streamed when rejected")
    left.set_ylabel("rejected traces")
    fig.suptitle(f"Where rejections fire — {scope}", fontsize=11, x=0.01, ha="left")
    _style(left, "Share of the trace streamed")
    if relative:
        lo, hi = max(-10, min(relative)), min(10, max(relative))
        clipped = [min(hi, max(lo, r)) for r in relative]
        right.hist(clipped, bins=range(lo, hi + 2), align="left", color=REJECTION_SHADES[1])
    right.set_xlabel("rejected at step − labelled wrong step (clipped to ±10)")
    _style(right, "Against the human label")
    return fig


def _modes_chart(results: dict[str, ModeResult], scope: str) -> Figure:
    names = list(results)
    tokens = [sum(r.completion_tokens for r in results[n].rows.values()) for n in names]
    fig = _figure(7.0, 0.5 * len(names) + 1.4)
    ax = fig.add_subplot()
    ax.barh([_MODE_LABELS.get(n, n) for n in names], tokens,
            color=[FAILED if n == "full" else NEUTRAL for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("completion tokens (o200k)")
    _style(ax, f"Tokens by mode — {scope}", grid="x")
    return fig


def bench_scope(summary: dict[str, Any]) -> str:
    """What every chart title names: this benchmark and its size."""
    return f"replay benchmark, {summary['traces']:,} traces"


def build_charts(summary: dict[str, Any], traces: Sequence[Trace],
                 results: dict[str, ModeResult]) -> dict[str, Figure]:
    """The report's charts by file name (nothing drawn to disk)."""
    scope = bench_scope(summary)
    return {
        "tokens_by_dataset.png": _tokens_chart(summary["per_dataset"],
                                               f"Tokens by dataset — {scope}"),
        "tokens_by_generator.png": _tokens_chart(summary["per_generator"],
                                                 f"Tokens by recorded generator — {scope}"),
        "rejections_by_validator.png": _validators_chart(summary["per_validator"], scope),
        "rejection_position.png": _fire_chart(traces, results["full"], results["msifr"], scope),
        "tokens_by_mode.png": _modes_chart(results, scope),
    }


def _group_table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"### {title}", "", "| group | traces | tokens full | tokens in flight | reduction "
             "| oracle | capture | rejected | FR process | FR outcome | missed | acc full "
             "| acc kept |", "|---" * 13 + "|"]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g['traces']} | {g['tokens_full']:,} | {g['tokens_msifr']:,} | "
            f"{_pct(g['token_reduction'])} | {_pct(g['oracle_step_reduction'])} | "
            f"{_pct(g['oracle_capture'])} | {g['rejected']} | "
            f"{_pct(g['false_rejection_rate_process'])} | "
            f"{_pct(g['false_rejection_rate_outcome'])} | {_pct(g['missed_fault_rate'])} | "
            f"{_pct(g['accuracy_full'])} | {_pct(g['accuracy_kept'])} |")
    return [*lines, ""]


def write_report(summary: dict[str, Any], runs: dict[str, Any], traces: Sequence[Trace],
                 results: dict[str, ModeResult], out: Path) -> list[Path]:
    """Write the charts and report.md into `out`; returns the files written."""
    charts = {"tokens_by_dataset.png": "Tokens by dataset", "tokens_by_generator.png":
              "Tokens by generator", "rejections_by_validator.png": "Rejections by validator",
              "rejection_position.png": "Where rejections fire", "tokens_by_mode.png":
              "Tokens by mode"}
    for name, fig in build_charts(summary, traces, results).items():
        fig.savefig(out / name, dpi=DPI)
    s = summary
    lines = [
        "# Replay benchmark", "",
        f"{s['traces']} recorded traces, replayed over HTTP at "
        f"{runs['settings']['tokens_per_second']:g} tokens/s per stream, "
        f"{runs['settings']['concurrency']} streams; machine: {runs['machine']['before']['cores']}"
        f" cores, load {runs['machine']['before']['load_average'][0]} before / "
        f"{runs['machine']['after']['load_average'][0]} after.", "",
        "| figure | value |", "|---|---|",
        f"| tokens, generate then filter | {s['tokens_full']:,} |",
        f"| tokens, in-flight rejection | {s['tokens_msifr']:,} |",
        f"| token reduction | {_pct(s['token_reduction'])} |",
        f"| oracle (stop right after the labelled wrong step) | "
        f"{_pct(s['oracle_step_reduction'])} |",
        f"| oracle capture | {_pct(s['oracle_capture'])} |",
        f"| rejected | {s['rejected']} |",
        f"| false rejections (clean traces / correct answers) | "
        f"{_pct(s['false_rejection_rate_process'])} / {_pct(s['false_rejection_rate_outcome'])} |",
        f"| missed faults (kept with a labelled wrong step) | {_pct(s['missed_fault_rate'])} |",
        f"| accuracy all / kept | {_pct(s['accuracy_full'])} / {_pct(s['accuracy_kept'])} |",
        f"| kept set equal to post-hoc | {s['kept_equal_to_posthoc']} |",
        f"| ledger = replay's count | {s['server_tokens_match']} |",
        f"| wall seconds full / in flight | {s['wall_seconds_full']} / "
        f"{s['wall_seconds_msifr']} |", "",
        "## Modes", "", "| mode | run id | wall s | accepted/hour | statuses | ledger = replay |",
        "|---|---|---|---|---|---|"]
    for name, m in runs["modes"].items():
        lines.append(f"| {_MODE_LABELS.get(name, name)} | `{m['run_id']}` | {m['wall_seconds']} |"
                     f" {m['accepted_per_hour']} | {m['statuses']} | {m['server_ok']} |")
    lines += ["", "## Early exit", "", "| variant | tokens | vs in flight | vs full | kept |"
              " early exits | not generated |", "|---|---|---|---|---|---|---|"]
    for name, v in s["early_exit"].items():
        if v is not None:
            lines.append(f"| {name} | {v['tokens']:,} | -{_pct(v['reduction_vs_msifr'])} | "
                         f"-{_pct(v['reduction_vs_full'])} | {v['kept']} | {v['early_exits']} |"
                         f" {v['not_generated']} |")
    if (j := s.get("step_judge")) is not None:
        r = j["replayed_judge"]
        lines += ["", "## Step judge", "",
                  "Its tokens are not in the token figures above (those count the solutions).",
                  "", "| | after the fact | in flight |", "|---|---|---|",
                  f"| judge calls | {j['calls_full']:,} | {j['calls_msifr']:,} |",
                  f"| judge prompt tokens | {j['prompt_tokens_full']:,} | "
                  f"{j['prompt_tokens_msifr']:,} |",
                  f"| judge completion tokens | {j['completion_tokens_full']:,} | "
                  f"{j['completion_tokens_msifr']:,} |", "",
                  f"Rejections it decided in flight: {j['rejected_by_judge']}. Replayed judge "
                  f"(where the judge endpoint is the replay): recall {r['recall']}, false alarm "
                  f"{r['false_alarm']} per judgement."]
    if (c := s.get("cost")) is not None:
        lines += ["", "## Cost", "", "Prices: " + "; ".join(
            f"{name}: {price or 'none known'}" for name, price in c["prices"].items()) + ".",
            "", "| mode | accepted | cost USD | per accepted | checks | net saving (est.) | "
            "calls not costed |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {_MODE_LABELS.get(name, name)} | {m['accepted']} | {m['total_usd'] or '-'} "
                  f"| {m['per_accepted_usd'] or '-'} | {m['checks_usd']} | "
                  f"{m['net_saving_estimate_usd']} | {m['unpriced_calls']} |"
                  for name, m in c["modes"].items()]
    lines += ["", *_group_table("By dataset", s["per_dataset"]),
              *_group_table("By generator", s["per_generator"]),
              "### By validator", "", "| validator | rejected | on clean | on wrong step | "
              "on correct answer | tokens saved | median share streamed |", "|---" * 7 + "|"]
    for name, v in s["per_validator"].items():
        lines.append(f"| {name} | {v['rejected']} | {v['on_clean']} | {v['on_wrong_step']} | "
                     f"{v['on_correct_answer']} | {v['tokens_saved']:,} | "
                     f"{_pct(v['median_fraction_at_fire'])} |")
    lines += ["", "## Charts", ""] + [f"![{t}]({f})" for f, t in charts.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "report.md", *(out / f for f in charts)]
