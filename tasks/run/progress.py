"""Live counters of a run in this process, read by the progress reporter."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.records.models import SampleResult


@dataclass(slots=True)
class ProgressBoard:
    total: int
    done_before: int = 0  # samples already final when this session started (resume)
    counts: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "rejected": 0,
                                                            "failed": 0})
    completion_tokens: int = 0
    tokens_saved: int = 0

    def record(self, result: SampleResult) -> None:
        self.counts[result.status] += 1
        for entry in result.ledger:
            self.completion_tokens += entry.completion_tokens
            self.tokens_saved += entry.tokens_saved

    @property
    def finished(self) -> int:
        return self.done_before + sum(self.counts.values())

    @property
    def fraction(self) -> float:
        return self.finished / self.total if self.total else 1.0

    def line(self) -> str:
        c = self.counts
        return (f"{self.finished}/{self.total} samples ({self.fraction:.0%}): "
                f"accepted {c['accepted']}, rejected {c['rejected']}, failed {c['failed']}; "
                f"{self.completion_tokens:,} completion tokens, ~{self.tokens_saved:,} saved")
