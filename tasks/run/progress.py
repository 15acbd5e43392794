"""Live counters of a run, read by the progress reporter.

A run may be shared by several flow runs (peers on other workers). Each flow run counts its own
samples here; the run's count comes from Postgres (`run_finished`), so every peer's progress is
the run's, reaches 100% when the run completes, and says which part is its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.records.models import SampleResult, SampleStatus


@dataclass(slots=True)
class ProgressBoard:
    total: int
    done_before: int = 0  # samples already final when this flow run started (resume, peers)
    run_finished: int | None = None  # the run's final samples, all flow runs, as last read
    counts: dict[str, int] = field(default_factory=lambda: {str(s): 0 for s in SampleStatus})
    completion_tokens: int = 0
    tokens_saved: int = 0

    def record(self, result: SampleResult) -> None:
        self.counts[result.status] += 1
        for entry in result.ledger:
            self.completion_tokens += entry.completion_tokens
            self.tokens_saved += entry.tokens_saved

    @property
    def own(self) -> int:
        """Samples this flow run brought to a final state."""
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        """The run's final samples: as read from Postgres, or, before the first read (and
        between batch writes), what this flow run knows of."""
        return max(self.run_finished or 0, self.done_before + self.own)

    @property
    def fraction(self) -> float:
        return min(self.finished / self.total, 1.0) if self.total else 1.0

    def line(self) -> str:
        c = self.counts
        return (f"{self.finished}/{self.total} samples of the run ({self.fraction:.0%}); "
                f"this flow run: {self.own} (accepted {c['accepted']}, rejected "
                f"{c['rejected']}, failed {c['failed']}"
                + (f", superseded {c['superseded']}" if c["superseded"] else "")
                + f"), {self.completion_tokens:,} completion "
                f"tokens, ~{self.tokens_saved:,} saved")
