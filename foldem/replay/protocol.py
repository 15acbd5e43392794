"""Wire models of the replay endpoint: the OpenAI chat-completions subset it speaks, and /stats.

Requests ignore fields they do not use (temperature, top_p, ...) so any OpenAI client works.
The stream's chunks are the models the endpoint client reads (foldem/core/chat_stream.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from foldem.core.chat_stream import ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage

FinishReason = Literal["stop", "length"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        """The message's text; content parts that are not text are skipped."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False
    # vLLM/SGLang extension: cumulative usage on every chunk (only with include_usage).
    continuous_usage_stats: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is replayed.")

    @property
    def token_limit(self) -> int | None:
        """The stricter of max_tokens and max_completion_tokens, if any is set."""
        limits = [x for x in (self.max_tokens, self.max_completion_tokens) if x is not None]
        return min(limits) if limits else None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class CompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "foldem-replay"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    traces: int
    problems: int


class RequestStats(BaseModel):
    """What one request cost: tokens actually sent (or generated past a disconnect when the
    server ignores disconnects), and how it ended. finish_reason is null if it was cut off."""

    request_id: str
    model: str
    trace_id: str
    generator: str
    completion_tokens: int = 0
    prompt_tokens: int
    finish_reason: FinishReason | None = None
    disconnected: bool = False
    started_at: datetime
    ended_at: datetime | None = None
    #: An injected fault that struck this request (see foldem/replay/faults.py), and how many
    #: completion tokens had been sent when it did.
    fault: str | None = None
    fault_after_tokens: int | None = None


class ReplayStats(BaseModel):
    total_completion_tokens: int
    requests: list[RequestStats]
    faults: dict[str, int] = Field(default_factory=dict, description="Faults struck, by kind.")


class ContentChunkEncoder:
    """Renders the content chunks of one stream as SSE events, fast.

    The JSON around the content is rendered once from the ChatCompletionChunk model (so it
    cannot drift from it) with a marker as content; per chunk only the text is JSON-encoded.
    """

    _MARK = "\ue000foldem-content\ue000"  # private-use characters: the marker is unambiguous

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool) -> None:
        probe = ChatCompletionChunk(id=request_id, created=created, model=model,
                                    choices=[ChunkChoice(delta=ChunkDelta(content=self._MARK))])
        rendered = probe.model_dump_json(exclude=None if include_usage else {"usage"})
        # rpartition: the content comes after id and model, which a client may choose freely.
        before, mark, after = rendered.rpartition(json.dumps(self._MARK, ensure_ascii=False))
        if not mark:  # pragma: no cover - a pydantic change in string escaping
            raise RuntimeError("cannot find the content marker in a rendered chunk")
        self._prefix = b"data: " + before.encode()
        self._suffix = after.encode() + b"\n\n"

    def encode(self, text: str) -> bytes:
        return self._prefix + json.dumps(text, ensure_ascii=False).encode() + self._suffix
