"""A real webhook receiver on a loopback port, for the alert tests.

``mode`` decides how it answers: ``ok`` (200, Slack's "ok"), ``error`` (500) or ``hang`` (holds
the request open until ``hang_for`` seconds pass or the receiver stops). Every body received is
kept, parsed as JSON, in ``messages``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.mode = "ok"
        self.hang_for = 30.0
        self.messages: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.stopping = threading.Event()
        self.url = ""

    def bodies_text(self) -> str:
        return b"\n".join(self.raw).decode("utf-8", "replace")


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            receiver.raw.append(raw)
            receiver.messages.append(json.loads(raw))
            if receiver.mode == "hang":
                receiver.stopping.wait(receiver.hang_for)
            status = 500 if receiver.mode == "error" else 200
            body = b"ok" if status == 200 else b"internal_error"
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up on a hanging answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A secret-looking path, as Slack's URLs carry their token in the path.
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/s3cr3t-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.stopping.set()
        server.shutdown()
        server.server_close()
