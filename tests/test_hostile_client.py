"""The client against a hostile Voyado over real HTTP (issue 13, the client's side).

Every test here reproduces a fault that the emulator does not inject: a ``200 text/html``
from a WAF, a listing 404 without Voyado's error code, paging schemes and echo variants,
answers that drip or never come, absurd ``Retry-After`` values, echoed secrets. The server is
``tests/hostile.py``, on a loopback port, in the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import pytest

from tests.hostile import HostileVoyado, Reply, html_200, json_reply
from voyado_sync.exceptions import (
    ApiError,
    ClientStopped,
    ContactGone,
    FatalApiError,
    ListingUnavailable,
)
from voyado_sync.voyado import (
    Delivered,
    Failed,
    Rejected,
    RetryPolicy,
    VoyadoClient,
    echo_problems,
    matches,
)

T = TypeVar("T")

KEY = "hostile-key"
CONTACT = "2e40b702-2767-4abe-ae99-aa510108e22b"
BODY: dict[str, Any] = {
    "contactId": CONTACT,
    "schemaId": "product_review",
    "createdDate": "2025-09-03T07:04:08.723Z",
    "payload": {"rating": 5, "sku": "JEANS-32", "verified": True},
}


_PROXY_VARS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@pytest.fixture(autouse=True)
def _no_proxy_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's proxy would sit between the client and the loopback server.
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(voyado: HostileVoyado, *, api_key: str = KEY, **kw: Any) -> VoyadoClient:
    kw.setdefault("retry", RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02))
    kw.setdefault("timeout", 5.0)
    return VoyadoClient(base_url=voyado.url, api_key=api_key, rate=1000, **kw)


# -- 1. a 2xx that is not Voyado's answer -------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        html_200(),
        Reply(200, "<html>stored, maybe</html>", content_type="text/html", store=True),
        json_reply(200, {"ok": True}),
        json_reply(201, {"id": ""}),
        Reply(204),
    ],
    ids=["waf-html", "html-but-stored", "json-without-id", "empty-id", "204"],
)
def test_a_2xx_without_an_interaction_id_is_an_unknown_outcome_not_a_delivery(
    reply: Reply,
) -> None:
    async def main() -> Any:
        async with HostileVoyado() as voyado, client(voyado) as voyado_client:
            voyado.posts = [reply]
            outcome = await voyado_client.deliver_interaction(dict(BODY), claimed=set())
            # Sent once: the page may hide a stored interaction, so no blind resend.
            assert voyado.count("POST", "/api/v3/interactions") == 1
            return outcome

    outcome = run(main())
    assert not isinstance(outcome, Delivered), "marked sent without an interaction id"
    assert isinstance(outcome, Failed)
    assert outcome.maybe_delivered, "the row must stay in flight and be reconciled"
    assert outcome.status == reply.status


# -- 2. what a listing's 404 and 500 mean --------------------------------------------------------


def _find(voyado: HostileVoyado, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    async def main() -> Any:
        async with client(voyado, **kw) as voyado_client:
            return await voyado_client.find_delivered(dict(body or BODY), claimed=set())

    return main()


def test_a_listing_404_with_contact_not_found_means_the_contact_is_gone() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            voyado.listings = [json_reply(404, {"errorCode": "ContactNotFound", "message": "x"})]
            with pytest.raises(ContactGone) as info:
                await _find(voyado)
            assert info.value.status == 404
            assert info.value.error_code == "ContactNotFound"

    run(main())


@pytest.mark.parametrize(
    "reply",
    [
        Reply(404, "<html><h1>Not Found</h1>nginx</html>", content_type="text/html"),
        json_reply(404, {"errorCode": "InteractionSchemaNotFound"}),
        json_reply(404, {"message": "Resource not found"}),
        Reply(404, b""),
    ],
    ids=["html", "another-code", "no-code", "empty"],
)
def test_a_listing_404_without_voyados_code_is_unknown_not_a_gone_contact(reply: Reply) -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            voyado.listings = [reply]
            with pytest.raises(ApiError) as info:
                await _find(voyado)
            # The engine reads status 404 as "contact gone, send again": a duplicate per run.
            assert info.value.status != 404
            assert not isinstance(info.value, ContactGone)
            assert isinstance(info.value, ListingUnavailable)
            assert info.value.cause == "not-voyado-404"
            assert info.value.observed_status == 404

    run(main())


def test_a_listing_500_is_could_not_check() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            voyado.listings = [json_reply(500, {"message": "An error has occurred"})] * 3
            with pytest.raises(ListingUnavailable) as info:
                await _find(voyado)
            assert info.value.observed_status == 500
            assert info.value.cause == "server-error"
            assert voyado.count("GET", "/api/v3/interactions") == 3

    run(main())


@pytest.mark.parametrize(
    "reply",
    [html_200(), json_reply(200, {"unexpected": []}), json_reply(200, "a string")],
    ids=["html-200", "unknown-object", "json-string"],
)
def test_a_listing_that_is_not_a_listing_is_could_not_check_not_empty(reply: Reply) -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            voyado.listings = [reply]
            # Taken as an empty listing, the row would be sent again: a duplicate.
            with pytest.raises(ListingUnavailable):
                await _find(voyado)

    run(main())


# -- 3. every listing shape and paging scheme ----------------------------------------------------


def _rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            **BODY,
            "createdDate": f"2025-09-03T07:{i // 60:02d}:{i % 60:02d}.000Z",
            "payload": {"rating": i % 5, "sku": f"SKU-{i}", "verified": True},
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("shape", ["items_links", "data", "bare", "next_page", "next_page_url"])
@pytest.mark.parametrize("page_size", [7, 50])
def test_every_listing_shape_and_paging_scheme_is_read_to_the_end(
    shape: str, page_size: int
) -> None:
    rows = _rows(120)

    async def main() -> None:
        async with HostileVoyado(shape=shape, page_size=page_size) as voyado:
            ids = [voyado.store(row) for row in rows]
            async with client(voyado) as voyado_client:
                listed = await voyado_client.list_interactions(CONTACT, "product_review")
                assert sorted(x["id"] for x in listed) == sorted(ids)
                # The oldest and the newest, wherever the shape puts them.
                claimed: set[str] = set()
                for row, wanted in ((rows[0], ids[0]), (rows[-1], ids[-1])):
                    assert await voyado_client.find_delivered(row, claimed=claimed) == wanted

    run(main())


def test_endless_paging_is_bounded_with_a_clear_error() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            pages = iter(range(10**6))

            def endless(request: Any) -> Reply | None:
                if request.path != "/api/v3/interactions":
                    return None
                token = next(pages)
                href = f"/api/v3/interactions?contactId={CONTACT}&continuation=t{token}"
                return json_reply(200, {"items": [], "links": [{"rel": "next", "href": href}]})

            voyado.hook = endless
            with pytest.raises(ListingUnavailable, match="more than 200 pages") as info:
                await _find(voyado)
            assert info.value.cause == "too-many-pages"
            assert voyado.count("GET", "/api/v3/interactions") == 200

    run(main())


# -- 4. matching the echoes of a Voyado that reformats what it stored ----------------------------

ECHO_BODY: dict[str, Any] = {
    "contactId": CONTACT,
    "schemaId": "product_review",
    "createdDate": "2025-09-03T07:04:08.723Z",
    "payload": {
        "sku": "  Cafe\u0301 Jeans ",  # decomposed é, spaces around
        "orderNumber": 12345678901234567,  # above 2**53
        "price": 0.1234567891,
        "quantity": 3,
        "paid": True,
    },
}


def _echo_payload(**changes: Any) -> Any:
    def echo(item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "payload": {**item["payload"], **changes}}

    return echo


def _echo_date(value: str) -> Any:
    return lambda item: {**item, "createdDate": value}


ECHOES: list[tuple[str, Any]] = [
    ("date-to-the-second", _echo_date("2025-09-03T07:04:08Z")),
    ("date-rounded-to-the-second", _echo_date("2025-09-03T07:04:09Z")),
    ("date-offset-7-digits", _echo_date("2025-09-03T07:04:08.7230000+00:00")),
    ("date-with-a-space-and-+0000", _echo_date("2025-09-03 07:04:08.723+0000")),
    ("date-in-another-zone", _echo_date("2025-09-03T09:04:08.723+02:00")),
    ("strings-trimmed-and-nfc", _echo_payload(sku="Caf\u00e9 Jeans")),
    ("big-int-through-a-double", _echo_payload(orderNumber=12345678901234568)),
    ("big-int-as-a-float", _echo_payload(orderNumber=1.2345678901234568e16)),
    ("float-rounded-to-4-places", _echo_payload(price=0.1235)),
    ("float-truncated-to-6-digits", _echo_payload(price=0.123456)),
    ("int-as-float", _echo_payload(quantity=3.0)),
]


@pytest.mark.parametrize("echo", [e[1] for e in ECHOES], ids=[e[0] for e in ECHOES])
def test_an_unknown_outcome_is_recognised_however_voyado_echoes_it(echo: Any) -> None:
    async def main() -> Any:
        async with HostileVoyado(echo=echo) as voyado, client(voyado) as voyado_client:
            voyado.posts = [Reply(503, {"message": "gateway"}, store=True)]
            outcome = await voyado_client.deliver_interaction(dict(ECHO_BODY), claimed=set())
            assert len(voyado.stored) == 1, "sent again: a duplicate"
            return outcome, voyado.stored[0]["id"]

    outcome, stored_id = run(main())
    assert outcome == Delivered(stored_id, reconciled=True)


ALIENS: list[tuple[str, Any]] = [
    ("another-second", _echo_date("2025-09-03T07:04:10Z")),
    ("another-ms", _echo_date("2025-09-03T07:04:08.725Z")),
    ("price-off-in-its-last-digit", _echo_payload(price=0.1237)),
    ("quantity", _echo_payload(quantity=4)),
    ("another-string", _echo_payload(sku="Cafe Jeans")),
]


@pytest.mark.parametrize("echo", [e[1] for e in ALIENS], ids=[e[0] for e in ALIENS])
def test_a_different_interaction_is_not_taken_for_ours(echo: Any) -> None:
    async def main() -> None:
        async with HostileVoyado(echo=echo) as voyado, client(voyado) as voyado_client:
            other = voyado.store(dict(ECHO_BODY))  # another row's, as Voyado shows it
            assert await voyado_client.find_delivered(dict(ECHO_BODY), claimed=set()) is None
            assert other

    run(main())


@pytest.mark.parametrize(
    "local", ["2025-09-03T09:04:08.723", "2025-09-03T07:04:08.723", "2025-09-03T02:34:08"]
)
def test_a_created_date_without_offset_is_neither_matched_nor_resent(local: str) -> None:
    async def main() -> Any:
        echo = _echo_date(local)
        async with HostileVoyado(echo=echo) as voyado, client(voyado) as voyado_client:
            voyado.posts = [Reply(503, {"message": "gateway"}, store=True)]
            outcome = await voyado_client.deliver_interaction(dict(ECHO_BODY), claimed=set())
            assert len(voyado.stored) == 1, "sent again: a duplicate"
            with pytest.raises(ListingUnavailable) as info:
                await voyado_client.find_delivered(dict(ECHO_BODY), claimed=set())
            assert info.value.cause == "undecidable-echo"
            return outcome

    outcome = run(main())
    assert isinstance(outcome, Failed) and outcome.maybe_delivered


def test_a_naive_date_in_no_time_zone_of_the_instant_is_another_interaction() -> None:
    async def main() -> None:
        echo = _echo_date("2025-09-03T09:11:08.723")  # +2:07 is no zone's offset
        async with HostileVoyado(echo=echo) as voyado, client(voyado) as voyado_client:
            voyado.store(dict(ECHO_BODY))
            assert await voyado_client.find_delivered(dict(ECHO_BODY), claimed=set()) is None

    run(main())


def test_a_match_never_takes_a_claimed_id_whatever_its_case() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado, client(voyado) as voyado_client:
            first = voyado.store(dict(ECHO_BODY))
            claimed = {first.upper()}
            assert await voyado_client.find_delivered(dict(ECHO_BODY), claimed=claimed) is None
            second = voyado.store(dict(ECHO_BODY))
            assert await voyado_client.find_delivered(dict(ECHO_BODY), claimed=claimed) == second
            assert await voyado_client.find_delivered(dict(ECHO_BODY), claimed=claimed) is None

    run(main())


# -- 5. the echo self-check ----------------------------------------------------------------------


def _self_check(echo: Any) -> list[str]:
    async def main() -> list[str]:
        async with HostileVoyado(echo=echo) as voyado, client(voyado) as voyado_client:
            outcome = await voyado_client.deliver_interaction(dict(ECHO_BODY), claimed=set())
            assert isinstance(outcome, Delivered)
            echoed = await voyado_client.get_interaction(outcome.interaction_id)
            assert echoed is not None and echoed["id"] == outcome.interaction_id
            assert await voyado_client.get_interaction("no-such-id") is None
            return echo_problems(ECHO_BODY, echoed)

    return run(main())


@pytest.mark.parametrize(
    "echo",
    [None] + [e[1] for e in ECHOES],
    ids=["verbatim"] + [e[0] for e in ECHOES],
)
def test_the_self_check_trusts_the_matcher_on_echoes_it_recognises(echo: Any) -> None:
    assert _self_check(echo) == []


@pytest.mark.parametrize(
    ("echo", "field"),
    [
        (_echo_date("2025-09-03T09:04:08.723"), "createdDate"),
        (lambda item: {k: v for k, v in item.items() if k != "createdDate"}, "createdDate"),
        (_echo_date("2025-09-03T07:05:08.723Z"), "createdDate"),
        (_echo_payload(price="0.1234567891"), "payload.price"),
        (_echo_payload(paid=1), "payload.paid"),
        (_echo_payload(extra="added by the server"), "payload.extra"),
        (lambda item: {**item, "payload": {}}, "payload.sku"),
        (lambda item: {**item, "contactId": "someone-else"}, "contactId"),
    ],
    ids=[
        "naive-date",
        "no-date",
        "shifted-date",
        "number-as-string",
        "bool-as-int",
        "extra-field",
        "payload-dropped",
        "other-contact",
    ],
)
def test_the_self_check_says_why_the_matcher_would_not_recognise_an_echo(
    echo: Any, field: str
) -> None:
    problems = _self_check(echo)
    assert problems, "the matcher would miss this echo: every unknown outcome resent"
    assert any(p.startswith(field) for p in problems), problems


def test_echo_problems_agrees_with_the_matcher() -> None:
    for _, echo in ECHOES + ALIENS:
        echoed = echo({"id": "i-1", **ECHO_BODY})
        assert (echo_problems(ECHO_BODY, echoed) == []) is matches(echoed, ECHO_BODY)
    assert echo_problems(ECHO_BODY, "<html>") != []


# -- 6. bounded waits: Retry-After, deadlines, stop ------------------------------------------------


class FakeTime:
    """A monotonic clock that moves only when someone sleeps (the HTTP stays real)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("retry_after", "longest"),
    [
        ("99999", 0.02),  # absurd: the normal back-off (backoff_max 0.02 s here)
        ("Wed, 21 Oct 2043 07:28:00 GMT", 0.02),  # a date years away: the same
        ("inf", 0.02),
        ("1200", 300.0),  # long: capped at 300 s
        ("7", 7.0),  # sane: honoured
    ],
)
def test_retry_after_is_capped_and_an_absurd_one_ignored(retry_after: str, longest: float) -> None:
    fake = FakeTime()

    async def main() -> Any:
        async with HostileVoyado() as voyado:
            voyado.posts = [
                Reply(429, {"errorCode": "TooManyRequests"}, {"Retry-After": retry_after})
            ]
            async with client(voyado, sleep=fake.sleep, clock=fake.monotonic) as voyado_client:
                return await voyado_client.deliver_interaction(dict(BODY), claimed=set())

    outcome = run(main())
    assert isinstance(outcome, Delivered)
    assert max(fake.sleeps) == pytest.approx(longest, abs=0.021)


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)


@pytest.mark.parametrize("through", ["http11-transport", "httpx-via-proxy"])
def test_a_dripped_answer_ends_at_the_deadline_on_both_transports(
    through: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> float:
        async with HostileVoyado() as voyado:
            base = voyado.url
            if through == "httpx-via-proxy":
                _proxy_env(monkeypatch, voyado.url)
                base = "http://acme.voyado.invalid"  # only the proxy knows the way
            dripped = Reply(200, {"id": "x" * 200}, drip=0.1)  # 20 s for the whole answer
            voyado.hook = lambda r: (
                dripped if r.path.startswith("/api/v3/interactionschemas") else None
            )
            voyado_client = VoyadoClient(
                base_url=base,
                api_key=KEY,
                rate=1000,
                timeout=0.8,
                retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02),
            )
            async with voyado_client:
                transport = type(voyado_client._http._transport).__name__
                assert (transport == "Http11Transport") is (through == "http11-transport")
                start = asyncio.get_running_loop().time()
                with pytest.raises(ApiError, match="deadline"):
                    await voyado_client.get_schema("s")
                return asyncio.get_running_loop().time() - start

    elapsed = run(main())
    assert elapsed < 2.5, f"two attempts with a 0.8 s deadline took {elapsed:.1f} s"


def test_stop_ends_a_request_to_a_server_that_never_answers() -> None:
    async def main() -> tuple[Any, float, int]:
        async with HostileVoyado() as voyado:
            voyado.hook = lambda r: Reply(hang=True)
            # Production settings: 30 s per request, 8 attempts, back-off up to 60 s.
            async with client(voyado, timeout=30.0, retry=RetryPolicy()) as voyado_client:
                task = asyncio.create_task(
                    voyado_client.deliver_interaction(dict(BODY), claimed=set())
                )
                await asyncio.sleep(0.3)
                assert not task.done()
                loop = asyncio.get_running_loop()
                start = loop.time()
                voyado_client.stop()
                outcome = await asyncio.wait_for(task, 5)
                elapsed = loop.time() - start
                # After stop, nothing new starts.
                sent = len(voyado.requests)
                again = await voyado_client.deliver_interaction(dict(BODY), claimed=set())
                assert isinstance(again, Failed) and not again.maybe_delivered
                with pytest.raises(ClientStopped):
                    await voyado_client.find_delivered(dict(BODY), claimed=set())
                assert len(voyado.requests) == sent
                return outcome, elapsed, sent

    outcome, elapsed, sent = run(main())
    assert elapsed < 1.0
    assert sent == 1
    # The POST was in flight: it may be stored, so the row stays in flight.
    assert isinstance(outcome, Failed) and outcome.maybe_delivered


def test_stop_ends_a_retry_after_pause_and_a_back_off_at_once() -> None:
    async def main() -> list[Any]:
        async with HostileVoyado() as voyado:
            voyado.posts = [Reply(429, b"", {"Retry-After": "250"})]
            voyado.listings = [json_reply(503, {})] * 10
            async with client(voyado, retry=RetryPolicy(backoff_base=100)) as voyado_client:
                paused = asyncio.create_task(
                    voyado_client.deliver_interaction(dict(BODY), claimed=set())
                )
                backing_off = asyncio.create_task(
                    voyado_client.find_delivered(dict(BODY), claimed=set())
                )
                await asyncio.sleep(0.3)
                voyado_client.stop()
                return await asyncio.wait_for(
                    asyncio.gather(paused, backing_off, return_exceptions=True), 1.0
                )

    paused, backing_off = run(main())
    # A 429 means Voyado did not process the POST: nothing to reconcile.
    assert isinstance(paused, Failed) and not paused.maybe_delivered
    assert isinstance(backing_off, ClientStopped)


def test_cancelling_the_task_ends_a_pause_at_once() -> None:
    async def main() -> float:
        async with HostileVoyado() as voyado:
            voyado.posts = [Reply(429, b"", {"Retry-After": "250"})]
            async with client(voyado) as voyado_client:
                task = asyncio.create_task(
                    voyado_client.deliver_interaction(dict(BODY), claimed=set())
                )
                await asyncio.sleep(0.2)
                loop = asyncio.get_running_loop()
                start = loop.time()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 1.0)
                return loop.time() - start

    assert run(main()) < 0.5


# -- 7. secrets, in every encoding a server may echo them ---------------------------------------


CORE = "Zq7Secret"  # survives every encoding below but base64, checked separately
# Header values are ASCII: the keys are, with every character an encoding treats specially.
KEYS = [f'sk+{CORE}/"q\\x=', f"a b+{CORE}&<>'/", f"{CORE}%2B~\t;"]


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _echoes(key: str) -> list[str]:
    # .NET's encoder: every character outside a safe set as \uXXXX (surrogate pairs above).
    dotnet = "".join(
        c
        if c.isalnum() and c.isascii()
        else json.dumps(c)[1:-1]
        if ord(c) > 0xFFFF
        else f"\\u{ord(c):04X}"
        for c in key
    )
    return [
        key,
        json.dumps(key)[1:-1],
        json.dumps(key)[1:-1].replace("/", "\\/"),
        json.dumps(key, ensure_ascii=False)[1:-1],
        dotnet,
        json.dumps(json.dumps(key))[1:-1],  # a JSON string inside a JSON string
        quote(key, safe=""),
        _lower_hex(quote(key, safe="")),
        quote_plus(key, safe=""),
        html.escape(key),
        base64.b64encode(key.encode()).decode(),
        base64.urlsafe_b64encode(key.encode()).decode().rstrip("="),
    ]


def _leaks(key: str, texts: list[str]) -> list[str]:
    forms = [CORE, *(f for f in _echoes(key) if CORE not in f)]
    return [t for t in texts if any(f in t for f in forms)]


@pytest.mark.parametrize("key", KEYS, ids=["json-specials", "url-html-specials", "percent-tab"])
def test_the_key_is_redacted_in_every_encoding_a_server_echoes(key: str) -> None:
    echoed = " | ".join(_echoes(key))

    def hostile(request: Any) -> Reply | None:
        got = request.headers["apikey"]
        if request.method == "POST":  # Voyado-like JSON, escaped as json.dumps does, \/ too
            error = {"errorCode": f"InvalidKey:{got}", "message": f"key {got} bad", "echo": got}
            return Reply(400, json.dumps(error).replace("/", "\\/"))
        if request.path == "/api/v3/interactions":
            return Reply(500, f"<html>{echoed}</html>", content_type="text/html")
        return Reply(418, echoed, content_type="text/plain")

    async def main() -> list[str]:
        async with HostileVoyado(api_key=key) as voyado:
            voyado.hook = hostile
            texts: list[str] = []
            async with client(voyado, api_key=key) as voyado_client:
                rejected = await voyado_client.deliver_interaction(dict(BODY), claimed=set())
                assert isinstance(rejected, Rejected)
                texts += [rejected.message, str(rejected.error_code)]
                with pytest.raises(ListingUnavailable) as listing:
                    await voyado_client.find_delivered(dict(BODY), claimed=set())
                texts += [str(listing.value), str(listing.value.body)]
                with pytest.raises(ApiError) as schema:
                    await voyado_client.get_schema("s")
                texts += [str(schema.value), str(schema.value.body), str(schema.value.error_code)]
                voyado.hook = lambda r: Reply(503, echoed, content_type="text/plain")
                failed = await voyado_client.deliver_interaction(dict(BODY), claimed=set())
                assert isinstance(failed, Failed)
                texts.append(failed.reason)
            return texts

    texts = run(main())
    assert "***" in " ".join(texts), "nothing was echoed: the test tests nothing"
    assert _leaks(key, texts) == []


def test_proxy_credentials_echoed_by_a_407_page_are_redacted_and_stop_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "W0rong+pw/Zq7"

    async def main() -> list[str]:
        async with HostileVoyado(proxy_auth="corp:right-one") as proxy:
            _proxy_env(
                monkeypatch, f"http://corp:{quote(password, safe='')}@127.0.0.1:{proxy.port}"
            )
            texts: list[str] = []
            voyado_client = VoyadoClient(
                base_url="http://acme.voyado.invalid",
                api_key=KEY,
                rate=1000,
                retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02),
            )
            async with voyado_client:
                for call in (
                    voyado_client.get_schema("s"),
                    voyado_client.deliver_interaction(dict(BODY), claimed=set()),
                ):
                    # Every request would be refused alike: rejecting rows one by one for it
                    # would mark them all as refused for good.
                    with pytest.raises(FatalApiError, match="407") as info:
                        await call
                    texts += [str(info.value), str(info.value.body)]
            assert len(proxy.requests) == 2
            return texts

    texts = run(main())
    secret_forms = [
        password,
        quote(password, safe=""),
        "corp:" + password,
        base64.b64encode(f"corp:{password}".encode()).decode(),
    ]
    assert "***" in " ".join(texts)
    assert [t for t in texts if any(f in t for f in secret_forms)] == []


def test_redaction_leaves_other_text_alone_and_short_secrets_raw() -> None:
    from voyado_sync.voyado.redact import Redactor, proxy_secrets

    redact = Redactor(["k+y/Zq7", "pw"])
    text = 'Contact "k" not found: k y Zq7 pw ok'
    assert redact(text) == text  # fragments are not the secret; "pw" is too short to mask
    assert redact("k%2By%2fZq7 and k\\u002by\\/Zq7 and " + base64.b64encode(b"pw").decode()) == (
        "*** and *** and ***"
    )
    assert proxy_secrets(["http://corp:p%40ss@proxy:3128", "http://proxy:8080"]) == [
        "p@ss",
        "p%40ss",
        "corp:p@ss",
    ]


def test_everything_the_cli_prints_masks_the_key_and_proxy_credentials_in_any_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client masks what Voyado echoes; the CLI masks again whatever it prints (--json
    included), so a message built from elsewhere cannot carry the key out either."""
    import json

    from voyado_sync import cli

    monkeypatch.setenv("VOYADO_API_KEY", "s3cr+t/K3y")
    monkeypatch.setenv("HTTPS_PROXY", "http://corp:pr0xy%21pw@proxy:3128")
    echoed = json.dumps({"error": 'apikey "s3cr+t/K3y" rejected', "url": "k=s3cr%2Bt%2FK3y"})
    printed = cli._redacted(json.dumps({"message": echoed, "proxy": "corp:pr0xy!pw"}))
    assert "s3cr" not in printed and "pr0xy" not in printed
    assert json.loads(printed)["proxy"] == "***"  # still the JSON document it was


# -- the same rule elsewhere: a page that is not Voyado's answer is not a success --------------


@pytest.mark.parametrize(
    "reply", [html_200("<html></html>"), html_200(), json_reply(200, "<b>hello</b>")]
)
def test_a_contact_lookup_answered_by_a_page_finds_no_contact(reply: Reply) -> None:
    async def main() -> Any:
        async with HostileVoyado() as voyado, client(voyado) as voyado_client:
            voyado.hook = lambda r: reply
            return await voyado_client.lookup_contact("email", "a@example.com")

    outcome = run(main())
    assert isinstance(outcome, Failed), "a page's text taken for a contact id"


def test_a_schema_create_answered_by_a_page_is_checked_not_trusted() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado, client(voyado) as voyado_client:
            voyado.hook = lambda r: html_200() if r.method == "POST" else None
            with pytest.raises(ApiError, match="not Voyado's"):
                await voyado_client.create_schema({"id": "s", "displayName": "S"})
            assert voyado.count("GET", "/api/v3/interactionschemas/s") == 1

    run(main())


def test_stop_ends_every_sender_at_once_in_flight_or_waiting_for_a_slot() -> None:
    async def main() -> tuple[list[Any], float]:
        async with HostileVoyado() as voyado:
            voyado.hook = lambda r: Reply(hang=True)
            async with client(
                voyado, timeout=30.0, retry=RetryPolicy(), concurrency=8
            ) as voyado_client:
                tasks = [
                    asyncio.create_task(
                        voyado_client.deliver_interaction(
                            {**BODY, "payload": {"n": i}}, claimed=set()
                        )
                    )
                    for i in range(20)
                ]
                await asyncio.sleep(0.3)
                assert len(voyado.requests) == 8  # the rest wait for a slot
                loop = asyncio.get_running_loop()
                start = loop.time()
                voyado_client.stop()
                outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 5)
                return outcomes, loop.time() - start

    outcomes, elapsed = run(main())
    assert elapsed < 1.0
    assert all(isinstance(o, Failed) for o in outcomes)
    # In flight: may be stored, reconcile; never sent: plain failures, sent next run.
    assert sum(o.maybe_delivered for o in outcomes) == 8


@pytest.mark.parametrize(
    ("sent", "echoed", "same"),
    [
        (0.1234567891, 0.1235, True),
        (0.1234567891, 0.1234, True),
        (0.1234567891, 0.1237, False),
        (12345678901234567, 12345678901234568, True),
        (12345678901234567, 12345678901234580, False),
        (10, 9.7, False),  # an echo cannot have more digits than what was sent
        (100, 150, False),
        (100, 101, False),
        (2.5, 3, True),  # rounded to a whole number
        (2.5, 4, False),
        (3, 3.0, True),
    ],
)
def test_numbers_match_within_the_precision_the_echo_shows(
    sent: float, echoed: float, same: bool
) -> None:
    from voyado_sync.voyado.reconcile import same_number

    assert same_number(sent, echoed) is same
    body = {**ECHO_BODY, "payload": {"n": sent}}
    assert matches({**body, "id": "i", "payload": {"n": echoed}}, body) is same


# -- an index that lags: the caller may ask for no resend after one look -----------------------


@pytest.mark.parametrize("resend", [True, False])
def test_an_unmatched_unknown_outcome_can_be_left_in_flight_instead_of_resent(
    resend: bool,
) -> None:
    async def main() -> tuple[Any, int]:
        async with HostileVoyado(index_lag=3.0) as voyado, client(voyado) as voyado_client:
            voyado.posts = [Reply(503, {"message": "gateway"}, store=True)]
            outcome = await voyado_client.deliver_interaction(
                dict(BODY), claimed=set(), resend_unmatched=resend
            )
            return outcome, len(voyado.stored)

    outcome, stored = run(main())
    if resend:  # the compatible default: one look, then a resend, which duplicated it here
        assert isinstance(outcome, Delivered) and stored == 2
    else:
        assert isinstance(outcome, Failed) and outcome.maybe_delivered
        assert stored == 1


def test_a_listing_that_never_answers_is_could_not_check_by_the_network() -> None:
    async def main() -> None:
        async with HostileVoyado() as voyado:
            voyado.hook = lambda r: Reply(hang=True)
            with pytest.raises(ListingUnavailable) as info:
                await _find(voyado, timeout=0.2)
            assert info.value.cause == "network"
            assert info.value.status is None
            assert voyado.count("GET", "/api/v3/interactions") == 3

    run(main())
