"""A small HTTP/1.1 server on asyncio streams: enough for JSON APIs on loopback, and fast.

It parses the request line, headers and a Content-Length body, keeps connections alive
(HTTP/1.1 default, ``Connection: close`` honoured, pipelined requests answered in order) and
refuses chunked request bodies with 411. http.server would cost a thread per connection and
an order of magnitude in throughput, which a load test of the sync cannot afford.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass
class Request:
    """One parsed request. Header names are lower-case; a repeated header keeps its last value."""

    method: str
    target: str
    path: str
    query_string: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters, percent-decoded ('+' becomes a space, as in any form decoder)."""
        return parse_qs(self.query_string, keep_blank_values=True)


@dataclass
class Response:
    """A response; ``body`` is sent as is with the given content type."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json; charset=utf-8"


# The handler answers a request, or returns None to drop the connection without an answer.
Handler = Callable[[Request], Awaitable[Response | None]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@cache
def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


def encode_response(response: Response, *, keep_alive: bool) -> bytes:
    """Serialise a response, with Content-Length (none for 204 and 304, which have no body)."""
    lines = [_status_line(response.status)]
    headers = list(response.headers)
    if response.status not in (204, 304):
        headers.append(("Content-Length", str(len(response.body))))
        if response.body:
            headers.append(("Content-Type", response.content_type))
    headers.append(("Connection", "keep-alive" if keep_alive else "close"))
    lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)
    lines.append(b"\r\n")
    if response.status not in (204, 304):
        lines.append(response.body)
    return b"".join(lines)


def _parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes every byte
        raise _BadRequest(400, "undecodable request head") from e
    lines = text.lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header line")
        headers[name.lower()] = value.strip()
    split = urlsplit(target)
    return Request(
        method=method.upper(),
        target=target,
        path=split.path or "/",
        query_string=split.query,
        version=version,
        headers=headers,
    )


def _wants_keep_alive(request: Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _plain_error(status: int, message: str) -> bytes:
    body = ('{"errorCode":"BadRequest","message":"' + message + '"}').encode()
    return encode_response(Response(status, body), keep_alive=False)


class HttpServer:
    """Serve ``handler`` on host:port (port 0 picks a free one) until :meth:`close`."""

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection,
            self._host,
            self._port,
            limit=MAX_HEADER_BYTES,
            backlog=1024,
            reuse_address=True,
        )

    async def close(self) -> None:
        """Stop listening and end every open connection, idle or busy."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away or the server is closing: nothing left to answer
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # closed between requests: the normal end of a keep-alive connection
            except asyncio.LimitOverrunError:
                writer.write(_plain_error(431, "request head too large"))
                return
            try:
                request = _parse_head(head)
                request.body = await self._read_body(reader, request)
            except _BadRequest as e:
                writer.write(_plain_error(e.status, str(e)))
                return
            keep_alive = _wants_keep_alive(request)
            try:
                response = await self._handler(request)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                response = Response(500, b'{"message":"An error has occurred"}')
            if response is None:
                # A fault that imitates a lost answer: no status line, just a closed socket.
                writer.transport.abort()
                return
            writer.write(encode_response(response, keep_alive=keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, request: Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise _BadRequest(411, "chunked request bodies are not supported; send Content-Length")
        raw = request.headers.get("content-length")
        if raw is None:
            return b""
        if not raw.isdigit():
            raise _BadRequest(400, "invalid Content-Length")
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        return await reader.readexactly(length) if length else b""
