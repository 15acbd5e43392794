"""The OpenAI chat-completions stream chunk (one `data:` event of a `stream=true` response), one
schema for both ends of the wire: the endpoint client and the probe read it, the replay endpoint
writes it.

Reading (`StreamChunk`): keys nobody declared are ignored (servers add their own), every field
is optional, and a chunk is validated straight from the event's JSON text with
`StreamChunk.model_validate_json`, a few microseconds. The OpenAI SDK builds a full typed object
per chunk (~0.3-0.5 ms each, measured), which is slower than the tokens arrive once a process
holds dozens of streams, and a late reader aborts late.

The endpoint client reads one chunk per token, so it takes only what it uses (`ChunkReading`,
from `read_chunk`): the JSON parsed by orjson and the few fields checked by hand against the
same types (1.5 µs against 5.4 for the validated model, and no nested objects built). Anything
the fast path does not recognise exactly — an odd type, an error event, JSON orjson refuses — is
read by `StreamChunk.model_validate_json` as before, so a malformed chunk fails with the same
`ValidationError`, and the two paths give the same reading (tests/foldem/test_chat_stream.py).

The module stays whole past 300 lines: the reading models, the client's fast reading and the
writer are one schema, and side by side they cannot drift apart.

Writing (`ChatCompletionChunk`, `Usage`): derived from the reading models, requiring what OpenAI
always sends; choices and deltas are the same classes on both sides. A derived model keeps its
base's key order and could only add keys last, so the base declares every key the writer sends,
in OpenAI's order. Keys that no reader looks at are typed `Any` there (`Unread`): an odd value in
them must not fail a stream that is otherwise fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_serializer

#: A key declared for the writer's sake (its position in the rendered JSON) and not read.
Unread = Any


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChunkDelta(_Lenient):
    """What one chunk adds to the message; rendered with only the keys it carries."""

    role: Unread = None
    content: str | None = None

    @model_serializer
    def _omit_unset(self) -> dict[str, Any]:
        # OpenAI sends only the keys a delta carries; the last chunk's delta is {}.
        return {k: v for k, v in (("role", self.role), ("content", self.content)) if v is not None}


class ChunkLogprobs(_Lenient):
    """Per-token logprobs: `content` holds one entry per token of the chunk, each with its
    `logprob` and, when asked, its `top_logprobs` (the k most likely tokens at that position).
    Entries stay untyped (`Any`): a server's odd entry must not fail the stream."""

    content: list[Any] | None = None

    def confidences(self) -> tuple[float, ...]:
        """Each token's confidence: minus the mean of its top logprobs (the token's own logprob
        when no top list came). High: the model was sure (the runners-up far below its pick);
        low: it hesitated between the top tokens (log k when they share the mass evenly).
        Entries without a finite number are skipped."""
        return _confidences(self.content or [])


def _confidences(entries: list[Any]) -> tuple[float, ...]:
    out: list[float] = []
    for entry in entries:
        if (value := _confidence(entry)) is not None:
            out.append(value)
    return tuple(out)


def _confidence(entry: Any) -> float | None:
    if not isinstance(entry, dict):
        return None
    top = entry.get("top_logprobs")
    values = ([t.get("logprob") for t in top if isinstance(t, dict)]
              if isinstance(top, list) and top else [entry.get("logprob")])
    numbers = [float(v) for v in values
               if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    return -sum(numbers) / len(numbers) if numbers else None


class ChunkChoice(_Lenient):
    index: int = 0
    delta: ChunkDelta | None = None
    logprobs: ChunkLogprobs | None = None
    finish_reason: str | None = None


def _count_or_none(value: Any) -> int | None:
    """A token count, or None for anything else: an odd detail must not fail the stream."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class PromptTokensDetails(_Lenient):
    """`usage.prompt_tokens_details`: `cached_tokens` is how many of the prompt's tokens the
    server served from its prompt cache (OpenAI, vLLM and llama.cpp send it; hosted APIs bill
    them at a lower price)."""

    cached_tokens: Annotated[int | None, BeforeValidator(_count_or_none)] = None


class ChunkUsage(_Lenient):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: Unread = None
    prompt_tokens_details: PromptTokensDetails | None = None

    @property
    def cached_tokens(self) -> int | None:
        details = self.prompt_tokens_details
        return None if details is None else details.cached_tokens


class ChunkTimings(_Lenient):
    """llama.cpp's `timings` (per chunk when the request asks `timings_per_token`, else on the
    last chunk only): the server's own counts, in the model's tokenizer. `predicted_n` runs up
    as tokens are decoded; `prompt_n` + `cache_n` are the prompt's tokens (evaluated + reused
    from the slot's cache). Read only; nothing writes it."""

    predicted_n: int | None = None
    prompt_n: int | None = None
    cache_n: int | None = None


class StreamError(_Lenient):
    message: str = "error event in the stream"
    type: str | None = None
    code: str | int | None = None


class StreamChunk(_Lenient):
    id: str | None = None
    object: Unread = None
    created: Unread = None
    model: Unread = None
    choices: list[ChunkChoice] = []
    usage: ChunkUsage | None = None
    error: StreamError | None = None
    timings: ChunkTimings | None = None  # llama.cpp only


# ------------------------------------------------------------- what the endpoint client reads


@dataclass(slots=True)
class ChunkReading:
    """What the endpoint client takes from one chunk: the text its choices add, their
    confidences and last finish reason, the usage counts (`completion_tokens` None: the chunk
    reported no usage), llama.cpp's timings (`has_timings`), and the error event's message."""

    id: str | None
    model: str | None  # the served model's name; None when the chunk has no string there
    text: str
    confidences: tuple[float, ...]
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    has_timings: bool = False
    predicted_n: int | None = None
    prompt_n: int | None = None
    cache_n: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, chunk: StreamChunk) -> ChunkReading:
        """The reading of a validated chunk."""
        text = ""
        confidences: tuple[float, ...] = ()
        finish: str | None = None
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                text += choice.delta.content
            if choice.logprobs is not None and choice.logprobs.content:
                confidences += choice.logprobs.confidences()
            if choice.finish_reason:
                finish = choice.finish_reason
        usage, timings = chunk.usage, chunk.timings
        return cls(
            id=chunk.id, model=chunk.model if isinstance(chunk.model, str) else None,
            text=text, confidences=confidences, finish_reason=finish,
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
            cached_tokens=None if usage is None else usage.cached_tokens,
            has_timings=timings is not None,
            predicted_n=None if timings is None else timings.predicted_n,
            prompt_n=None if timings is None else timings.prompt_n,
            cache_n=None if timings is None else timings.cache_n,
            error=None if chunk.error is None else chunk.error.message)


def read_chunk(data: bytes) -> ChunkReading:
    """One `data:` event's JSON, read. Raises pydantic's ValidationError when it is no chunk."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raw = None
    reading = _read_plain(raw) if type(raw) is dict else None
    if reading is None:  # unusual or malformed: the validated model decides
        return ChunkReading.of(StreamChunk.model_validate_json(data))
    return reading


def _is_count(value: Any) -> bool:
    # The exact JSON types the model takes as they are; anything else (a float, a string of
    # digits) goes to the model, which coerces or refuses it.
    return value is None or type(value) is int


def _read_plain(raw: dict[str, Any]) -> ChunkReading | None:
    """The reading of a chunk whose fields all have exactly the types the model declares;
    None for anything else (the model then decides)."""
    if raw.get("error") is not None:
        return None
    chunk_id = raw.get("id")
    if chunk_id is not None and type(chunk_id) is not str:
        return None
    choices = raw.get("choices", [])
    if type(choices) is not list:
        return None
    text = ""
    confidences: tuple[float, ...] = ()
    finish: str | None = None
    for choice in choices:
        if type(choice) is not dict or type(choice.get("index", 0)) is not int:
            return None
        delta = choice.get("delta")
        if delta is not None:
            if type(delta) is not dict:
                return None
            content = delta.get("content")
            if content is not None:
                if type(content) is not str:
                    return None
                text += content
        logprobs = choice.get("logprobs")
        if logprobs is not None:
            if type(logprobs) is not dict:
                return None
            entries = logprobs.get("content")
            if entries is not None:
                if type(entries) is not list:
                    return None
                if entries:
                    confidences += _confidences(entries)
        reason = choice.get("finish_reason")
        if reason is not None:
            if type(reason) is not str:
                return None
            if reason:
                finish = reason
    prompt = completion = cached = None
    usage = raw.get("usage")
    if usage is not None:
        if type(usage) is not dict:
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not (_is_count(prompt) and _is_count(completion)):
            return None
        details = usage.get("prompt_tokens_details")
        if details is not None:
            if type(details) is not dict:
                return None
            cached = _count_or_none(details.get("cached_tokens"))
    model = raw.get("model")
    reading = ChunkReading(chunk_id, model if type(model) is str else None, text, confidences,
                           finish, prompt, completion, cached)
    timings = raw.get("timings")
    if timings is not None:
        if type(timings) is not dict:
            return None
        predicted, prompt_n, cache_n = (timings.get("predicted_n"), timings.get("prompt_n"),
                                        timings.get("cache_n"))
        if not (_is_count(predicted) and _is_count(prompt_n) and _is_count(cache_n)):
            return None
        reading.has_timings = True
        reading.predicted_n, reading.prompt_n, reading.cache_n = predicted, prompt_n, cache_n
    return reading


# ------------------------------------------------------------------------------- the writer


class Usage(ChunkUsage):
    """Token counts as a server reports them: all three, always, and the prompt's cached tokens
    (a server without a prompt cache, like the replay endpoint, served none from it: 0)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(
        default_factory=lambda: PromptTokensDetails(cached_tokens=0))

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens))


class ChatCompletionChunk(StreamChunk):
    """A chunk as a server sends it. `usage` renders as null when unset: exclude it where the
    client did not ask for usage. `error` is never rendered: a server that fails mid-stream
    sends an error event instead of a chunk."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    error: None = Field(None, exclude=True)
    timings: None = Field(None, exclude=True)  # the replay writes no llama.cpp timings
