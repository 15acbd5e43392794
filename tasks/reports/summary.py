"""Human-readable run summaries: markdown for the Prefect artifact, text for the terminal."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tasks.records.models import RunCost, RunSummary


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _replay_note(s: RunSummary) -> str:
    """Whose figure it is: the replay endpoint a flow run starts serves that flow run only, so
    with peers (or on a resume) it is not the run's ledger total."""
    return (f"the replay endpoint this flow run started sent it {s.server_tokens_sent or 0:,} "
            f"completion tokens (the run's ledger, all flow runs and sessions: "
            f"{s.completion_tokens:,})")


def money(usd: Decimal) -> str:
    """Dollars to the cent from $10, else to four significant digits (a demo run costs cents):
    $1,234.50, $0.0123, $0.0002255."""
    sign, usd = ("-" if usd < 0 else ""), abs(usd)
    if usd >= 10 or usd == 0:
        return f"{sign}${usd:,.2f}"
    text = f"{usd:,.{max(2, 3 - usd.adjusted())}f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{sign}${whole}.{cents.ljust(2, '0')}"


def cost_lines(c: RunCost) -> list[str]:
    """The run's cost in short sentences: total and per accepted sample, what the rejected
    samples cost and finishing them would have, what the checks cost, and the net saving."""
    unpriced = (f"{c.unpriced_calls:,} calls on {', '.join(c.unpriced_endpoints)} not costed: "
                f"no price known (give the endpoint `prices:`)") if c.unpriced_calls else ""
    if c.total_usd is None:
        return [f"unknown: {unpriced}" if unpriced else "none: no calls"]

    def usd(amount: Decimal | None) -> str:  # every figure is set once the total is
        return money(amount if amount is not None else Decimal(0))

    sources = " and ".join("genai-prices" if s == "genai_prices" else s.replace("_", " ")
                           for s in c.price_sources)
    per = ("" if c.per_accepted_usd is None
           else f", {usd(c.per_accepted_usd)} per accepted sample")
    checks = (f"model checks cost {usd(c.checks_usd)} (step judge {usd(c.step_judge_usd)}, "
              f"judge stages {usd(c.judge_stage_usd)})" if c.checks_usd
              else "no model checks (step judge, judge stage) to pay for")
    net = c.net_saving_estimate_usd or Decimal(0)
    lines = [f"{usd(c.total_usd)} at {sources} prices{per}",
             f"rejected samples: {usd(c.rejected_usd)} spent up to the cut, "
             f"~{usd(c.rejected_finish_estimate_usd)} more to finish them (est.)",
             f"other early stops saved ~{usd(c.early_stop_estimate_usd)} (est.); {checks}",
             f"net {'saving' if net >= 0 else 'LOSS'} ~{usd(abs(net))} (est. savings minus "
             f"the checks' cost)"]
    if unpriced:
        lines.append(unpriced)
    return lines


def summary_markdown(s: RunSummary, *, job_name: str) -> str:
    lines = [
        f"# {job_name}: {s.status}", "", f"foldem run `{s.run_id}`", "",
        "| samples | accepted | rejected | failed |", "|---:|---:|---:|---:|",
        f"| {s.samples} | {s.accepted} ({_share(s.accepted, s.samples)}) "
        f"| {s.rejected} ({_share(s.rejected, s.samples)}) | {s.failed} |", "",
        "| prompt tokens | completion tokens | tokens saved (est.) | calls | aborted calls |",
        "|---:|---:|---:|---:|---:|",
        f"| {s.prompt_tokens:,} | {s.completion_tokens:,} | {s.tokens_saved:,} | {s.calls} "
        f"| {s.aborted_calls} |", "",
    ]
    if s.superseded or s.agreement_cut_calls:
        lines += ["## Early exit by agreement", "",
                  "| superseded samples | streams cut | tokens saved (est.) |",
                  "|---:|---:|---:|",
                  f"| {s.superseded} | {s.agreement_cut_calls} "
                  f"| {s.agreement_tokens_saved:,} |", ""]
    if s.endpoints:
        lines += ["## Endpoints", "",
                  "| endpoint | calls | failed | prompt tokens | completion tokens "
                  "| mean TTFT ms | breaker trips |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {e.endpoint} | {e.calls} | {e.failed_calls} | {e.prompt_tokens:,} "
                  f"| {e.completion_tokens:,} | {_or_dash(e.mean_ttft_ms)} "
                  f"| {_or_dash(e.breaker_trips)} |" for e in s.endpoints]
        lines.append("")
    if s.stages:
        cut = any(st.superseded for st in s.stages)
        lines += ["## By stage", "", "| stage | reached | passed | rejected | failed |"
                  + (" superseded |" if cut else ""), "|---|---:|---:|---:|---:|"
                  + ("---:|" if cut else "")]
        lines += [f"| {st.stage} | {st.reached} | {st.passed} | {st.rejected} | {st.failed} |"
                  + (f" {st.superseded} |" if cut else "") for st in s.stages]
        lines.append("")
    first, *rest = cost_lines(s.cost)
    lines += ["## Cost", "", f"- Cost: {first}.", *(f"- {line[0].upper()}{line[1:]}."
                                                   for line in rest), ""]
    if s.rejections_by_validator:
        lines += ["## Rejections by validator", "", "| validator | rejected |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(s.rejections_by_validator.items(),
                                                     key=lambda kv: -kv[1])]
        lines.append("")
    notes = []  # a list: markdown would run single lines together into one paragraph
    if s.server_tokens_sent is not None:
        note = _replay_note(s)
        notes.append(note[0].upper() + note[1:] + ".")
    if s.near_duplicates_removed is not None:
        notes.append(f"Near-duplicates removed: {s.near_duplicates_removed}.")
    if s.quality_gate is not None:
        notes.append(f"Quality gate: {s.quality_gate.rstrip('.')}.")
    if s.exported_to is not None:
        notes.append(f"Accepted samples exported to `{s.exported_to}` (JSONL/Parquet, chat and "
                     "plain forms, manifest.json).")
    if s.audit_page is not None:
        url = Path(s.audit_page).absolute().as_uri()
        notes.append(f"Audit page (every sample, why each was rejected, where its stream was "
                     f"cut): [{url}]({url}) ([rejected samples only]({url}#status=rejected)); "
                     f"on disk at `{s.audit_page}`.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def summary_text(s: RunSummary) -> str:
    width = max((len(k) for k in [*s.rejections_by_validator,
                                  *(e.endpoint for e in s.endpoints)]), default=10)
    out = [
        f"run {s.run_id}: {s.status}",
        f"  samples    {s.samples:>8,}",
        f"  accepted   {s.accepted:>8,}  {_share(s.accepted, s.samples):>7}",
        f"  rejected   {s.rejected:>8,}  {_share(s.rejected, s.samples):>7}",
        f"  failed     {s.failed:>8,}  {_share(s.failed, s.samples):>7}",
        *([f"  superseded {s.superseded:>8,}  {_share(s.superseded, s.samples):>7}  "
           f"(not needed: k samples of the prompt agreed; {s.agreement_cut_calls:,} streams "
           f"cut, ~{s.agreement_tokens_saved:,} tokens saved)"]
          if s.superseded or s.agreement_cut_calls else []),
        f"  tokens     prompt {s.prompt_tokens:,}, completion {s.completion_tokens:,}, "
        f"saved ~{s.tokens_saved:,} (estimate from expected lengths)",
        f"  calls      {s.calls:,} ({s.aborted_calls:,} generations closed early)",
    ]
    first, *rest = cost_lines(s.cost)
    out += [f"  cost       {first}",
            *(f"             {line}" for line in rest)]
    if s.server_tokens_sent is not None:
        out.append(f"  {_replay_note(s)}")
    if s.near_duplicates_removed is not None:
        out.append(f"  near-duplicates removed: {s.near_duplicates_removed}")
    if s.quality_gate is not None:
        out.append(f"  quality gate: {s.quality_gate}")
    if s.exported_to is not None:
        out.append(f"  exported to {s.exported_to}/ (chat and plain forms, manifest.json)")
    if s.audit_page is not None:
        out.append(f"  audit page {s.audit_page}  ({Path(s.audit_page).absolute().as_uri()})")
    if len(s.endpoints) > 1 or any(e.breaker_trips for e in s.endpoints):
        out.append("  endpoints:")
        out += [f"    {e.endpoint:<{width}} {e.calls:>6,} calls, {e.failed_calls:,} failed, "
                f"{e.completion_tokens:,} completion tokens, mean TTFT "
                f"{_or_dash(e.mean_ttft_ms)} ms, breaker trips {_or_dash(e.breaker_trips)}"
                for e in s.endpoints]
    if s.rejections_by_validator:
        out.append("  rejections by validator:")
        out += [f"    {k:<{width}} {v:>6,}" for k, v in sorted(
            s.rejections_by_validator.items(), key=lambda kv: -kv[1])]
    return "\n".join(out)
