"""A lean HTTP/1.1 transport for plain-http endpoints (`PlainHttpTransport`, an httpx2 transport
the OpenAI SDK takes through `http_client=`), used for every `http://` endpoint unless
`FOLDEM_LEAN_HTTP=false`.

Why: a streamed chat completion sends one SSE event per token, and a server writes each event
as its own HTTP chunk. The standard stack (httpx2 over httpcore over h11) turns every chunk into
an h11 event that climbs several async-generator layers: about a third of a worker's CPU time
per token. Here a network read is decoded in bulk — the chunked framing stripped from the whole
buffer at once — and yielded as one piece, so a read that brings fifty events costs one pass up
the layers, not fifty.

What it does: keep-alive connections per host (a response read to its end gives its connection
back; one closed early is closed), Content-Length, chunked and read-to-close bodies, the
request's connect/read/write timeouts, and the `network_stream` extension whose socket
`StreamCall` half-closes on an abort. Errors are httpx2's (ConnectError, ConnectTimeout,
ReadTimeout, ReadError, WriteError, RemoteProtocolError), as the standard transport raises them.
https, proxies and anything else go to the standard transport.

Over 300 lines and whole: the connection, its framing and the body reader are one protocol
state, and split up each part would reach into the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2

#: How much one read takes: a busy stream's whole backlog at once.
_READ_SIZE = 256 * 1024
#: A status line, header block or chunk-size line longer than this is no HTTP we read.
_MAX_LINE = 64 * 1024


class PlainHttpTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams for `http://` URLs; everything else to `fallback`."""

    def __init__(self, fallback: httpx2.AsyncBaseTransport | None = None) -> None:
        self._fallback = fallback or httpx2.AsyncHTTPTransport()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "http" or request.extensions.get("sni_hostname"):
            return await self._fallback.handle_async_request(request)
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        key = (url.host, url.port or 80)
        conn = self._take(key) or await _Connection.open(key, timeout.get("connect"))
        try:
            conn.writer.write(_head(request, body) + body)
            async with asyncio.timeout(timeout.get("write")):
                await conn.writer.drain()
        except TimeoutError:
            conn.close()
            raise httpx2.WriteTimeout("timed out writing the request") from None
        except OSError as exc:
            conn.close()
            raise httpx2.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            status, reason, headers, rest = await conn.read_head(timeout.get("read"))
        except BaseException:
            conn.close()
            raise
        framing = _framing(request.method, status, headers)
        stream = _Body(self, key, conn, framing, rest, timeout.get("read"))
        return httpx2.Response(status, headers=headers, stream=stream,
                               extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason,
                                           "network_stream": conn})

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        kept: list[_Connection] = []
        found = None
        while idle and found is None:
            conn = idle.pop()
            if conn.loop.is_closed():  # its loop is gone, and its socket with it
                continue
            if conn.loop is not loop:  # opened by another event loop (thread): not usable here
                kept.append(conn)
            elif conn.reusable():
                found = conn
            else:
                conn.close()
        if idle is not None:
            idle.extend(kept)
        return found

    def give_back(self, key: tuple[str, int], conn: _Connection) -> None:
        self._idle.setdefault(key, []).append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close_from_any_loop()
        self._idle.clear()
        await self._fallback.aclose()


def _head(request: httpx2.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    names = set()
    for name, value in request.headers.raw:
        names.add(name.lower())
        lines.append(name + b": " + value)
    if b"host" not in names:
        lines.append(b"Host: " + request.url.netloc)
    if body and b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class _Connection:
    """One TCP connection; also the response's `network_stream` (its socket, for a half-close)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.lent = False  # its socket was handed out (an abort half-closes it): never reused

    @classmethod
    async def open(cls, key: tuple[str, int], timeout: float | None) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(*key, limit=_MAX_LINE)
        except TimeoutError:
            raise httpx2.ConnectTimeout("timed out connecting") from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        return cls(reader, writer)

    def get_extra_info(self, name: str) -> Any:
        if name == "socket":
            self.lent = True
        return self.writer.get_extra_info(name)

    def reusable(self) -> bool:
        # A server closes idle connections on its own: one that said EOF, or sent anything
        # unasked, is not used again (the request would be lost with it).
        buffered = getattr(self.reader, "_buffer", b"")  # asyncio has no public test for it
        return not (self.closed or self.lent or buffered or self.reader.at_eof()
                    or self.writer.is_closing())

    async def read_head(self, timeout: float | None
                        ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        try:
            async with asyncio.timeout(timeout):
                block = await self.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise httpx2.ReadTimeout("timed out waiting for the response") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise httpx2.RemoteProtocolError(
                    "Server disconnected without sending a response.") from None
            raise httpx2.RemoteProtocolError("the response head was cut short") from None
        except asyncio.LimitOverrunError:
            raise httpx2.RemoteProtocolError("the response head is too long") from None
        except OSError as exc:
            raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
        lines = block[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx2.RemoteProtocolError(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx2.RemoteProtocolError(f"malformed header line: {line[:80]!r}")
            headers.append((name, value.strip()))
        status = int(parts[1])
        if 100 <= status < 200:  # interim answers carry no body: the real one follows
            return await self.read_head(timeout)
        return status, parts[2] if len(parts) > 2 else b"", headers, b""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    def close_from_any_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.close()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.close)


class _Framing:
    """How the body ends, and its chunked framing stripped in bulk."""

    def __init__(self, kind: str, length: int = 0) -> None:
        self.kind = kind  # "chunked", "length", "close" (read to EOF) or "none"
        self.left = length  # bytes left: of the body ("length"), of the current chunk
        self.done = kind == "none" or (kind == "length" and length == 0)
        self.keep = kind in ("chunked", "length", "none")
        self._rest = b""
        self._crlf = False  # a chunk's data ended: its CRLF comes next
        self._trailer = False  # the last chunk came: trailer lines until an empty one

    def feed(self, data: bytes) -> bytes:
        if self.kind == "length":
            take = data[:self.left]
            self.left -= len(take)
            self.done = self.left == 0
            self.keep = len(take) == len(data)  # anything past the body: do not reuse
            return take
        if self.kind == "close":
            return data
        return self._chunked(data)

    def _chunked(self, data: bytes) -> bytes:
        buf = self._rest + data if self._rest else data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            if self.left:
                take = min(self.left, end - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.left -= take
                self._crlf = self.left == 0
                continue
            if self._crlf:
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise httpx2.RemoteProtocolError("malformed chunked body: no CRLF after data")
                pos += 2
                self._crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > _MAX_LINE:
                    raise httpx2.RemoteProtocolError("malformed chunked body: line too long")
                break
            line = buf[pos:eol]
            pos = eol + 2
            if self._trailer:
                self.done = not line
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise httpx2.RemoteProtocolError(f"malformed chunk size: {line[:40]!r}")
            self.left = int(size, 16)
            self._trailer = self.left == 0
        self._rest = buf[pos:]
        if self.done and self._rest:
            self.keep = False  # bytes past the body: do not reuse the connection
        return b"".join(out) if len(out) != 1 else out[0]


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> _Framing:
    if method == "HEAD" or status in (204, 304):
        return _Framing("none")
    length: int | None = None
    keep = True
    for name, value in headers:
        low = name.lower()
        if low == b"transfer-encoding" and value.lower().endswith(b"chunked"):
            framing = _Framing("chunked")
            framing.keep = keep and not _closes(headers)
            return framing
        if low == b"content-length":
            if not value.isdigit():
                raise httpx2.RemoteProtocolError(f"malformed Content-Length: {value[:40]!r}")
            length = int(value)
    framing = _Framing("length", length) if length is not None else _Framing("close")
    framing.keep = framing.keep and not _closes(headers)
    return framing


def _closes(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n.lower() == b"connection" and b"close" in v.lower() for n, v in headers)


class _Body(httpx2.AsyncByteStream):
    """The response body, one piece per network read; the connection goes back to the pool
    when the body was read to its end, and is closed when the reader leaves early."""

    def __init__(self, transport: PlainHttpTransport, key: tuple[str, int], conn: _Connection,
                 framing: _Framing, rest: bytes, timeout: float | None) -> None:
        self._transport, self._key, self._conn = transport, key, conn
        self._framing, self._rest, self._timeout = framing, rest, timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        framing, reader = self._framing, self._conn.reader
        try:
            raw = self._rest
            while True:
                if raw and (data := framing.feed(raw)):
                    yield data
                if framing.done:
                    break
                try:
                    if self._timeout is None:
                        raw = await reader.read(_READ_SIZE)
                    else:
                        async with asyncio.timeout(self._timeout):
                            raw = await reader.read(_READ_SIZE)
                except TimeoutError:
                    raise httpx2.ReadTimeout("timed out reading the response body") from None
                except OSError as exc:
                    raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
                if not raw:
                    if framing.kind == "close":
                        framing.done = True
                        break
                    raise httpx2.RemoteProtocolError(
                        "peer closed connection without sending complete message body")
        except BaseException:
            self._release(reuse=False)
            raise
        self._release(reuse=framing.keep)

    def _release(self, *, reuse: bool) -> None:
        if self._released:
            return
        self._released = True
        if reuse and not self._conn.closed and not self._conn.lent:
            self._transport.give_back(self._key, self._conn)
        else:
            self._conn.close()

    async def aclose(self) -> None:
        # Read to its end (an SSE reader stops at `[DONE]`, which came with the body's last
        # chunk): reusable. Left early: closed now, so the server sees the hang-up at once.
        self._release(reuse=self._framing.done and self._framing.keep)
