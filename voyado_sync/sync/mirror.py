"""Mirror models: delete the interactions of rows that left the model or changed.

Interactions cannot be updated in Voyado, only deleted, so a mirror model keeps Voyado
holding exactly its rows: a row whose key left the model has its interaction deleted
(``deleted``); a row whose content changed has its old interaction deleted, then is sent
again by the ordinary pipeline (``replaced``); a key that comes back is sent again.

A DELETE is exactly-once like a POST: each row is journaled ``deleting`` (with the
interaction id) and committed before its DELETE leaves, and becomes ``deleted`` only from
Voyado's answer (a 404 means already gone). A DELETE without a clear answer is looked up
(``GET /api/v3/interactions/{id}``) by the client; one still unsettled stays ``deleting``,
its key is not sent this run, and the next run deletes it again (:func:`recover`) before
anything else. A crash at any moment leaves rows ``sent`` (not yet journaled), ``deleting``
(deleted again next run), or ``deleted`` (sent again next run if the key is still there).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voyado_sync import diff as sql
from voyado_sync.exceptions import FatalApiError
from voyado_sync.spec import InteractionModel
from voyado_sync.state import Delivery, Ledger, utc_now
from voyado_sync.sync.lifecycle import Db, Stop
from voyado_sync.sync.result import ModelResult
from voyado_sync.voyado import Deleted, DeleteOutcome, Failed, Rejected, VoyadoClient

SAMPLES = 3


@dataclass(frozen=True)
class Planned:
    """One interaction a mirror run would delete: the row's latest ledger entry and why."""

    delivery: Delivery
    kind: str  # sql.VANISHED or sql.REPLACED

    @property
    def request(self) -> bool:
        """Whether Voyado holds an interaction to delete (a baselined row has no id)."""
        return bool(self.delivery.interaction_id)


def planned_sql(ledger: Ledger, model: InteractionModel, *, exists: bool = True) -> str:
    source = sql.source_table(model, ledger.dialect)
    deliveries = ledger.table("deliveries") if exists else sql.empty_ledger()
    return sql.mirror_deletes_select(
        model=model, source=source, ledger=deliveries, environment=ledger.environment
    ).sql(dialect=ledger.dialect)


def planned(ledger: Ledger, model: InteractionModel, *, exists: bool = True) -> list[Planned]:
    """The deletes a mirror run of ``model`` would make now (warehouse thread)."""
    from voyado_sync.state import DELIVERY_COLUMNS

    rows = ledger.warehouse.query(planned_sql(ledger, model, exists=exists))
    out = []
    for r in rows:
        values = dict(zip(DELIVERY_COLUMNS, r[: len(DELIVERY_COLUMNS)], strict=True))
        out.append(Planned(Delivery(**values), str(r[len(DELIVERY_COLUMNS)])))
    return out


def live(ledger: Ledger, model: InteractionModel, *, exists: bool = True) -> int:
    """How many of the model's rows Voyado holds (latest entry sent)."""
    if not exists:
        return 0
    deliveries = ledger.table("deliveries")
    query = sql.mirror_live_sql(
        model=model, ledger=deliveries, dialect=ledger.dialect, environment=ledger.environment
    )
    rows = ledger.warehouse.query(query)
    return int(rows[0][0]) if rows else 0


def samples(items: list[Planned], kind: str) -> list[str]:
    return [p.delivery.row_key_display for p in items if p.kind == kind][:SAMPLES]


@dataclass
class Deleter:
    """Deletes journaled rows' interactions through the client, a page at a time."""

    client: VoyadoClient
    db: Db
    ledger: Ledger
    stop: Stop
    run_id: str
    page_size: int

    async def recover(self, model: InteractionModel, res: ModelResult) -> None:
        """Delete again what a previous run left ``deleting``, before anything else."""
        rows = await self.db(self.ledger.deleting, model.model, model.schema_id)
        if rows:
            await self._delete(rows, kinds=None, res=res)

    async def delete(self, items: list[Planned], res: ModelResult) -> set[str]:
        """Journal, delete and settle ``items``; return the keys whose delete is unsettled
        (replaced rows among them must not be sent this run)."""
        now = utc_now()
        quiet = [p for p in items if not p.request]
        if quiet:  # baselined rows that left: voyado-sync sent nothing for them
            await self.db(
                self.ledger.write,
                [
                    p.delivery.deleting(run_id=self.run_id, now=now, reason="").deleted(
                        now=now,
                        reason="left the model; it was baselined, so there was nothing to delete",
                    )
                    for p in quiet
                ],
            )
            res.deleted += sum(1 for p in quiet if p.kind == sql.VANISHED)
        loud = [p for p in items if p.request]
        kinds = {p.delivery.row_key: p.kind for p in loud}
        return await self._delete([p.delivery for p in loud], kinds=kinds, res=res)

    async def _delete(
        self, rows: list[Delivery], *, kinds: dict[str, str] | None, res: ModelResult
    ) -> set[str]:
        unsettled: set[str] = set()
        gate = asyncio.Semaphore(self.client.max_in_flight)
        for start in range(0, len(rows), self.page_size):
            chunk = rows[start : start + self.page_size]
            if self.stop.is_set:
                unsettled |= {d.row_key for d in rows[start:]}
                break
            now = utc_now()
            journal = [
                d.deleting(run_id=self.run_id, now=now, reason=_why(kinds, d)) for d in chunk
            ]
            # Committed before any of these DELETEs leaves.
            await self.db(self.ledger.write, journal)

            async def one(entry: Delivery) -> DeleteOutcome:
                async with gate:
                    if self.stop.is_set:
                        return Failed("the run stopped before the DELETE left")
                    assert entry.interaction_id
                    return await self.client.delete_interaction(entry.interaction_id)

            outcomes = await asyncio.gather(*(one(d) for d in journal), return_exceptions=True)
            settled: list[Delivery] = []
            fatal: BaseException | None = None
            now = utc_now()
            for entry, outcome in zip(journal, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    fatal = fatal or outcome
                    unsettled.add(entry.row_key)
                    continue  # stays deleting: deleted again by the next run
                after = settle_delete(entry, outcome, now=now)
                settled.append(after)
                if isinstance(outcome, Deleted):
                    kind = (kinds or {}).get(entry.row_key, sql.VANISHED)
                    if kind == sql.REPLACED:
                        res.replaced += 1
                    else:
                        res.deleted += 1
                else:
                    unsettled.add(entry.row_key)
                    res.failed += 1
                    res.reasons.add(
                        after.reason or "DELETE failed", entry.row_key_display, status="failed"
                    )
            await self.db(self.ledger.write, settled)
            if fatal is not None:
                self.stop.set()
                if isinstance(fatal, FatalApiError):
                    raise fatal
                raise fatal
        return unsettled


def _why(kinds: dict[str, str] | None, entry: Delivery) -> str:
    kind = (kinds or {}).get(entry.row_key)
    if kind == sql.VANISHED:
        return f"deleting interaction {entry.interaction_id}: its row left the model"
    if kind == sql.REPLACED:
        return f"deleting interaction {entry.interaction_id}: its row changed; sent again after"
    return f"deleting interaction {entry.interaction_id} again: a previous run left it unsettled"


def settle_delete(entry: Delivery, outcome: DeleteOutcome, *, now: str) -> Delivery:
    """The ledger transition for the answer to one DELETE. Pure."""
    if isinstance(outcome, Deleted):
        reason = f"interaction {entry.interaction_id} deleted" + (
            " (Voyado answered 404: already gone)" if outcome.already_gone else ""
        )
        status = 404 if outcome.already_gone else 204
        return entry.deleted(now=now, reason=reason, http_status=status)
    if isinstance(outcome, Rejected):
        code = f" {outcome.error_code}" if outcome.error_code else ""
        return entry.delete_unsettled(
            f"Voyado refused to delete interaction {entry.interaction_id} ({outcome.status}"
            f"{code}): {outcome.message}; tried again next run",
            now=now,
            http_status=outcome.status,
            error_code=outcome.error_code,
        )
    return entry.delete_unsettled(
        f"DELETE of interaction {entry.interaction_id} not confirmed: {outcome.reason}; "
        "tried again next run",
        now=now,
        http_status=outcome.status,
        error_code=outcome.error_code,
    )
