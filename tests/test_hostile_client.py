"""The client against a hostile Voyado over real HTTP (issue 13, the client's side).

Every test here reproduces a fault that the emulator does not inject: a ``200 text/html``
from a WAF, a listing 404 without Voyado's error code, paging schemes and echo variants,
answers that drip or never come, absurd ``Retry-After`` values, echoed secrets. The server is
``tests/hostile.py``, on a loopback port, in the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from tests.hostile import HostileVoyado, Reply, html_200, json_reply
from voyado_sync.voyado import Delivered, Failed, RetryPolicy, VoyadoClient

T = TypeVar("T")

KEY = "hostile-key"
CONTACT = "2e40b702-2767-4abe-ae99-aa510108e22b"
BODY: dict[str, Any] = {
    "contactId": CONTACT,
    "schemaId": "product_review",
    "createdDate": "2025-09-03T07:04:08.723Z",
    "payload": {"rating": 5, "sku": "JEANS-32", "verified": True},
}


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
