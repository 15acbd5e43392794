"""Human-readable run summaries: markdown for the Prefect artifact, text for the terminal."""

from __future__ import annotations

from tasks.models import RunSummary


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def summary_markdown(s: RunSummary, *, job_name: str) -> str:
    lines = [
        f"# foldem run `{s.run_id}` ({job_name}): {s.status}", "",
        "| samples | accepted | rejected | failed |", "|---:|---:|---:|---:|",
        f"| {s.samples} | {s.accepted} ({_share(s.accepted, s.samples)}) "
        f"| {s.rejected} ({_share(s.rejected, s.samples)}) | {s.failed} |", "",
        "| prompt tokens | completion tokens | tokens saved (est.) | calls | aborted calls |",
        "|---:|---:|---:|---:|---:|",
        f"| {s.prompt_tokens:,} | {s.completion_tokens:,} | {s.tokens_saved:,} | {s.calls} "
        f"| {s.aborted_calls} |", "",
    ]
    if s.rejections_by_validator:
        lines += ["## Rejections by validator", "", "| validator | rejected |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(s.rejections_by_validator.items(),
                                                     key=lambda kv: -kv[1])]
        lines.append("")
    if s.rejections_by_stage:
        lines += ["## Rejections by stage", "", "| stage | rejected |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(s.rejections_by_stage.items())]
        lines.append("")
    if s.server_tokens_sent is not None:
        lines.append(f"Replay endpoint sent {s.server_tokens_sent:,} completion tokens "
                     "this session.")
    if s.near_duplicates_removed is not None:
        lines.append(f"Near-duplicates removed: {s.near_duplicates_removed}.")
    if s.quality_gate is not None:
        lines.append(f"Quality gate: {s.quality_gate}")
    if s.exported_to is not None:
        lines.append(f"Accepted samples exported to `{s.exported_to}` (JSONL/Parquet, chat and "
                     "plain forms, manifest.json).")
    return "\n".join(lines)


def summary_text(s: RunSummary) -> str:
    width = max((len(k) for k in s.rejections_by_validator), default=10)
    out = [
        f"run {s.run_id}: {s.status}",
        f"  samples    {s.samples:>8,}",
        f"  accepted   {s.accepted:>8,}  {_share(s.accepted, s.samples):>7}",
        f"  rejected   {s.rejected:>8,}  {_share(s.rejected, s.samples):>7}",
        f"  failed     {s.failed:>8,}  {_share(s.failed, s.samples):>7}",
        f"  tokens     prompt {s.prompt_tokens:,}, completion {s.completion_tokens:,}, "
        f"saved ~{s.tokens_saved:,} (estimate from expected lengths)",
        f"  calls      {s.calls:,} ({s.aborted_calls:,} closed early)",
    ]
    if s.server_tokens_sent is not None:
        out.append(f"  replay endpoint sent {s.server_tokens_sent:,} completion tokens "
                   "this session")
    if s.near_duplicates_removed is not None:
        out.append(f"  near-duplicates removed: {s.near_duplicates_removed}")
    if s.quality_gate is not None:
        out.append(f"  quality gate: {s.quality_gate}")
    if s.exported_to is not None:
        out.append(f"  exported to {s.exported_to}/ (chat and plain forms, manifest.json)")
    if s.rejections_by_validator:
        out.append("  rejections by validator:")
        out += [f"    {k:<{width}} {v:>6,}" for k, v in sorted(
            s.rejections_by_validator.items(), key=lambda kv: -kv[1])]
    return "\n".join(out)
