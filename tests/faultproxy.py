"""A fault-injecting HTTP proxy for end-to-end tests: it stands between a real run and the
emulator on a loopback port, forwards every request, and lets a test answer or rewrite any of
them (a WAF's HTML 200, a listing that 404s without Voyado's code, an index that shows new
interactions late, a server that never answers, an absurd Retry-After, an echo in local time).

It runs in its own thread (a run drives its own event loop), one thread per connection, with
HTTP/1.1 keep-alive as the client expects. ``hook(request)`` returns None to forward as is, a
``Canned`` answer to answer instead (``forward=True``: forward first, then answer, so Voyado
stored it but the client hears something else), or ``HANG`` to never answer.
``rewrite(request, status, body)`` may change a forwarded answer's body.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Canned:
    status: int
    body: bytes | str | Any = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Forward the request to the emulator first (it acts on it), then answer this instead.
    forward: bool = False

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


HANG = Canned(0)
Hook = Callable[[Seen], Canned | None]
Rewrite = Callable[[Seen, int, Any], Any]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.hook: Hook | None = None
        self.rewrite: Rewrite | None = None
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def count(self, method: str, path: str, *, exact: bool = False) -> int:
        with self._lock:
            return sum(
                1
                for s in self.seen
                if s.method == method and (s.path == path if exact else s.path.startswith(path))
            )

    # -- serving -------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        seen = Seen(handler.command, split.path, dict(parse_qsl(split.query)), body)
        with self._lock:
            self.seen.append(seen)
        canned = self.hook(seen) if self.hook else None
        if canned is HANG:
            self._stopping.wait(120)  # until the client gives up or the test ends
            handler.close_connection = True
            return
        if canned is not None and not canned.forward:
            self._reply(
                handler, canned.status, canned.encoded(), canned.content_type, canned.headers
            )
            return
        status, data, content_type = self._forward(handler, body)
        if canned is not None:
            self._reply(
                handler, canned.status, canned.encoded(), canned.content_type, canned.headers
            )
            return
        if self.rewrite is not None and content_type.startswith("application/json") and data:
            data = json.dumps(self.rewrite(seen, status, json.loads(data))).encode()
        self._reply(handler, status, data, content_type, {})

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes, str]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            connection.request(handler.command, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or ""
        finally:
            connection.close()

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str],
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
