"""tasks/endpoints/plain_http.py: the lean HTTP/1.1 transport decodes chunked bodies however
the network cuts them, reuses a connection read to its end, closes one left early, and fails
with httpx2's errors. (The endpoint, engine and replay tests run over it too: it is the default
for http://.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.endpoints.plain_http import PlainHttpTransport, _Framing
from tests.support.fake_endpoint import closed_port


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(max_size=40), max_size=12),
       cuts=st.lists(st.integers(0, 400), max_size=12))
def test_a_chunked_body_decodes_whole_however_the_reads_cut_it(
        parts: list[bytes], cuts: list[int]) -> None:
    wire = _chunked(parts)
    framing = _Framing("chunked")
    edges = sorted({c for c in cuts if c < len(wire)} | {0, len(wire)})
    out = b"".join(framing.feed(wire[a:b]) for a, b in zip(edges, edges[1:], strict=False))
    assert out == b"".join(parts) and framing.done and framing.keep


@pytest.mark.parametrize("wire", [b"zz\r\nab\r\n", b"2\r\nabXY", b"-1\r\n", b"\r\n"])
def test_a_malformed_chunked_body_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        _Framing("chunked").feed(wire)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


async def _answer_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          parts: list[bytes]) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + _chunked(parts))
    await writer.drain()


async def test_a_body_read_to_its_end_gives_its_connection_back() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await _answer_chunked(reader, writer, [b"data: 1\n\n", b"data: 2\n\n"])

    server, url, connections = await _serve(handler)
    async with server, httpx2.AsyncClient(transport=PlainHttpTransport()) as client:
        for _ in range(3):
            response = await client.post(url + "/v1/x", content=b"{}")
            assert response.status_code == 200
            assert response.content == b"data: 1\n\ndata: 2\n\n"
    assert len(connections) == 1


async def test_leaving_a_body_early_closes_its_connection_and_the_server_sees_it() -> None:
    seen_eof = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if not await reader.read(1):
            seen_eof.set()

    server, url, _ = await _serve(handler)
    async with server, httpx2.AsyncClient(transport=PlainHttpTransport()) as client:
        async with client.stream("GET", url) as response:
            pieces: AsyncIterator[bytes] = response.aiter_bytes()
            assert await anext(pieces) == b"hello"
            sock = response.extensions["network_stream"].get_extra_info("socket")
            assert sock is not None  # what an abort half-closes
        await asyncio.wait_for(seen_eof.wait(), 2)


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()

    server, url, _ = await _serve(handler)
    async with server, httpx2.AsyncClient(transport=PlainHttpTransport()) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.get(url)


async def test_no_answer_is_a_protocol_error_and_no_listener_a_connect_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    server, url, _ = await _serve(handler)
    async with server, httpx2.AsyncClient(transport=PlainHttpTransport()) as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await client.get(url)
        with pytest.raises(httpx2.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port()}/")


async def test_a_content_length_body_and_a_silent_server_time_out_as_asked() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(2)  # and then nothing

    server, url, _ = await _serve(handler)
    async with server, httpx2.AsyncClient(transport=PlainHttpTransport(), timeout=0.2) as client:
        assert (await client.get(url)).content == b"abc"
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(url)
