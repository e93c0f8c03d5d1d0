"""The matcher's self-check as a table: what proves, disproves or leaves unproven that "not in
Voyado's listing" means "not stored". (Over real HTTP: tests/test_hostile_run.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voyado_sync.exceptions import ListingUnavailable
from voyado_sync.sync.deliver import Calibration
from voyado_sync.sync.lifecycle import Stop

BODY: dict[str, Any] = {
    "contactId": "c-1",
    "schemaId": "repair",
    "createdDate": "2026-11-30T08:00:00.000Z",
    "payload": {"status": "done"},
}


class Voyado:
    """Answers the two reads the self-check makes."""

    def __init__(self, listing: list[dict[str, Any]] | Exception, echo: Any = None) -> None:
        self.listing = listing
        self.echo = echo
        self.listed: list[tuple[str, str]] = []

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        return self.echo

    async def list_interactions(self, contact_id: str, schema_id: str) -> list[dict[str, Any]]:
        self.listed.append((contact_id, schema_id))
        if isinstance(self.listing, Exception):
            raise self.listing
        return self.listing


def stored(interaction_id: str = "i-1", **changes: Any) -> dict[str, Any]:
    return {"id": interaction_id, **BODY, **changes}


def check(voyado: Voyado, calibration: Calibration, **kwargs: Any) -> Calibration:
    asyncio.run(calibration.check_listing(voyado, lag=0, stop=Stop(), **kwargs))  # type: ignore[arg-type]
    return calibration


def accepted() -> Calibration:
    calibration = Calibration()
    calibration.accepted(BODY, "i-1")
    return calibration


def test_an_accepted_interaction_listed_as_sent_proves_the_matcher() -> None:
    voyado = Voyado([stored("i-0", payload={"status": "other"}), stored()])
    calibration = check(voyado, accepted())
    assert calibration.trusted and not calibration.problems
    assert voyado.listed == [("c-1", "repair")]


@pytest.mark.parametrize(
    ("listing", "problem"),
    [
        ([], "did not show interaction i-1"),
        ([stored("i-2")], "did not show interaction i-1"),  # another one, not ours
        ([stored(createdDate="2026-11-30T08:00:00Z")], None),  # the same instant: fine
        ([stored(payload={"status": "finished"})], "in its listing"),  # the echo differs
    ],
)
def test_a_listing_that_does_not_show_what_voyado_accepted_disproves_it(
    listing: list[dict[str, Any]], problem: str | None
) -> None:
    calibration = check(Voyado(listing), accepted())
    if problem is None:
        assert calibration.trusted
    else:
        assert not calibration.trusted
        assert any(problem in p for p in calibration.problems)
        assert calibration.warning and "never resent" in calibration.warning


def test_a_listing_that_cannot_answer_concludes_nothing_and_is_tried_again() -> None:
    voyado = Voyado(ListingUnavailable("503", cause="server-error"))
    calibration = check(voyado, accepted())
    assert not calibration.trusted and not calibration.problems
    voyado.listing = [stored()]
    assert check(voyado, calibration).trusted


def test_a_ledger_row_can_disprove_the_listing_but_never_prove_the_matcher() -> None:
    known = ("c-9", "repair", "i-9")
    listed = check(Voyado([stored("i-9")]), Calibration(), known=known)
    assert not listed.trusted and not listed.problems  # unproven: a probe is needed
    blind = check(Voyado([]), Calibration(), known=known)
    assert not blind.trusted and "did not show interaction i-9" in blind.problems[0]


def test_a_row_found_in_the_listing_proves_it_and_nothing_is_trusted_before() -> None:
    calibration = Calibration()
    assert not calibration.trusted and calibration.warning is None
    calibration.listed()
    assert calibration.trusted


def test_an_echo_that_differs_from_what_was_sent_disproves_it_before_any_listing() -> None:
    calibration = accepted()
    voyado = Voyado([stored()], echo=stored(createdDate="2026-11-30T09:00:00"))
    asyncio.run(calibration.check_echo(voyado))  # type: ignore[arg-type]
    assert calibration.problems and not calibration.trusted
    assert not check(voyado, calibration).trusted  # a matching listing does not undo it
