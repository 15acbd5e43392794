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
from tasks.reports.rows import AnalyticsReport, FireRow
from tasks.reports.tables import report_tables

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110
# One meaning per colour in every chart: accepted green, rejected red/orange, failed grey;
# what is no outcome (latency, modes, figures of a whole run) in blues.
ACCEPTED = "#55A868"
REJECTED = "#C44E52"
FAILED = "#8C8C8C"
NEUTRAL = "#4C72B0"
NEUTRAL_LIGHT = "#A6BDDB"
#: Validators' shares of the rejections, told apart within the reds and oranges.
REJECTION_SHADES = ["#C44E52", "#DD8452", "#8C1C13", "#F2A65A", "#A0522D", "#E9967A",
                    "#B8562F", "#F4C095"]


def rejection_shade(i: int) -> str:
    return REJECTION_SHADES[i % len(REJECTION_SHADES)]


def short_scope(scope: str) -> str:
    """A report's scope for a chart title: `run ID (the latest; ...)` -> `run ID`."""
    return scope.split(" (")[0]


def endpoint_label(endpoint: str, model: str) -> str:
    """`replay · gpt3-6b`: the endpoint and the model it named (a wildcard model that named
    none: any recorded model)."""
    return f"{endpoint} · {'any model' if model == '*' else model}"


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
    bars = ax.barh(labels[::-1], [r.rejections for r in rows][::-1], color=REJECTED)
    ax.bar_label(bars, [f"{r.rejections:,}" + (f" ({r.pct_of_stage:.1f}% of samples)"
                                                if r.pct_of_stage is not None else "")
                        for r in rows][::-1], padding=3, fontsize=9)
    ax.set_xlabel("rejected samples")
    ax.margins(x=0.35)
    _style(ax, f"Rejections by validator — {short_scope(report.scope)}", grid="x")
    return fig


def _tokens(report: AnalyticsReport) -> Figure | None:
    stages: dict[str, list[int]] = {}  # stage -> [on accepted, rejected, failed, saved]
    for r in report.tokens:
        split = stages.setdefault(r.stage, [0, 0, 0, 0])
        lost = r.completion_tokens_failed + r.completion_tokens_superseded  # neither kept
        split[0] += r.completion_tokens - r.completion_tokens_rejected - lost
        split[1] += r.completion_tokens_rejected
        split[2] += lost
        split[3] += r.tokens_saved
    if not stages:
        return None
    names = list(stages)
    fig = _figure(8, 1.9 + 0.6 * len(names))
    ax = fig.add_subplot()
    left = [0] * len(names)
    widest = max(sum(parts) for parts in stages.values()) or 1
    cut = any(r.completion_tokens_superseded for r in report.tokens)
    parts = ("accepted samples", "rejected samples",
             "failed or superseded samples" if cut else "failed samples",
             "saved by cutting streams (est.)")
    for i, (part, color) in enumerate(zip(parts, [ACCEPTED, REJECTED, FAILED, "#FFFFFF"],
                                          strict=True)):
        values = [stages[n][i] for n in names]
        if i == 2 and not any(values):
            continue  # no failed samples: no legend entry for them
        bars = ax.barh(names, values, left=left, color=color, edgecolor=FAILED, label=part,
                       hatch="//" if i == 3 else None)
        # a number inside a segment only where it fits (over ~8% of the widest bar)
        ax.bar_label(bars, [f"{v:,}" if v > 0.08 * widest else "" for v in values],
                     label_type="center", fontsize=9, color="white" if i < 3 else "black")
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("completion tokens")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    _style(ax, f"Completion tokens by stage, and what aborting saved — "
               f"{short_scope(report.scope)}", grid="x")
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
        ax.bar(buckets, values, bottom=bottom, color=rejection_shade(i), label=validator)
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
    labels = [endpoint_label(r.endpoint, r.model).replace(" · ", "\n") for r in rows]
    fig = _figure(max(9.0, 1.6 * len(rows) + 3), 3.9)
    fig.suptitle(f"Endpoint latency by endpoint and model — {short_scope(report.scope)}",
                 fontsize=11, x=0.01, ha="left")
    width = 0.38
    for n, (name, p50, p95) in enumerate((
            ("time to first token (ms)", [r.p50_ttft_ms or 0 for r in rows],
             [r.p95_ttft_ms or 0 for r in rows]),
            ("call duration (ms)", [r.p50_duration_ms or 0 for r in rows],
             [r.p95_duration_ms or 0 for r in rows]))):
        ax = fig.add_subplot(1, 2, n + 1)
        xs = range(len(rows))
        for offset, values, label, color in ((-width / 2, p50, "p50", NEUTRAL_LIGHT),
                                             (width / 2, p95, "p95", NEUTRAL)):
            bars = ax.bar([x + offset for x in xs], values, width, label=label, color=color)
            ax.bar_label(bars, [f"{v:,.0f}" for v in values], fontsize=8, padding=2)
        # long model names (recorded generators) would run into each other: slant them
        slant = max(len(line) for label in labels for line in label.split("\n")) > 12
        ax.set_xticks(list(xs), labels, fontsize=8, rotation=25 if slant else 0,
                      ha="right" if slant else "center", rotation_mode="anchor")
        ax.margins(y=0.15)
        ax.legend(fontsize=8, frameon=False)
        _style(ax, name)
    return fig


def build_charts(report: AnalyticsReport) -> dict[str, Figure]:
    """The charts the report has data for, by table key (nothing drawn to disk)."""
    scope = short_scope(report.scope)
    figures = {
        "rejections": _rejections(report),
        "tokens": _tokens(report),
        "fire_points": _fire(report.fire_by_fraction, "Where rejections fire: fraction of the "
                             f"expected length — {scope}", "fraction of the expected length"),
        "fire_tokens": _fire(report.fire_by_tokens, "Where rejections fire: tokens into the "
                             f"stage — {scope}", "completion tokens generated before the "
                             "rejection"),
        "latency": _latency(report),
    }
    return {key: fig for key, fig in figures.items() if fig is not None}


def write_charts(report: AnalyticsReport, out_dir: Path) -> dict[str, Path]:
    """Draw the charts the report has data for into out_dir; returns table key -> PNG path."""
    written: dict[str, Path] = {}
    for key, fig in build_charts(report).items():
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
