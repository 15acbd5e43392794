"""foldem.core.chat_stream: what the replay endpoint writes is what the client and the probe
read, in OpenAI's key order; reading ignores keys it does not use, whatever their values."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from foldem.core.chat_stream import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    StreamChunk,
    Usage,
)


def test_a_written_chunk_has_openais_keys_in_openais_order() -> None:
    chunk = ChatCompletionChunk(id="c1", created=7, model="m", usage=Usage.of(3, 2),
                                choices=[ChunkChoice(delta=ChunkDelta(role="assistant",
                                                                      content=""))])
    data = json.loads(chunk.model_dump_json())
    assert list(data) == ["id", "object", "created", "model", "choices", "usage"]
    assert data["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": None, "finish_reason": None}]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    last = ChatCompletionChunk(id="c1", created=7, model="m",
                               choices=[ChunkChoice(delta=ChunkDelta(), finish_reason="stop")])
    assert json.loads(last.model_dump_json(exclude={"usage"}))["choices"][0]["delta"] == {}


def test_what_is_written_reads_back() -> None:
    written = ChatCompletionChunk(id="c1", created=7, model="m", usage=Usage.of(3, 2),
                                  choices=[ChunkChoice(delta=ChunkDelta(content="4 + 4"))])
    read = StreamChunk.model_validate_json(written.model_dump_json())
    assert read.id == "c1" and read.error is None
    assert read.choices[0].delta is not None and read.choices[0].delta.content == "4 + 4"
    assert read.usage is not None and read.usage.completion_tokens == 2


@pytest.mark.parametrize(("details", "cached"), [
    ({"cached_tokens": 12, "audio_tokens": 0}, 12),  # OpenAI
    ({"cached_tokens": 0}, 0),
    (None, None), ({}, None),  # a server that says nothing about its cache
    ({"cached_tokens": "some"}, None), ({"cached_tokens": -3}, None),  # odd: unknown, no error
    ({"cached_tokens": True}, None),
])
def test_cached_prompt_tokens_are_read_when_the_server_reports_them(
        details: object, cached: int | None) -> None:
    read = StreamChunk.model_validate_json(json.dumps({
        "id": "x", "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 5,
                                            "prompt_tokens_details": details}}))
    assert read.usage is not None and read.usage.cached_tokens == cached
    assert read.usage.prompt_tokens == 40


def test_reading_ignores_unknown_keys_and_odd_values_of_unused_ones() -> None:
    read = StreamChunk.model_validate_json(json.dumps({
        "id": "x", "object": 5, "created": 1.5, "model": ["odd"], "system_fingerprint": "fp",
        "choices": [{"delta": {"role": 3, "content": "a", "reasoning_content": "b"},
                     "logprobs": {"content": [{"token": "a", "logprob": -0.1}]}}],
        "usage": {"completion_tokens": 1, "total_tokens": "many"}}))
    choice = read.choices[0]
    assert choice.delta is not None and choice.delta.content == "a"
    assert choice.logprobs is not None and choice.logprobs.content
    assert read.usage is not None and read.usage.prompt_tokens is None


def test_the_writer_refuses_what_a_server_never_sends() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionChunk.model_validate({"id": "c1", "created": 7, "model": "m",
                                            "choices": [], "colour": "red"})
