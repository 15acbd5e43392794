"""foldem.core.chat_stream: what the replay endpoint writes is what the client and the probe
read, in OpenAI's key order; reading ignores keys it does not use, whatever their values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from foldem.core.chat_stream import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    ChunkReading,
    StreamChunk,
    Usage,
    read_chunk,
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


# --- the endpoint client's reading: the fast path and the validated model agree --------------

_KEYS = ["id", "model", "choices", "index", "delta", "content", "role", "logprobs",
         "top_logprobs", "logprob", "token", "finish_reason", "usage", "prompt_tokens",
         "completion_tokens", "total_tokens", "prompt_tokens_details", "cached_tokens",
         "timings", "predicted_n", "prompt_n", "cache_n", "error", "message"]
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)),
    max_leaves=25)
_count = st.one_of(st.none(), st.integers(0, 10**6), st.sampled_from([1.0, "3", True, -1]))
_choice = st.fixed_dictionaries({}, optional={
    "index": st.one_of(st.integers(0, 3), st.none(), st.just("0")),
    "delta": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "role": _values, "content": st.one_of(st.none(), st.text(max_size=6), _values)})),
    "logprobs": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "content": st.one_of(st.none(), st.lists(_values, max_size=3))})),
    "finish_reason": st.one_of(st.none(), st.sampled_from(["stop", "length", ""]), _values)})
_plausible_chunk = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.none(), st.text(max_size=6), st.integers()),
    "model": _values, "object": _values,
    "choices": st.one_of(st.lists(_choice, max_size=3), st.none()),
    "usage": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "prompt_tokens": _count, "completion_tokens": _count, "total_tokens": _values,
        "prompt_tokens_details": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"cached_tokens": _count}))})),
    "timings": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "predicted_n": _count, "prompt_n": _count, "cache_n": _count})),
    "error": st.one_of(st.none(), st.fixed_dictionaries({"message": st.text(max_size=6)}))})


def _validated(data: bytes) -> ChunkReading | type[ValidationError]:
    try:
        return ChunkReading.of(StreamChunk.model_validate_json(data))
    except ValidationError:
        return ValidationError


def _fast(data: bytes) -> ChunkReading | type[ValidationError]:
    try:
        return read_chunk(data)
    except ValidationError:
        return ValidationError


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(_plausible_chunk, _values))
def test_the_fast_reading_is_the_validated_models_reading(value: Any) -> None:
    data = json.dumps(value).encode()
    assert _fast(data) == _validated(data)


@pytest.mark.parametrize("data", [
    b'{"id": "a", "id": "b", "choices": []}', b'{"choices": [{"index": 1e0}]}',
    b'{"choices": [{"delta": {"content": "\\ud800"}}]}', b'{"usage": {"completion_tokens": 1e400}}',
    b'[1]', b'{"error": {"message": "boom"}}', b'not json', b'{"choices": [] ',
    b'{"usage": {"completion_tokens": 123456789012345678901234567890}}'])
def test_odd_json_reads_as_the_validated_model_reads_it(data: bytes) -> None:
    assert _fast(data) == _validated(data)
