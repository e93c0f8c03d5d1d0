"""A lean HTTP/1.1 keep-alive transport for httpx, on asyncio streams.

Why: at Voyado's 150-200 requests/s the client's own CPU, not the network, set the pace.
httpcore's pool costs about 3-4 ms of CPU per request on a small core (it polls every pooled
socket on each request to learn whether it is still open, and writes head and body in separate
sends), which alone uses most of a core at 200/s. voyado-sync talks to one origin with small
JSON bodies, so this transport keeps it simple: a pool of keep-alive connections whose EOF
asyncio already tracks, one write per request, a response parser for Content-Length, chunked
and read-to-close bodies.

It is a drop-in ``httpx.AsyncBaseTransport``: the client above it (headers, status handling,
retries) is unchanged, and errors are httpx's own, with the same meaning for delivery:

* ``ConnectError`` / ``ConnectTimeout`` / ``PoolTimeout``: the request never left;
* ``WriteError`` / ``WriteTimeout`` / ``ReadError`` / ``ReadTimeout`` /
  ``RemoteProtocolError``: it may have reached the server (the outcome is unknown).

Proxies are not supported here: ``VoyadoClient`` uses httpx's default transport when a proxy
environment variable applies to Voyado's URL.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

__all__ = ["BEFORE_WRITE", "Http11Transport"]

#: Request extension: an async callable awaited once a connection is ready, just before the
#: request is written. The client takes its rate-limit token there, so that opening a new
#: connection (as the window grows) cannot delay a request that already counted against the
#: second it was granted in, and bunch it with later ones at the server.
BEFORE_WRITE = "voyado_sync.before_write"

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        # asyncio reads ahead: a peer that closed an idle connection shows up as EOF here,
        # without a system call per request.
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive to the origins a client talks to, at most ``max_connections``
    open at once (per transport). ``ssl_context`` is used for https (httpx's default context,
    which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``, when not given)."""

    def __init__(self, *, max_connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._max = max_connections
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        conn = await self._checkout(origin, request, timeouts)
        reusable = False
        written = False
        try:
            before = request.extensions.get(BEFORE_WRITE)
            if before is not None:
                await before()
                if not conn.usable():  # closed by the server while we waited: nothing sent
                    self._checkin(origin, conn, False)
                    conn = await self._checkout(origin, request, timeouts)
            written = True
            head = _request_head(request)
            body = request.content  # httpx has read it: the client sends bytes
            with _errors(request, httpx.WriteTimeout, httpx.WriteError):
                async with asyncio.timeout(timeouts.get("write")):
                    conn.writer.write(head + body if body else head)
                    await conn.writer.drain()
            with _errors(request, httpx.ReadTimeout, httpx.ReadError):
                async with asyncio.timeout(timeouts.get("read")):
                    status, reason, headers, content, keep = await _read_response(
                        conn.reader, request
                    )
            reusable = keep and not _closes(request.headers.get("connection"))
            return httpx.Response(
                status,
                headers=headers,
                stream=httpx.ByteStream(content),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
                request=request,
            )
        finally:
            # Any error or cancellation mid-exchange leaves the connection in an unknown
            # state: it is closed, never reused (unless nothing was written on it yet).
            self._checkin(origin, conn, reusable or not written)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
                self._open -= 1
        self._idle.clear()

    # -- the pool ----------------------------------------------------------------------------

    async def _checkout(
        self,
        origin: tuple[str, str, int],
        request: httpx.Request,
        timeouts: dict[str, float | None],
    ) -> _Connection:
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        loop = asyncio.get_running_loop()
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if conn.usable():
                    return conn
                conn.close()
                self._open -= 1
            if self._open < self._max or self._evict_idle():
                self._open += 1
                try:
                    return await self._connect(origin, request, timeouts.get("connect"))
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                async with asyncio.timeout(remaining):
                    await waiter
            except BaseException as exc:
                # A wake-up this waiter can no longer use goes to the next one.
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout(
                        "no connection became free in time", request=request
                    ) from None
                raise

    def _evict_idle(self) -> bool:
        """Close an idle connection to another origin to make room; False if there is none."""
        for idle in self._idle.values():
            if idle:
                idle.popleft().close()
                self._open -= 1
                return True
        return False

    def _checkin(self, origin: tuple[str, str, int], conn: _Connection, reusable: bool) -> None:
        if reusable and not self._closed and conn.usable():
            self._idle.setdefault(origin, deque()).append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(
        self, origin: tuple[str, str, int], request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        with _errors(request, httpx.ConnectTimeout, httpx.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                    limit=_MAX_HEAD,
                )
        return _Connection(reader, writer)


@contextmanager
def _errors(
    request: httpx.Request,
    on_timeout: type[httpx.TimeoutException],
    on_error: type[httpx.TransportError],
) -> Iterator[None]:
    try:
        yield
    except TimeoutError:
        raise on_timeout(f"timed out ({on_timeout.__name__})", request=request) from None
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError(
            "the server closed the connection before the response was complete",
            request=request,
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError(
            "a line of the response is longer than 64 KiB", request=request
        ) from exc
    except OSError as exc:  # ssl.SSLError included: certificate problems are connect errors
        raise on_error(f"{type(exc).__name__}: {exc}", request=request) from exc


def _closes(value: str | None) -> bool:
    return value is not None and "close" in value.lower()


def _request_head(request: httpx.Request) -> bytes:
    url = request.url
    lines = [request.method.encode("ascii") + b" " + url.raw_path + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_response(
    reader: asyncio.StreamReader, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    """(status, reason, headers, body, keep-alive) of the next final response on ``reader``."""
    while True:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                ) from None
            raise
        lines = block[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(
                f"malformed status line {lines[0][:80]!r}", request=request
            )
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else b""
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError(
                    f"malformed header line {line[:80]!r}", request=request
                )
            headers.append((name, value.strip()))
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends come before the real answer
        break
    fields = {name.lower(): value for name, value in headers}
    keep = parts[0] == b"HTTP/1.1"
    connection = fields.get(b"connection", b"").lower()
    if b"close" in connection:
        keep = False
    elif b"keep-alive" in connection:
        keep = True
    if request.method == "HEAD" or status in _NO_BODY_STATUS:
        return status, reason, headers, b"", keep
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return status, reason, headers, await _read_chunked(reader, request), keep
    length = fields.get(b"content-length")
    if length is not None:
        if not length.isdigit() or int(length) > _MAX_BODY:
            raise httpx.RemoteProtocolError(f"bad Content-Length {length[:40]!r}", request=request)
        return status, reason, headers, await reader.readexactly(int(length)), keep
    # No length: the body ends when the server closes the connection.
    body = await reader.read(_MAX_BODY + 1)
    chunks = [body]
    size = len(body)
    while body and size <= _MAX_BODY:
        body = await reader.read(_MAX_BODY + 1 - size)
        chunks.append(body)
        size += len(body)
    if size > _MAX_BODY:
        raise httpx.RemoteProtocolError("response body too large", request=request)
    return status, reason, headers, b"".join(chunks), False


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        text = line[:-2].split(b";", 1)[0].strip()
        try:
            length = int(text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(
                f"malformed chunk size {text[:40]!r}", request=request
            ) from None
        if length == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers, ignored
            return b"".join(chunks)
        size += length
        if size > _MAX_BODY:
            raise httpx.RemoteProtocolError("response body too large", request=request)
        chunks.append(await reader.readexactly(length))
        if await reader.readexactly(2) != b"\r\n":
            raise httpx.RemoteProtocolError("malformed chunk terminator", request=request)
