"""Small values for the fast tests of the sync's stages: a resolved model, pending rows."""

from __future__ import annotations

from typing import Any

from voyado_sync.spec import InteractionModel, Relation, parse_spec, resolve
from voyado_sync.state import RowRef
from voyado_sync.sync.values import PendingRow

NOW = "2026-12-01T10:00:00.000Z"
RUN = "20261201T100000Z-test"


def model(*, contact_key: str = "email", created: bool = True, retry_days: int = 7) -> Any:
    raw: dict[str, Any] = {
        "schema_id": "repair",
        "unique_key": "repair_id",
        "contact": {"column": "email", "key": contact_key, "not_found_retry_days": retry_days},
        "properties": {"status": "status", "cost": "cost"},
    }
    if created:
        raw["created_date"] = "repaired_at"
    columns = {
        "repair_id": "INTEGER",
        "email": "VARCHAR",
        "repaired_at": "TIMESTAMP",
        "status": "VARCHAR",
        "cost": "DECIMAL(10,2)",
    }
    resolved: InteractionModel = resolve(
        model="repairs",
        unique_id="model.shop.repairs",
        relation=Relation("db", "main", "repairs"),
        spec=parse_spec("repairs", raw),
        columns=columns,
    )
    return resolved


def row(key: int = 1, *, dup_count: int = 1, first_seen: str | None = None, **values: Any) -> Any:
    base: dict[str, Any] = {
        "repair_id": key,
        "email": f"c{key}@example.com",
        "repaired_at": None,
        "status": "done",
        "cost": None,
    }
    base.update(values)
    ref = RowRef(
        model="repairs",
        schema_id="repair",
        row_key=f"k{key}",
        row_key_display=f"repair_id={base['repair_id']}",
        content_hash=f"h{key}",
        first_seen_at=first_seen,
    )
    pending: PendingRow = PendingRow(ref, dup_count, None, base)
    return pending
