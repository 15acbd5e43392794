"""The figures of `foldem bench client` as ratios to the minimal reader, and as report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(summary: dict[str, Any]) -> dict[str, Any]:
    """Per concurrency, each consumer against the minimal reader: tokens per CPU-second (what
    one core sustains) and wall tokens per second; the peers against the reader at their
    concurrency, or the nearest measured."""
    out: dict[str, Any] = {}
    for c, by in summary["throughput"].items():
        base = by["minimal"]
        out[c] = {name: {"per_cpu_second": _ratio(f["tokens_per_cpu_second"],
                                                  base["tokens_per_cpu_second"]),
                         "per_wall_second": _ratio(f["tokens_per_second"],
                                                   base["tokens_per_second"])}
                  for name, f in by.items() if name != "minimal"}
    for peer, f in (summary.get("peers") or {}).items():
        if "skipped" in f or not summary["throughput"]:
            continue
        nearest = min(summary["throughput"], key=lambda c: abs(int(c) - f["concurrency"]))
        base = summary["throughput"][nearest]["minimal"]
        out.setdefault("peers", {})[peer] = {
            "against_concurrency": int(nearest),
            "per_cpu_second": _ratio(f["tokens_per_cpu_second"], base["tokens_per_cpu_second"]),
            "per_wall_second": _ratio(f["tokens_per_second"], base["tokens_per_second"])}
    return out


def _row(name: str, f: dict[str, Any], ratio: dict[str, Any] | None) -> str:
    r = ratio or {}
    exact = f.get("ledger_equals_server")
    ledger = "–" if exact is None else "exact" if exact else "**off**"
    return (f"| {name} | {f['tokens']:,} | {f['wall_seconds']:.1f} | {f['tokens_per_second']:,} "
            f"| {f['cpu_seconds']:.1f} | {f['cpu_seconds_per_mtok']:.1f} "
            f"| {f['tokens_per_cpu_second']:,} | {r.get('per_cpu_second') or '–'} | {ledger} |")


_HEAD = ("| consumer | tokens | wall s | tokens/s | CPU s | CPU s / Mtok | tokens / CPU s "
         "| × minimal (per CPU s) | ledger |\n|---|---|---|---|---|---|---|---|---|")


def write_report(summary: dict[str, Any], path: Path) -> None:
    m = summary["machine"]
    lines = ["# foldem bench client", "",
             f"Traces: {', '.join(summary['traces'])} ({summary['streams_planned']} streams); "
             f"event loop: {summary['loop']}; load average before "
             f"{m['before']['load_average']}, after {m['after']['load_average']}; "
             f"{m['before']['cores']} cores.", ""]
    for c, by in summary["throughput"].items():
        lines += [f"## {c} concurrent streams, unpaced source", "", _HEAD]
        lines += [_row(name, f, summary["ratios"][c].get(name)) for name, f in by.items()]
        lines.append("")
    peers = summary.get("peers") or {}
    if peers:
        lines += ["## Peers (same source and prompts; they request whole completions, "
                  "not streams)", "", _HEAD]
        for peer, f in peers.items():
            if "skipped" in f:
                lines.append(f"| {peer} | skipped: {f['skipped']} |||||||| ")
            else:
                lines.append(_row(f"{peer} ({f['concurrency']} concurrent)", f,
                                  summary["ratios"].get("peers", {}).get(peer)))
        lines.append("")
    if summary["scale"]:
        lines += ["## foldem in N worker processes (streams split between them)", "", _HEAD]
        lines += [_row(f"{n} worker(s), {f['concurrency']} streams", f, None)
                  for n, f in summary["scale"].items()]
        lines.append("")
    a = summary["abort"]
    lat = a["abort_latency"]
    lines += [f"## Abort latency: {a['streams']} streams × {a['tokens_per_second_per_stream']:g} "
              f"tokens/s, {a['workers']} worker process(es)", "", _HEAD,
              _row("foldem, paced", a, None), "",
              f"Aborted streams: {lat.get('aborted', 0)}; tokens written after the checkpoint "
              f"that fired: p50 {lat.get('p50', '–')}, p99 {lat.get('p99', '–')}, "
              f"max {lat.get('max', '–')}.", "",
              f"Ledger equals the source's count in every foldem run: "
              f"{summary['ledger_equals_server']}.", ""]
    path.write_text("\n".join(lines))
