"""Preparation: a pending row checked without Voyado, then the exact body a run POSTs. Pure.

The dry run builds its samples with the same :func:`body` as a real run, so what it shows is
what would be sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from voyado_sync.contacts import normalise
from voyado_sync.exceptions import RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.spec import InteractionModel
from voyado_sync.sync.values import Checked, PendingRow, Prepared


def check(builder: PayloadBuilder, model: InteractionModel, row: PendingRow) -> Checked:
    """Everything that can be checked without Voyado; raise RowRejected with the reason."""
    nulls = [c for c in model.unique_key if row.values.get(c) is None]
    if nulls:
        raise RowRejected(f"unique key column {', '.join(nulls)} is NULL")
    if row.dup_count > 1:
        raise RowRejected(
            f"{row.dup_count} rows share the unique key {row.display}; none is sent until "
            "it is unique"
        )
    raw_contact = row.values.get(model.contact_column)
    if raw_contact is None:
        raise RowRejected(f"contact column {model.contact_column} is NULL")
    try:
        # Before any lookup: one person is one lookup, and a value Voyado would refuse never
        # spends a request.
        contact = normalise(model.contact_key, raw_contact, default_country=model.default_country)
    except ValueError as exc:
        raise RowRejected(
            f"contact column {model.contact_column} ({model.contact_key}): {exc}"
        ) from None
    return Checked(
        row=row,
        payload=builder.payload(row.values),
        created=builder.created_date(row.values),
        contact=contact,
    )


def body(
    model: InteractionModel, checked: Checked, *, contact_id: str, created_date: str
) -> dict[str, Any]:
    """The request body of ``POST /api/v3/interactions`` for one checked row."""
    return {
        "contactId": contact_id,
        "schemaId": model.schema_id,
        "createdDate": checked.created or created_date,
        "payload": checked.payload,
    }


def prepared(
    model: InteractionModel, checked: Checked, *, contact_id: str, created_date: str
) -> Prepared:
    looked_up = model.contact_key != "contactId"
    return Prepared(
        row=checked.row,
        body=body(model, checked, contact_id=contact_id, created_date=created_date),
        identifier=checked.contact.value if looked_up else None,
        contact_key=model.contact_key,
    )


class JournalClock:
    """The createdDate of rows without a created_date column: the journal time, to the
    millisecond, never the same value twice in one run. It means what Voyado's default means
    and gives reconciliation a precise key (one per row and run)."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def __call__(self) -> str:
        now = datetime.now(UTC)
        moment = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last is not None and moment <= self._last:
            moment = self._last + timedelta(milliseconds=1)
        self._last = moment
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
