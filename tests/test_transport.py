"""The HTTP/1.1 transport against a scripted asyncio server on a loopback port.

Each test scripts what the server answers (a raw byte string, or an action such as "close
without answering") and checks what the client sees: the response, or the httpx error whose
class decides whether a POST may have been stored.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from voyado_sync.voyado.client import VoyadoClient, _proxied
from voyado_sync.voyado.transport import Http11Transport

T = TypeVar("T")

Action = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Script:
    """A loopback server that answers the n-th request with the n-th action."""

    def __init__(self, actions: list[Action], *, ssl_context: ssl.SSLContext | None = None):
        self.actions = list(actions)
        self.ssl_context = ssl_context
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Script:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def url(self, path: str = "/x") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://localhost:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                action = self.actions.pop(0) if self.actions else ok()
                if isinstance(action, bytes):
                    writer.write(action)
                    await writer.drain()
                else:
                    await action(writer)
                if writer.is_closing():
                    return
        finally:
            self.open_now -= 1
            writer.close()


async def close_now(writer: asyncio.StreamWriter) -> None:
    writer.close()


def send_then_close(data: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def action(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return action


def delayed(seconds: float, data: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def action(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(seconds)
        writer.write(data)
        await writer.drain()

    return action


def client(*, max_connections: int = 4, timeout: float = 5.0, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=Http11Transport(max_connections=max_connections, **kw),
        timeout=httpx.Timeout(timeout),
    )


# -- bodies and keep-alive ----------------------------------------------------------------------


def test_content_length_responses_reuse_one_connection_and_send_the_request_as_given() -> None:
    async def main() -> None:
        async with Script([ok(b'{"id":"a"}'), ok(b'{"id":"b"}')]) as server, client() as http:
            first = await http.post(server.url("/api/v3/x?q=1"), content=b'{"n":1}')
            second = await http.get(server.url())
        assert (first.status_code, first.json()) == (200, {"id": "a"})
        assert second.json() == {"id": "b"}
        assert server.connections == 1
        request = server.requests[0]
        assert request.startswith(b"POST /api/v3/x?q=1 HTTP/1.1\r\n")
        assert b"\r\nhost: localhost:" in request.lower()
        assert b"\r\ncontent-length: 7\r\n" in request.lower()
        assert request.endswith(b'\r\n\r\n{"n":1}')

    run(main())


def test_chunked_body_with_extensions_and_trailers_is_reassembled() -> None:
    raw = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"id\r\n6\r\n":"c1"\r\n1\r\n}\r\n0\r\nX-Trailer: yes\r\n\r\n'
    )

    async def main() -> None:
        async with Script([raw, ok(b"{}")]) as server, client() as http:
            first = await http.get(server.url())
            second = await http.get(server.url())
        assert (first.status_code, first.json()) == (201, {"id": "c1"})
        assert second.status_code == 200
        assert server.connections == 1  # the chunked exchange left the connection reusable

    run(main())


def test_body_without_length_ends_at_close_and_the_connection_is_not_reused() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
        + b'{"big":"'
        + b"x" * 100_000
        + b'"}'
    )

    async def main() -> None:
        async with Script([send_then_close(raw), ok()]) as server, client() as http:
            first = await http.get(server.url())
            second = await http.get(server.url())
        assert len(first.json()["big"]) == 100_000
        assert second.status_code == 200
        assert server.connections == 2

    run(main())


def test_connection_close_and_http_1_0_answers_open_a_new_connection() -> None:
    closing = send_then_close(ok(b"{}", "Connection: close"))
    http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    async def main() -> None:
        async with Script([closing, http10, ok(), ok()]) as server, client() as http:
            for _ in range(4):
                assert (await http.get(server.url())).status_code == 200
        assert server.connections == 3  # close, 1.0 without keep-alive, then one kept

    run(main())


def test_informational_answer_before_the_final_one_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"final":1}')

    async def main() -> None:
        async with Script([raw]) as server, client() as http:
            resp = await http.post(server.url(), content=b"{}")
        assert resp.json() == {"final": 1}

    run(main())


def test_204_has_no_body_and_keeps_the_connection() -> None:
    async def main() -> None:
        async with Script([b"HTTP/1.1 204 No Content\r\n\r\n", ok()]) as server, client() as http:
            first = await http.delete(server.url())
            second = await http.get(server.url())
        assert (first.status_code, first.content, second.status_code) == (204, b"", 200)
        assert server.connections == 1

    run(main())


def test_gzip_answers_are_decoded_by_httpx() -> None:
    body = gzip.compress(b'{"zipped":true}')

    async def main() -> Any:
        async with Script([ok(body, "Content-Encoding: gzip")]) as server, client() as http:
            return (await http.get(server.url())).json()

    assert run(main()) == {"zipped": True}


def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def main() -> None:
        async with Script([send_then_close(ok()), ok()]) as server, client() as http:
            await http.get(server.url())
            await asyncio.sleep(0.05)  # the loop sees the server's FIN
            resp = await http.get(server.url())
        assert resp.status_code == 200
        assert server.connections == 2

    run(main())


# -- errors: their class says whether a POST may have been stored ---------------------------


def test_connection_refused_is_a_connect_error() -> None:
    async def main() -> None:
        async with Script([]) as server:
            url = server.url()
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(url, content=b"{}")

    run(main())


def test_close_without_an_answer_is_a_protocol_error() -> None:
    async def main() -> None:
        async with Script([close_now]) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
                await http.post(server.url(), content=b"{}")
            # The pool recovered: the next request gets a fresh connection.
            assert (await http.get(server.url())).status_code == 200

    run(main())


def test_close_in_the_middle_of_a_body_is_a_protocol_error() -> None:
    truncated = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id":'

    async def main() -> None:
        async with Script([send_then_close(truncated)]) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="before the response"):
                await http.post(server.url(), content=b"{}")

    run(main())


def test_no_answer_in_time_is_a_read_timeout() -> None:
    async def main() -> None:
        async with Script([delayed(2.0, ok())]) as server, client(timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(server.url(), content=b"{}")

    run(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
    ids=["http2", "garbage", "header", "length", "chunk", "huge-header"],
)
def test_malformed_answers_are_protocol_errors(raw: bytes) -> None:
    async def main() -> None:
        async with Script([send_then_close(raw)]) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url())

    run(main())


# -- the pool -----------------------------------------------------------------------------------


def test_never_more_connections_than_the_limit() -> None:
    async def main() -> None:
        async with (
            Script([delayed(0.05, ok()) for _ in range(12)]) as server,
            client(max_connections=3) as http,
        ):
            answers = await asyncio.gather(*(http.get(server.url()) for _ in range(12)))
        assert [a.status_code for a in answers] == [200] * 12
        assert server.most_open <= 3
        assert server.connections == 3

    run(main())


def test_waiting_for_a_connection_longer_than_the_pool_timeout_is_a_pool_timeout() -> None:
    async def main() -> None:
        async with Script([delayed(1.0, ok())]) as server:
            http = httpx.AsyncClient(
                transport=Http11Transport(max_connections=1),
                timeout=httpx.Timeout(5.0, pool=0.1),
            )
            async with http:
                slow = asyncio.create_task(http.get(server.url()))
                await asyncio.sleep(0.05)
                with pytest.raises(httpx.PoolTimeout):
                    await http.get(server.url())
                assert (await slow).status_code == 200

    run(main())


def test_a_cancelled_exchange_gives_its_connection_back() -> None:
    async def main() -> None:
        async with Script([delayed(5.0, ok()), ok()]) as server, client(max_connections=1) as http:
            task = asyncio.create_task(http.get(server.url()))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            resp = await asyncio.wait_for(http.get(server.url()), 2.0)
        assert resp.status_code == 200
        assert server.connections == 2  # the half-used connection was closed, not reused

    run(main())


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_https_with_a_trusted_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def main() -> None:
        async with Script([ok(b'{"tls":1}'), ok()], ssl_context=_server_context(cert, key)) as s:
            trusted = ssl.create_default_context(cafile=str(cert))
            async with client(ssl_context=trusted) as http:
                assert (await http.get(s.url())).json() == {"tls": 1}
                assert (await http.get(s.url())).status_code == 200
        assert s.connections == 1

    run(main())


def test_https_with_an_untrusted_certificate_is_a_connect_error(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate

    async def main() -> None:
        async with (
            Script([ok()], ssl_context=_server_context(cert, key)) as server,
            client() as http,
        ):  # the system's trust store: self-signed is refused
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(server.url())

    run(main())


# -- in the client ------------------------------------------------------------------------------


def test_the_client_uses_this_transport_unless_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = httpx.URL("https://acme.voyado.com")
    assert not _proxied(url)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _proxied(url)
    assert not _proxied(httpx.URL("http://acme.voyado.com"))
    monkeypatch.setenv("NO_PROXY", ".voyado.com")
    assert not _proxied(url)
    monkeypatch.delenv("NO_PROXY")

    async def transports() -> list[type]:
        out = []
        for _ in range(2):
            async with VoyadoClient(base_url=str(url), api_key="k") as voyado:
                out.append(type(voyado._http._transport))
            monkeypatch.delenv("HTTPS_PROXY", raising=False)
        return out

    assert run(transports()) == [httpx.AsyncHTTPTransport, Http11Transport]
