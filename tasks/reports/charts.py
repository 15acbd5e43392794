"""What `foldem report --out DIR` writes: PNG charts (matplotlib's Agg renderer) and report.md.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas (no pyplot): no global figure
state, no backend switch and no GUI, so charts can be drawn from any thread, a headless worker
or a notebook without disturbing its own plotting. matplotlib is imported
only here, and only when charts are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from foldem.core.errors import ConfigError
from tasks.reports.analytics import report_tables
from tasks.reports.rows import AnalyticsReport, FireRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
           "#8C8C8C", "#CCB974", "#64B5CD"]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg for this figure only: no global backend switch, no GUI
    return figure


def _style(ax: Axes, title: str, grid: Literal["x", "y"] = "y") -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, alpha=0.3)
    ax.set_axisbelow(True)


def _rejections(report: AnalyticsReport) -> Figure | None:
    rows = report.validators
    if not rows:
        return None
    several_stages = len({r.stage for r in rows}) > 1
    labels = [f"{r.stage}: {r.validator}" if several_stages else r.validator for r in rows]
    fig = _figure(8, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    bars = ax.barh(labels[::-1], [r.rejections for r in rows][::-1], color=PALETTE[0])
    ax.bar_label(bars, [f"{r.rejections:,}" + (f" ({r.pct_of_stage:.1f}% of samples)"
                                                if r.pct_of_stage is not None else "")
                        for r in rows][::-1], padding=3, fontsize=9)
    ax.set_xlabel("rejected samples")
    ax.margins(x=0.35)
    _style(ax, f"Rejections by validator — {report.scope.split(' (')[0]}", grid="x")
    return fig


def _tokens(report: AnalyticsReport) -> Figure | None:
    stages: dict[str, list[int]] = {}  # stage -> [on kept samples, on rejected, saved]
    for r in report.tokens:
        kept_rejected_saved = stages.setdefault(r.stage, [0, 0, 0])
        kept_rejected_saved[0] += r.completion_tokens - r.completion_tokens_rejected
        kept_rejected_saved[1] += r.completion_tokens_rejected
        kept_rejected_saved[2] += r.tokens_saved
    if not stages:
        return None
    names = list(stages)
    fig = _figure(8, 1.9 + 0.6 * len(names))
    ax = fig.add_subplot()
    left = [0] * len(names)
    widest = max(sum(parts) for parts in stages.values()) or 1
    parts = ("completion tokens, accepted/failed samples", "completion tokens, rejected samples",
             "saved by cutting streams (est.)")
    for i, (part, color) in enumerate(zip(parts, [PALETTE[2], PALETTE[3], "#FFFFFF"],
                                          strict=True)):
        values = [stages[n][i] for n in names]
        bars = ax.barh(names, values, left=left, color=color, edgecolor=PALETTE[7], label=part,
                       hatch="//" if i == 2 else None)
        # a number inside a segment only where it fits (over ~8% of the widest bar)
        ax.bar_label(bars, [f"{v:,}" if v > 0.08 * widest else "" for v in values],
                     label_type="center", fontsize=9, color="white" if i < 2 else "black")
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("tokens")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    _style(ax, "Completion tokens by stage: where they went, and what aborting saved", grid="x")
    return fig


def _fire(rows: Sequence[FireRow], title: str, xlabel: str) -> Figure | None:
    if not rows:
        return None
    buckets = list(dict.fromkeys(r.bucket for r in rows))  # query order: ascending buckets
    validators = sorted({r.validator for r in rows})
    fig = _figure(8, 4)
    ax = fig.add_subplot()
    bottom = [0] * len(buckets)
    for i, validator in enumerate(validators):
        counts = {r.bucket: 0 for r in rows}
        for r in rows:
            if r.validator == validator:
                counts[r.bucket] += r.rejections
        values = [counts[b] for b in buckets]
        ax.bar(buckets, values, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=validator)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    in_flight = {b: sum(r.in_flight for r in rows if r.bucket == b) for b in buckets}
    for x, (bucket, total) in enumerate(zip(buckets, bottom, strict=True)):
        cut = f"\n{in_flight[bucket]} cut" if in_flight[bucket] else ""
        ax.annotate(f"{total}{cut}", (x, total), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rejections")
    ax.set_ylim(0, max(bottom) * 1.25 + 1)  # room for the labels above the bars
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend(fontsize=8, frameon=False)
    _style(ax, title)
    return fig


def _latency(report: AnalyticsReport) -> Figure | None:
    rows = report.latency
    if not rows:
        return None
    labels = [f"{r.endpoint}\n{r.model}" for r in rows]
    fig = _figure(9, 3.6)
    width = 0.38
    for n, (name, p50, p95) in enumerate((
            ("time to first token (ms)", [r.p50_ttft_ms or 0 for r in rows],
             [r.p95_ttft_ms or 0 for r in rows]),
            ("call duration (ms)", [r.p50_duration_ms or 0 for r in rows],
             [r.p95_duration_ms or 0 for r in rows]))):
        ax = fig.add_subplot(1, 2, n + 1)
        xs = range(len(rows))
        for offset, values, label, color in ((-width / 2, p50, "p50", PALETTE[0]),
                                             (width / 2, p95, "p95", PALETTE[1])):
            bars = ax.bar([x + offset for x in xs], values, width, label=label, color=color)
            ax.bar_label(bars, [f"{v:,.0f}" for v in values], fontsize=8, padding=2)
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.margins(y=0.15)
        ax.legend(fontsize=8, frameon=False)
        _style(ax, name)
    return fig


def write_charts(report: AnalyticsReport, out_dir: Path) -> dict[str, Path]:
    """Draw the charts the report has data for into out_dir; returns table key -> PNG path."""
    figures = {
        "rejections": _rejections(report),
        "tokens": _tokens(report),
        "fire_points": _fire(report.fire_by_fraction, "Where rejections fire: fraction of the "
                             "stage's expected length", "fraction of the expected length"),
        "fire_tokens": _fire(report.fire_by_tokens, "Where rejections fire: completion tokens "
                             "into the stage", "completion tokens generated before the rejection"),
        "latency": _latency(report),
    }
    written: dict[str, Path] = {}
    for key, fig in figures.items():
        if fig is None:
            continue
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=DPI)
        written[key] = path
    return written


def render_markdown(report: AnalyticsReport, charts: dict[str, str] | None = None) -> str:
    """The report as markdown; `charts` maps a table key to an image path relative to the file."""
    if report.empty_reason:
        return f"# foldem report\n\n{report.empty_reason}\n"
    charts = charts or {}
    out = ["# foldem report", "", f"Scope: {report.scope}."]
    for table in report_tables(report):
        out += ["", f"## {table.title}", ""]
        if not table.rows:
            out.append("(none)")
            continue
        esc = [[c.replace("|", "\\|") for c in row] for row in [table.headers, *table.rows]]
        out.append("| " + " | ".join(esc[0]) + " |")
        out.append("|" + "|".join("---:" if n else "---" for n in table.numeric) + "|")
        out += ["| " + " | ".join(row) + " |" for row in esc[1:]]
        if table.note:
            out += ["", f"_{table.note}_"]
        if table.key in charts:
            out += ["", f"![{table.title}]({charts[table.key]})"]
    return "\n".join(out) + "\n"


def write_report(report: AnalyticsReport, out_dir: Path) -> list[Path]:
    """Write the PNG charts and report.md into out_dir (created); returns the files written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("`foldem report --out` draws its charts with matplotlib, which is not "
                          "installed here: pip install matplotlib") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, out_dir)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(report, {k: p.name for k, p in charts.items()}),
                        encoding="utf-8")
    return [*charts.values(), markdown]
