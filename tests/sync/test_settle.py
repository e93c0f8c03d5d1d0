"""Settlement as a table: every outcome of a POST, a lookup and a recovery -> ledger row."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync.values import NOW, RUN, model, row
from voyado_sync.exceptions import FatalApiError
from voyado_sync.state import Delivery, Status
from voyado_sync.sync import settle
from voyado_sync.sync.values import Prepared, WouldSend
from voyado_sync.voyado import (
    ContactAmbiguous,
    ContactInvalid,
    ContactNotFound,
    Delivered,
    Failed,
    Rejected,
)

BODY: dict[str, Any] = {
    "contactId": "c-1",
    "schemaId": "repair",
    "createdDate": "2026-11-30T08:00:00.000Z",
    "payload": {"status": "done"},
}


def _item(identifier: str | None = "c1@example.com") -> Prepared:
    return Prepared(row=row(1), body=BODY, identifier=identifier, contact_key="email")


# outcome -> (status, tally, interaction_id, body kept, http_status, error_code)
POST_TABLE: list[tuple[str, object, tuple[Any, ...]]] = [
    ("201 with id", Delivered("i-1"), (Status.SENT, "sent", "i-1", False, None, None)),
    (
        "found after unknown",
        Delivered("i-2", reconciled=True),
        (Status.SENT, "sent", "i-2", False, None, None),
    ),
    (
        "400 refused",
        Rejected(400, "InvalidPayload", "bad"),
        (Status.REJECTED, "rejected", None, False, 400, "InvalidPayload"),
    ),
    (
        "5xx, checked absent",
        Failed("503 x8", status=503),
        (Status.FAILED, "failed", None, True, 503, None),
    ),
    (
        "unknown, not checkable",
        Failed("timeout", maybe_delivered=True),
        (Status.IN_FLIGHT, "unverified", None, True, None, None),
    ),
    ("interrupted before send", None, (Status.NOT_SENT, "not_sent", None, False, None, None)),
    (
        "401",
        FatalApiError("Voyado rejected the API key (401)", status=401),
        (Status.FAILED, "failed", None, True, 401, None),
    ),
    ("dry run", WouldSend(BODY), (Status.IN_FLIGHT, "sent", None, True, None, None)),
]


@pytest.mark.parametrize(
    ("case", "outcome", "expected"), POST_TABLE, ids=[c[0] for c in POST_TABLE]
)
def test_each_answer_to_a_post_has_one_ledger_transition(
    case: str, outcome: object, expected: tuple[Any, ...]
) -> None:
    settled = settle.sent_outcome(_item(), outcome, run_id=RUN, now=NOW)

    assert settled is not None
    d = settled.delivery
    status, tally, interaction_id, body_kept, http_status, error_code = expected
    assert (d.status, settled.tally, d.interaction_id) == (status, tally, interaction_id)
    assert (d.request_body is not None) == body_kept
    assert (d.http_status, d.error_code) == (http_status, error_code)
    # Every ledger row names the row, the contact and the run.
    assert (d.row_key, d.contact_id, d.run_id, d.updated_at) == ("k1", "c-1", RUN, NOW)


def test_an_unknown_outcome_keeps_the_exact_body_for_reconciliation() -> None:
    settled = settle.sent_outcome(
        _item(), Failed("timeout", maybe_delivered=True), run_id=RUN, now=NOW
    )
    assert settled is not None
    assert settled.delivery.body() == BODY


def test_a_bug_in_sending_writes_nothing_so_the_row_stays_in_flight() -> None:
    assert settle.sent_outcome(_item(), RuntimeError("bug"), run_id=RUN, now=NOW) is None


def test_a_rejection_is_grouped_by_its_reason_and_reconciled_rows_are_counted() -> None:
    rejected = settle.sent_outcome(_item(), Rejected(400, "X", "no"), run_id=RUN, now=NOW)
    found = settle.sent_outcome(_item(), Delivered("i", reconciled=True), run_id=RUN, now=NOW)
    assert rejected is not None and found is not None
    assert rejected.grouped_reason == "Voyado answered 400 X: no"
    assert found.reconciled and not rejected.reconciled


def test_a_contact_gone_on_post_names_the_identifier_it_was_looked_up_by() -> None:
    gone = Rejected(404, "ContactNotFound", "no such contact")
    looked_up = settle.sent_outcome(_item(), gone, run_id=RUN, now=NOW)
    by_id = settle.sent_outcome(_item(identifier=None), gone, run_id=RUN, now=NOW)
    assert looked_up is not None and by_id is not None
    assert "looking up email 'c1@example.com' again returns that id" in str(
        looked_up.delivery.reason
    )
    assert "the contactId column names a contact that does not exist" in str(by_id.delivery.reason)


@pytest.mark.parametrize(
    ("outcome", "first_seen", "expected"),
    [
        (ContactNotFound("nope"), None, (Status.CONTACT_NOT_FOUND, "waiting", 404)),
        (
            ContactNotFound("nope"),
            "2026-11-30T10:00:00.000Z",
            (Status.CONTACT_NOT_FOUND, "waiting", 404),
        ),
        (ContactNotFound("nope"), "2026-11-20T10:00:00.000Z", (Status.REJECTED, "rejected", 404)),
        (ContactAmbiguous(("a", "b"), "two"), None, (Status.REJECTED, "rejected", 409)),
        (ContactInvalid("InvalidEmailAddress", "bad"), None, (Status.REJECTED, "rejected", 400)),
        (Failed("lookup 503", status=503), None, (Status.FAILED, "failed", 503)),
    ],
)
def test_a_contact_that_does_not_resolve_settles_without_a_request(
    outcome: Any, first_seen: str | None, expected: tuple[Any, ...]
) -> None:
    settled = settle.unresolved(
        model(retry_days=7),
        row(1, first_seen=first_seen),
        "c1@example.com",
        outcome,
        run_id=RUN,
        now=NOW,
    )
    assert (settled.delivery.status, settled.tally, settled.delivery.http_status) == expected
    assert settled.delivery.request_body is None
    assert settled.delivery.first_seen_at == (first_seen or NOW)


def test_a_row_that_fails_a_check_counts_each_duplicate() -> None:
    settled = settle.not_sendable(row(1, dup_count=3), "3 rows share", run_id=RUN, now=NOW)
    assert (settled.delivery.status, settled.rows, settled.grouped_reason) == (
        Status.REJECTED,
        3,
        "3 rows share",
    )


def _left(body: dict[str, Any] | None) -> Delivery:
    journal = Delivery.journaled(row(1).ref, BODY, run_id="earlier-run", now=NOW)
    return journal if body else journal.failed("x", now=NOW).unknown("x", now=NOW)


def test_recovery_found_gone_and_bodiless() -> None:
    import dataclasses

    left = _left(BODY)
    bodiless = dataclasses.replace(left, request_body=None)
    found = settle.recovered(left, "i-9", now=NOW)
    found_now = settle.recovered(left, "i-9", now=NOW, counted=True)
    gone = settle.recovered_contact_gone(left, now=NOW)
    nobody = settle.recovered_without_body(bodiless, now=NOW)

    assert (found.delivery.status, found.delivery.interaction_id, found.reconciled) == (
        Status.SENT,
        "i-9",
        True,
    )
    assert found.delivery.request_body is None
    assert [s.delivery.status for s in (gone, nobody)] == [Status.FAILED] * 2
    # A recovery does not take the row over: it keeps the run that sent it.
    assert {s.delivery.run_id for s in (found, gone, nobody)} == {"earlier-run"}
    # A previous run's row is not counted by this run; this run's own unknown row is.
    assert [s.tally for s in (found, gone, nobody)] == ["uncounted"] * 3
    assert found_now.tally == "sent"
