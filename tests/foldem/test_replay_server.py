"""The replay endpoint over HTTP, driven by the real OpenAI SDK; plus trace loading/matching."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from foldem.core.errors import InputFormatError
from foldem.core.tokens import count_tokens
from foldem.core.traces import Trace, load_traces, tokenize_chunks
from foldem.replay.launcher import ReplayServer, start_replay_server
from foldem.replay.protocol import RequestStats
from foldem.replay.traces import SubstringIndex, TraceLibrary
from tests.support import tracedata
from tests.support.replay import replay_fixture

# Made-up traces. COWS has three generators; one step mixes in characters that o200k splits
# into several byte tokens, so some chunks must carry more than one token.
COWS = "A farmer has 12 cows and buys 5 more at the market. How many cows does he have now?"
TRAIN = ("A train leaves at 9:00 and travels 60 miles per hour for 3 hours, then 40 miles per "
         "hour for 2 hours. How far does it travel in total?")
TRAIN_STEPS = ["In the first part it travels 60 * 3 = <<60*3=180>>180 miles.",
               "In the second part it travels 40 * 2 = <<40*2=80>>80 miles.",
               "Altogether that is 180 + 80 = <<180+80=260>>260 miles, which is the distance.",
               "A: 260"]


def _trace(tid: str, generator: str, problem: str, steps: list[str], sep: str = "\n") -> str:
    return json.dumps({"id": tid, "dataset": "made-up", "generator": generator,
                       "problem": problem, "reference_answer": None, "steps": steps,
                       "separator": sep, "final_answer_correct": True, "first_error_step": None},
                      ensure_ascii=False)


MADE_UP = [
    _trace("cows-a", "gen-a", COWS, ["He had 12 cows and buys 5: 12 + 5 = 17.", "A: 17"]),
    _trace("cows-b", "gen-b", COWS, ["The farmer’s herd: 𝔘𝔫𝔦 12 + 5 = 17 ✓ 日本", "A: 17"], "\n\n"),
    _trace("cows-c", "gen-c", COWS, ["12 + 5 = 18", "A: 18"]),
    _trace("train-a", "gen-a", TRAIN, TRAIN_STEPS),
]
TEXTS = {"cows-a": "He had 12 cows and buys 5: 12 + 5 = 17.\nA: 17",
         "cows-b": "The farmer’s herd: 𝔘𝔫𝔦 12 + 5 = 17 ✓ 日本\n\nA: 17",
         "cows-c": "12 + 5 = 18\nA: 18", "train-a": "\n".join(TRAIN_STEPS)}


def write_made_up(directory: Path) -> Path:
    path = directory / "made_up.jsonl"
    path.write_text("\n".join(MADE_UP) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_made_up(tmp_path_factory.mktemp("traces"))


server = replay_fixture(write_made_up)
# Slow enough (50 ms a token) that a client on a busy machine reads each chunk in time.
paced = replay_fixture(write_made_up, tokens_per_second=20)
paced_ignoring = replay_fixture(write_made_up, tokens_per_second=100, ignore_disconnect=True)
shared_server = replay_fixture(list(tracedata.TRACE_FILES))


def client(srv: ReplayServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)


def ask(problem: str) -> list[Any]:
    return [{"role": "system", "content": "Solve step by step."},
            {"role": "user", "content": f"Problem: {problem}\nEnd your answer with 'A: <n>'."}]


async def collect(srv: ReplayServer, **kwargs: Any) -> list[ChatCompletionChunk]:
    stream = await client(srv).chat.completions.create(stream=True, **kwargs)
    async with stream:
        return [chunk async for chunk in stream]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def record(srv: ReplayServer, request_id: str) -> RequestStats:
    return next(r for r in srv.stats().requests if r.request_id == request_id)


# --- streaming over HTTP -----------------------------------------------------------------------

@pytest.mark.parametrize("trace_id", ["gsm8k-gpt3-0-175b_finetuning", "processbench-math-0"])
async def test_streams_a_real_trace_exactly(shared_server: ReplayServer, trace_id: str) -> None:
    real = tracedata.trace(trace_id)
    chunks = await collect(shared_server, model=real["generator"], messages=ask(real["problem"]))
    assert text_of(chunks) == tracedata.full_text(trace_id)
    assert record(shared_server, chunks[0].id).trace_id == trace_id


async def test_multi_byte_characters_travel_whole(server: ReplayServer) -> None:
    chunks = await collect(server, model="gen-b", messages=ask(COWS),
                           stream_options={"include_usage": True})
    content = [c.choices[0].delta.content for c in chunks
               if c.choices and c.choices[0].delta.content]
    assert "".join(content) == TEXTS["cows-b"]
    assert "𝔘" in content  # one chunk carries the three tokens of one character
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(TEXTS["cows-b"]) > len(content)


async def test_chunk_format(server: ReplayServer) -> None:
    chunks = await collect(server, model="gen-a", messages=ask(COWS))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "gen-a" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)


async def test_raw_sse_ends_with_done_and_carries_the_request_id(server: ReplayServer) -> None:
    body = {"model": "gen-a", "messages": ask(COWS), "stream": True}
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.post(f"{server.base_url}/chat/completions", json=body)
    events = [e for e in resp.text.split("\n\n") if e]
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert resp.headers["x-request-id"] == first["id"]
    assert "usage" not in first


@pytest.mark.parametrize("mode", ["include_usage", "continuous"])
async def test_usage_in_stream(server: ReplayServer, mode: str) -> None:
    options = {"include_usage": True, "continuous_usage_stats": mode == "continuous"}
    messages = ask(TRAIN)
    chunks = await collect(server, model="gen-a", messages=messages, stream_options=options)
    prompt = sum(count_tokens(m["content"]) for m in messages)
    total = count_tokens(TEXTS["train-a"])
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (prompt, total)
    assert final.usage.total_tokens == prompt + total
    if mode == "include_usage":
        assert all(c.usage is None for c in chunks[:-1])
        return
    seen = [c.usage.completion_tokens for c in chunks if c.usage is not None]
    assert len(seen) == len(chunks) and seen[0] == 0 and seen == sorted(seen)
    received = 0
    for chunk in chunks[1:-2]:  # content chunks: usage counts up to and including this chunk
        received += count_tokens(chunk.choices[0].delta.content or "")
        assert chunk.usage is not None and chunk.usage.completion_tokens == received


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_finishes_with_length(server: ReplayServer, limit_field: str) -> None:
    chunks = await collect(server, model="gen-a", messages=ask(TRAIN),
                           stream_options={"include_usage": True}, **{limit_field: 7})
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert TEXTS["train-a"].startswith(text_of(chunks))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert record(server, chunks[0].id).finish_reason == "length"


async def test_non_streaming(server: ReplayServer) -> None:
    full = await client(server).chat.completions.create(model="gen-a", messages=ask(TRAIN))
    assert full.choices[0].message.content == TEXTS["train-a"]
    assert full.choices[0].finish_reason == "stop"
    assert full.usage is not None and full.usage.completion_tokens == count_tokens(TEXTS["train-a"])
    cut = await client(server).chat.completions.create(model="gen-a", messages=ask(TRAIN),
                                                       max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage is not None
    assert cut.usage.completion_tokens == 5
    assert TEXTS["train-a"].startswith(cut.choices[0].message.content or "-")


async def test_content_parts_and_prompt_tokens(server: ReplayServer) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "Please solve: "},
                                             {"type": "text", "text": TRAIN}]}]
    full = await client(server).chat.completions.create(model="*", messages=messages)
    assert full.usage is not None
    assert full.usage.prompt_tokens == count_tokens("Please solve: " + TRAIN)


# --- choosing the trace ----------------------------------------------------------------------

async def test_model_picks_the_generator(server: ReplayServer) -> None:
    for generator, trace_id in [("gen-a", "cows-a"), ("gen-c", "cows-c")]:
        chunks = await collect(server, model=generator, messages=ask(COWS))
        assert text_of(chunks) == TEXTS[trace_id]


async def test_seed_selects_deterministically(server: ReplayServer) -> None:
    async def trace_for(seed: int, model: str = "*") -> str:
        chunks = await collect(server, model=model, messages=ask(COWS), seed=seed)
        return record(server, chunks[0].id).trace_id

    picks = [await trace_for(seed) for seed in range(6)]
    assert picks == ["cows-a", "cows-b", "cows-c"] * 2  # candidates[seed % 3], file order
    assert await trace_for(1, model="no-such-model") == "cows-b"  # unknown model: any generator


async def test_unseeded_requests_rotate(server: ReplayServer) -> None:
    ids = []
    for _ in range(3):
        chunks = await collect(server, model="*", messages=ask(COWS))
        ids.append(record(server, chunks[0].id).trace_id)
    assert sorted(ids) == ["cows-a", "cows-b", "cows-c"]


async def test_seed_over_real_traces_gives_different_generators(
        shared_server: ReplayServer) -> None:
    problem = tracedata.trace("gsm8k-gpt3-1-6b_finetuning")["problem"]
    generators = set()
    for seed in range(4):
        chunks = await collect(shared_server, model="*", messages=ask(problem), seed=seed)
        generators.add(record(shared_server, chunks[0].id).generator)
    assert len(generators) == 4


# --- errors ----------------------------------------------------------------------------------

async def test_unknown_problem_is_rejected_at_once(server: ReplayServer) -> None:
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as info:
        await client(server).chat.completions.create(
            model="*", messages=ask("What is the airspeed of an unladen swallow?"), stream=True)
    assert time.monotonic() - started < 5  # generous: it must not hang
    assert info.value.code == "unknown_problem" and info.value.param == "messages"
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"model": "*"}', "messages"),
        (b'{"model": "*", "messages": []}', "messages"),
        (b'{"model": "*", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n"),
        (b'{"model": "*", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
         "max_tokens"),
        (b'{"model": "*", "messages": [{"role": "system", "content": "x"}]}', "messages"),
    ],
)
async def test_malformed_requests_get_openai_errors(server: ReplayServer, body: bytes,
                                                    param: str | None) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.post(f"{server.base_url}/chat/completions", content=body,
                               headers={"content-type": "application/json"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.integration  # starts a server of its own
async def test_models_health_and_stats_reset(trace_file: Path) -> None:
    with start_replay_server([trace_file]) as srv:
        models = await client(srv).models.list()
        assert [m.id for m in models.data] == ["gen-a", "gen-b", "gen-c", "*"]
        async with httpx.AsyncClient(trust_env=False) as http:
            health = (await http.get(f"{srv.root_url}/health")).json()
        assert health == {"status": "ok", "traces": 4, "problems": 2}
        await collect(srv, model="gen-a", messages=ask(COWS))
        stats = srv.stats()
        assert stats.total_completion_tokens == count_tokens(TEXTS["cows-a"])
        assert len(stats.requests) == 1 and stats.requests[0].ended_at is not None
        srv.reset_stats()
        assert srv.stats().total_completion_tokens == 0 and srv.stats().requests == []


# --- pacing and disconnects ------------------------------------------------------------------

async def test_pace_is_a_lower_bound(paced: ReplayServer) -> None:
    started = time.monotonic()
    chunks = await collect(paced, model="gen-a", messages=ask(COWS))
    tokens = count_tokens(TEXTS["cows-a"])
    assert text_of(chunks) == TEXTS["cows-a"]
    assert time.monotonic() - started >= 0.9 * tokens / 20


async def _read_then_close(srv: ReplayServer, n_chunks: int) -> tuple[str, int]:
    """Read n content chunks, close the stream; (request id, tokens the client received)."""
    options: Any = {"include_usage": True, "continuous_usage_stats": True}
    stream = await client(srv).chat.completions.create(
        model="gen-a", messages=ask(TRAIN), stream=True, stream_options=options)
    request_id, received, seen = "", 0, 0
    async for chunk in stream:
        request_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            assert chunk.usage is not None
            received, seen = chunk.usage.completion_tokens, seen + 1
            if seen == n_chunks:
                break
    await stream.close()  # a bare break would leave the connection open
    return request_id, received


async def _wait_for(srv: ReplayServer, request_id: str, done: str) -> RequestStats:
    for _ in range(200):
        rec = record(srv, request_id)
        if (rec.ended_at is not None) if done == "ended" else rec.finish_reason == done:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} never reached {done}: {rec}")


async def test_disconnect_stops_generation(paced: ReplayServer) -> None:
    request_id, received = await _read_then_close(paced, 4)
    rec = await _wait_for(paced, request_id, "ended")
    assert rec.disconnected and rec.finish_reason is None
    assert received <= rec.completion_tokens <= received + 1
    await asyncio.sleep(0.3)  # 6 more tokens' time at this pace: nothing more is generated
    assert record(paced, request_id).completion_tokens == rec.completion_tokens


async def test_ignore_disconnect_keeps_generating(paced_ignoring: ReplayServer) -> None:
    request_id, received = await _read_then_close(paced_ignoring, 5)
    rec = await _wait_for(paced_ignoring, request_id, "stop")
    assert rec.disconnected and rec.ended_at is not None
    assert rec.completion_tokens == count_tokens(TEXTS["train-a"]) > received + 10


# --- trace loading and matching (no server) --------------------------------------------------

@pytest.mark.parametrize("text", ["", "plain ascii words", TEXTS["cows-b"], "𝔘𝔫𝔦" * 5,
                                  "emoji 👩‍👩‍👧 and é\u0301", "\n\n\\boxed{42}\n"])
def test_chunks_join_to_the_text_and_are_valid_utf8(text: str) -> None:
    chunks = tokenize_chunks(text)
    assert "".join(chunks.texts) == text
    assert chunks.total_tokens == count_tokens(text)
    assert all(n >= 1 for n in chunks.tokens) and all(chunks.texts)


def test_longest_problem_wins_and_whitespace_is_forgiven(trace_file: Path) -> None:
    short = "How many cows does he have?"
    longer = "The farmer sells 2 cows. " + short
    traces = [Trace(id=i, dataset="d", generator="g", problem=p, reference_answer=None,
                    steps=["x"], separator="\n", final_answer_correct=True,
                    first_error_step=None) for i, p in [("s", short), ("l", longer), ("w", COWS)]]
    library = TraceLibrary(traces)
    assert library.find_problem(f"Q: {longer} Thanks") == longer
    assert library.find_problem(f"Q: {short}") == short
    reflowed = COWS.replace(" buys ", "\n  buys ")
    assert library.find_problem(f"Problem:\n{reflowed}\n") == COWS
    assert library.find_problem("nothing known here") is None


def test_substring_index_short_and_long_keys() -> None:
    index = SubstringIndex(["abc", "x" * 30, "x" * 40, ""])
    assert index.longest_in("zz" + "x" * 45) == "x" * 40
    assert index.longest_in("--abc--") == "abc"
    assert index.longest_in("ab") is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [("{not json", "invalid JSON"), ('{"id": "a"}', "not a trace record"),
     (MADE_UP[0], "duplicate trace id")],
)
def test_bad_trace_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(MADE_UP[0] + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputFormatError) as info:
        load_traces([path])
    assert (info.value.path, info.value.line) == (str(path), 3)
    assert reason in info.value.reason
