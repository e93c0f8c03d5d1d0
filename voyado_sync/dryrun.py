"""``run --dry-run``: what a run would do, from SELECTs only (no DDL, no writes, no HTTP)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voyado_sync import diff as sql
from voyado_sync.contacts import ContactCache
from voyado_sync.exceptions import RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.state import Ledger, utc_now

if TYPE_CHECKING:
    from voyado_sync.engine import ModelResult
    from voyado_sync.spec import InteractionModel

PAGE = 5000
SAMPLES = 3


def preview(
    ledger: Ledger,
    model: InteractionModel,
    res: ModelResult,
    ledger_exists: bool,
    retry_rejected: bool,
) -> None:
    """Fill ``res`` with the counts a real run would start from, and sample payloads."""
    from voyado_sync.engine import Engine, _Row

    # A dry run stages nothing, so whatever memory its queries use is freed when each ends:
    # the allowance of the key join applies to all of them.
    with ledger.warehouse.keys_join():
        wh = ledger.warehouse
        deliveries = ledger.table("deliveries") if ledger_exists else sql.empty_ledger()
        candidates, pending = sql.preview_selects(
            model=model, ledger=deliveries, retry_rejected=retry_rejected
        )
        res.selected = int(wh.query(sql.count_sql(sql.source_table(model), wh.dialect))[0][0])
        n_candidates = int(wh.query(sql.count_sql(candidates, wh.dialect))[0][0])
        keys, rows = wh.query(sql.pending_rows_sql(pending, wh.dialect))[0]
        res.already_sent = res.selected - n_candidates
        res.previously_rejected = n_candidates - int(rows or 0)

        builder = PayloadBuilder(model)
        identifiers: set[str] = set()
        after = 0
        now = utc_now()
        used = model.columns_used
        while after < int(keys or 0):
            page = wh.query(
                sql.page_sql(
                    model=model, pending=pending, after=after, size=PAGE, dialect=wh.dialect
                )
            )
            if not page:
                break
            after = int(page[-1][0])
            for r in page:
                values = dict(zip(used, r[6:], strict=True))
                row = _Row(
                    key=str(r[1]),
                    display=", ".join(f"{c}={values[c]}" for c in model.unique_key),
                    group_hash=str(r[2]),
                    dup_count=int(r[3]),
                    prev_status=r[4],
                    first_seen=r[5],
                    values=values,
                )
                try:
                    payload, created, normalised = Engine.validate_row(builder, model, row)
                except RowRejected as exc:
                    res.rejected += row.dup_count
                    reason = exc.reason.split(":")[0][:80]
                    res.reasons[reason] = res.reasons.get(reason, 0) + row.dup_count
                    continue
                res.sent += 1
                res.count_normalised(normalised.changed)
                identifier = normalised.value
                identifiers.add(identifier)
                if len(res.samples) < SAMPLES:
                    contact: Any = identifier
                    if model.contact_key != "contactId":
                        contact = f"<looked up by {model.contact_key}={identifier}>"
                    res.samples.append(
                        {
                            "row_key": row.display,
                            "body": {
                                "contactId": contact,
                                "schemaId": model.schema_id,
                                "createdDate": created or f"<time of sending, e.g. {now}>",
                                "payload": payload,
                            },
                        }
                    )
        if model.contact_key != "contactId" and identifiers:
            cached: dict[str, str] = {}
            if ledger_exists:
                wanted = sorted(identifiers)
                cache = ContactCache(ledger)
                for start in range(0, len(wanted), 1000):
                    cached.update(cache.get(model.contact_key, wanted[start : start + 1000]))
            res.lookups_cached = len(cached)
            res.lookups = len(identifiers) - len(cached)
