"""Preparation on plain values: the checks before any request, and the body a run posts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from tests.sync.values import model, row
from voyado_sync.exceptions import RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.sync import prepare


def test_a_checked_row_becomes_the_exact_body_posted() -> None:
    m = model()
    checked = prepare.check(
        PayloadBuilder(m),
        m,
        row(
            1, email=" C1@Example.com ", repaired_at=datetime(2026, 11, 30, 8), cost=Decimal("9.50")
        ),
    )
    item = prepare.prepared(m, checked, contact_id="c-1", created_date="unused")

    assert checked.contact.value == "c1@example.com"
    assert checked.contact.changed == "trimmed and lower-cased"
    assert item.identifier == "c1@example.com"
    assert item.body == {
        "contactId": "c-1",
        "schemaId": "repair",
        "createdDate": checked.created,
        "payload": {"status": "done", "cost": 9.5},
    }
    assert str(checked.created).startswith("2026-11-30T08:00:00")


def test_without_a_created_date_column_the_clock_gives_the_created_date() -> None:
    m = model(created=False, contact_key="contactId")
    checked = prepare.check(PayloadBuilder(m), m, row(1))
    item = prepare.prepared(m, checked, contact_id="c1@example.com", created_date="T")
    assert item.body["createdDate"] == "T"
    assert item.identifier is None


@pytest.mark.parametrize(
    ("values", "dup_count", "reason"),
    [
        ({"repair_id": None}, 1, "unique key column repair_id is NULL"),
        ({}, 2, "2 rows share the unique key repair_id=1"),
        ({"email": None}, 1, "contact column email is NULL"),
        ({"email": "not-an-email"}, 1, "contact column email (email): 'not-an-email' is not"),
    ],
)
def test_rows_that_cannot_be_sent_are_rejected_with_the_reason(
    values: dict[str, object], dup_count: int, reason: str
) -> None:
    m = model()
    with pytest.raises(RowRejected) as info:
        prepare.check(PayloadBuilder(m), m, row(1, dup_count=dup_count, **values))
    assert info.value.reason.startswith(reason)


def test_the_journal_clock_never_repeats_a_millisecond() -> None:
    clock = prepare.JournalClock()
    stamps = [clock() for _ in range(500)]
    assert len(set(stamps)) == 500
    assert stamps == sorted(stamps)
    assert all(s.endswith("Z") and len(s) == 24 for s in stamps)
