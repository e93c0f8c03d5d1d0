"""A hostile Voyado for the test kit: a scripted HTTP/1.1 server on a loopback port.

The emulator behaves like a well-mannered Voyado. This server behaves like the internet in
front of one: a WAF answering ``200 text/html``, a listing that 404s without Voyado's error
code, echoes that round dates, trim strings or pass numbers through a double, five paging
schemes, an index that shows new interactions late, answers dripped one byte at a time or
never sent, 429s with absurd ``Retry-After`` values, error pages that echo the API key or a
proxy's credentials. It is also an HTTP proxy (it accepts absolute-form request targets), so
httpx's own transport can be tested through it.

It runs in the test's event loop (``async with HostileVoyado() as voyado``) and keeps a small
store of interactions, so a POST that "failed" can still have been stored, as in real life.

Scripting: ``posts``, ``listings`` and ``gets`` are queues of ``Reply`` consumed one per
request of that kind (an empty queue means "behave normally"); ``hook`` sees every request
first and may answer it; ``echo`` rewrites a stored interaction each time it is shown.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HostileVoyado", "Reply", "Request", "html_200", "json_reply"]

Interaction = dict[str, Any]


@dataclass
class Request:
    method: str
    target: str  # as sent: origin-form, or absolute-form through a proxy
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """One scripted answer.

    ``store``: for a POST, store the interaction before answering (the outcome the client sees
    is then a lie about what happened). ``drip``: send the body one byte every ``drip``
    seconds. ``hang``: never answer (the connection stays open until the client gives up).
    """

    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    store: bool = False
    drip: float | None = None
    hang: bool = False

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def json_reply(status: int, body: Any, **headers: str) -> Reply:
    return Reply(status, body, headers=dict(headers))


def html_200(text: str = "<html><body>Access checked. Continue.</body></html>") -> Reply:
    return Reply(200, text, content_type="text/html; charset=utf-8")


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    407: "Proxy Authentication Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HostileVoyado:
    """A scripted Voyado Engage on ``127.0.0.1`` (see the module docstring).

    ``shape`` chooses how a listing is written:

    * ``"items_links"``: ``{"items": [...], "links": [{"rel": "next", "href": ...}]}`` with a
      ``continuation`` token, oldest first (the Swagger-derived models);
    * ``"data"``: ``{"data": [...]}`` newest first, paged with ``links`` as above;
    * ``"bare"``: a bare JSON array, every item at once;
    * ``"next_page"``: ``{"items": [...], "nextPage": <token or null>}``, the token passed
      back as ``?continuation=``;
    * ``"next_page_url"``: ``{"items": [...], "nextPage": "<absolute URL or null>"}``.
    """

    def __init__(
        self,
        *,
        api_key: str = "hostile-key",
        shape: str = "items_links",
        page_size: int = 50,
        echo: Callable[[Interaction], Interaction] | None = None,
        proxy_auth: str | None = None,
        index_lag: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.shape = shape
        self.page_size = page_size
        self.echo = echo or (lambda item: item)
        self.proxy_auth = proxy_auth  # "user:password" a proxy demands, echoed in its 407
        self.index_lag = index_lag  # seconds before a stored interaction shows in listings
        self._stored_at: dict[str, float] = {}
        self.stored: list[Interaction] = []
        self.posts: list[Reply] = []
        self.listings: list[Reply] = []
        self.gets: list[Reply] = []
        self.hook: Callable[[Request], Reply | None] | None = None
        self.requests: list[Request] = []
        self.open_connections = 0
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HostileVoyado:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def store(self, body: Interaction) -> str:
        interaction_id = f"{next(self._ids):08x}-abcd-4ef0-8abc-deadbeef0000"
        self.stored.append({"id": interaction_id, **body})
        self._stored_at[interaction_id] = time.monotonic()
        return interaction_id

    # -- the wire ----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.open_connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = await self._parse(head, reader)
                self.requests.append(request)
                reply = self._answer(request)
                if reply.hang:
                    await asyncio.Event().wait()  # until the client or the test gives up
                await self._write(writer, reply)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()

    async def _parse(self, head: bytes, reader: asyncio.StreamReader) -> Request:
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return Request(method, target, split.path, query, headers, body)

    async def _write(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        body = reply.encoded()
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Whatever')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if reply.drip is None:
            writer.write(body)
            await writer.drain()
            return
        await writer.drain()
        for i in range(len(body)):
            await asyncio.sleep(reply.drip)
            writer.write(body[i : i + 1])
            await writer.drain()

    # -- behaviour ---------------------------------------------------------------------------

    def _answer(self, request: Request) -> Reply:
        if self.proxy_auth is not None:
            given = request.headers.get("proxy-authorization", "")
            wanted = "Basic " + base64.b64encode(self.proxy_auth.encode()).decode()
            if given != wanted:
                # Like some proxies' error pages: the credentials it got, decoded, echoed.
                decoded = _decode_basic(given)
                return Reply(
                    407,
                    f"<html><h1>407</h1><p>Credentials {decoded!r} ({given}) refused</p></html>",
                    headers={"Proxy-Authenticate": 'Basic realm="corp"'},
                    content_type="text/html",
                )
        if self.hook is not None:
            hooked = self.hook(request)
            if hooked is not None:
                return hooked
        if request.headers.get("apikey") != self.api_key:
            return json_reply(401, {"errorCode": "Unauthorized"})
        path = request.path
        if path == "/api/v3/interactions" and request.method == "POST":
            return self._post(request)
        if path == "/api/v3/interactions" and request.method == "GET":
            if self.listings:
                return self.listings.pop(0)
            return self._list(request)
        if path.startswith("/api/v3/interactions/") and request.method == "GET":
            if self.gets:
                return self.gets.pop(0)
            wanted_id = path.rsplit("/", 1)[1]
            for item in self.stored:
                if item["id"] == wanted_id:
                    return json_reply(200, self.echo(dict(item)))
            return json_reply(404, {"errorCode": "InteractionNotFound"})
        return json_reply(404, {"errorCode": "NotFound", "message": f"no route {path}"})

    def _post(self, request: Request) -> Reply:
        body = request.json()
        if self.posts:
            reply = self.posts.pop(0)
            if reply.store:
                self.store(body)
            return reply
        interaction_id = self.store(body)
        return json_reply(201, {"id": interaction_id, "self": {"href": f"/x/{interaction_id}"}})

    def _list(self, request: Request) -> Reply:
        contact, schema = request.query.get("contactId"), request.query.get("schemaId")
        if not contact or not schema:
            return json_reply(400, {"errorCode": "InvalidSearchQuery"})
        shown_before = time.monotonic() - self.index_lag
        items = [
            self.echo(dict(x))
            for x in self.stored
            if x.get("contactId") == contact
            and x.get("schemaId") == schema
            and self._stored_at[x["id"]] <= shown_before
        ]
        if self.shape == "data":
            items.reverse()
        if self.shape == "bare":
            return json_reply(200, items)
        start = int(request.query.get("continuation") or 0)
        page = items[start : start + self.page_size]
        more = start + self.page_size < len(items)
        token = str(start + self.page_size)
        base = f"{self.url}/api/v3/interactions?contactId={contact}&schemaId={schema}"
        if self.shape in ("items_links", "data"):
            links = [{"rel": "self", "href": base, "method": "GET"}]
            if more:
                links.append({"rel": "next", "href": f"{base}&continuation={token}"})
            key = "items" if self.shape == "items_links" else "data"
            return json_reply(200, {key: page, "links": links})
        if self.shape == "next_page":
            return json_reply(200, {"items": page, "nextPage": token if more else None})
        if self.shape == "next_page_url":
            nxt = f"{base}&continuation={token}" if more else None
            return json_reply(200, {"items": page, "nextPage": nxt})
        raise AssertionError(f"unknown shape {self.shape}")


def _decode_basic(value: str) -> str:
    try:
        return base64.b64decode(value.removeprefix("Basic ").encode()).decode()
    except ValueError:
        return ""
