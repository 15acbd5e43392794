"""Wire models of `foldem probe`: what one endpoint can do, and how its abort was measured.

`ProbeResult` is what the probe prints, writes with `--json` and stores in `endpoint_probes`.
Its stream's chunks are the shared chat-stream models (foldem/core/chat_stream.py): lenient, as
the probe must describe odd servers rather than reject them, and carrying logprobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

#: How a disconnect was checked: a server-side counter of our request (replay), server metrics,
#: llama.cpp's slot list, or the latency of a second request (indirect).
AbortMethod = Literal["replay_stats", "vllm_metrics", "llamacpp_slots", "llamacpp_metrics",
                      "timing"]
Verdict = Literal["honoured", "not_honoured", "inconclusive"]
ServerKind = Literal["replay", "vllm", "llama.cpp", "unknown"]


def honoured_of(verdict: Verdict) -> bool | None:
    """`abort_honoured` for a verdict: unknown (None) when the probe could not tell, so a
    probe that saw nothing is never read as one that saw the server keep generating."""
    return {"honoured": True, "not_honoured": False, "inconclusive": None}[verdict]


class StreamObservation(BaseModel):
    """What one streamed request showed."""

    status: int
    error: str | None = None
    event_stream: bool = False
    content_chunks: int = 0
    content_chunks_with_usage: int = 0
    final_usage: bool = False  # the last chunk before [DONE] carried usage
    logprobs_seen: bool = False
    done_marker: bool = False
    response_id: str | None = None
    seconds: float = 0.0


class ServerSnapshot(BaseModel):
    """One reading of the server's own view: requests it is generating for, and a cumulative
    count of generated tokens (server-wide, or of our request on the replay endpoint)."""

    busy: int | None = None
    generated: float | None = None
    finished: bool | None = None  # replay: our request ran to its natural end
    #: llama.cpp: tokens_predicted_total, counted when a request ends or is cancelled; with
    #: the live `generated` (decode steps) it gives the exact tokens after the hang-up.
    predicted: float | None = None


class AbortMeasurement(BaseModel):
    method: AbortMethod
    verdict: Verdict
    detail: str = Field(description="What was seen, in one or two sentences.")
    tokens_read_before_close: int = 0
    server_tokens_after_close: float | None = Field(
        None, description="Tokens the server generated after the hang-up (counter methods; "
        "llama.cpp: the tokens it predicted for the request beyond those the probe read).")
    server_tokens_predicted: float | None = Field(
        None, description="llama.cpp: all tokens the server predicted for the abandoned "
        "request (tokens_predicted_total), read and unread.")
    busy_before: int | None = None
    busy_during: int | None = None
    busy_after: int | None = None
    settle_seconds: float = 0.0
    tokens_per_second: float | None = Field(None, description="Rate of the long request while "
                                            "the probe read it.")
    baseline_seconds: float | None = Field(None, description="timing: a short request alone.")
    after_close_seconds: float | None = Field(None, description="timing: the same request "
                                              "right after the hang-up.")
    attempts: int = Field(1, ge=1, description="Long requests sent: when a reply ended before "
                          "the probe could hang up, it retried with a longer one.")
    max_tokens: int | None = Field(None, description="max_tokens of the last long request.")


class ProbeResult(BaseModel):
    """The capability table of one endpoint."""

    base_url: str
    model: str
    probed_at: datetime
    server: ServerKind = "unknown"
    streaming: bool
    usage: bool = Field(description="Usage in the last chunk when include_usage is set.")
    continuous_usage: bool = Field(description="Usage on every chunk (vLLM/SGLang "
                                   "continuous_usage_stats).")
    logprobs: bool
    abort_honoured: bool | None = Field(description="A disconnect was measured to stop "
                                        "generation (true) or not to (false); null when the "
                                        "measurement was inconclusive.")
    abort_method: AbortMethod
    abort: AbortMeasurement
    tokens_per_second: float | None = Field(None, description="Stream rate seen by the probe.")
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unknown_when_inconclusive(self) -> ProbeResult:
        # Results stored before abort_honoured could be null say false for "could not tell".
        if self.abort.verdict == "inconclusive":
            self.abort_honoured = None
        return self

    def table_rows(self) -> list[tuple[str, str, str]]:
        """(capability, yes/no/unknown, remark) rows for the printed table."""

        def yn(flag: bool | None) -> str:
            return "unknown" if flag is None else "yes" if flag else "no"

        abort_remark = f"{self.abort.verdict} via {self.abort_method}: {self.abort.detail}"
        return [
            ("streaming", yn(self.streaming), "content arrives in several chunks"),
            ("usage", yn(self.usage), "usage in the last chunk (include_usage)"),
            ("continuous_usage", yn(self.continuous_usage), "usage on every chunk"),
            ("logprobs", yn(self.logprobs), "logprobs=true returns token logprobs"),
            ("abort_honoured", yn(self.abort_honoured), abort_remark),
        ]
