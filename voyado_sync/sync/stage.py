"""Staging the diff: the rows of a model not yet delivered, counted, then read page by page.

A real run materialises the diff's three steps into staging tables (paging a live result would
be replaced under it by the ledger writes on the same connection); a dry run, which creates
nothing, reads the same steps as subqueries. Both hand on a :class:`Staged` whose ``pending``
relation :func:`page` reads. Every function runs on the warehouse thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from voyado_sync import diff as sql
from voyado_sync.spec import InteractionModel
from voyado_sync.state import Ledger, RowRef
from voyado_sync.sync.values import PendingRow
from voyado_sync.warehouse.base import Warehouse


@dataclass(frozen=True)
class Staged:
    """The diff of one model: counts, and the relation that holds its pending rows."""

    #: Rows of the model.
    selected: int
    #: Rows not yet sent (new, changed, failed, rejected before, waiting).
    candidates: int
    #: Pending keys (one request each) and the model rows behind them (duplicates count each).
    keys: int
    rows: int
    pending: exp.Table | exp.Subquery
    #: Pending keys the ledger has no entry of: neither sent, failed, rejected nor deleted
    #: before (a redefined unique_key or a rebuilt table makes every key new).
    new_keys: int = 0

    @property
    def already_sent(self) -> int:
        return self.selected - self.candidates

    @property
    def previously_rejected(self) -> int:
        return self.candidates - self.rows


def stage(ledger: Ledger, model: InteractionModel, *, retry_rejected: bool) -> Staged:
    """Run the diff into staging tables (dropped by :func:`unstage`)."""
    wh = ledger.warehouse
    source, deliveries = sql.source_table(model, wh.dialect), ledger.table("deliveries")
    keys, cand, pending = (ledger.staging_table(model, s) for s in sql.STAGING_STEPS)
    env = ledger.environment
    unsent_keys = sql.unsent_keys_select(
        model=model, source=source, ledger=deliveries, environment=env
    )
    with wh.keys_join():
        wh.execute_many(sql.create_sql(keys, unsent_keys, wh.dialect))
    selected = int(wh.query(sql.count_sql(source, wh.dialect))[0][0])
    unsent = int(wh.query(sql.count_sql(keys, wh.dialect))[0][0])
    # With no row sent yet (a first run) the keys filter removes nothing and costs a semi-join
    # of every key; the ledger then holds none of these rows as sent, so the one-statement
    # join is small.
    candidates = sql.candidates_select(
        model=model,
        source=source,
        ledger=deliveries,
        keys=None if unsent >= selected else keys,
        environment=env,
    )
    wh.execute_many([*sql.create_sql(cand, candidates, wh.dialect), sql.drop_sql(keys, wh.dialect)])
    wh.execute_many(
        sql.create_sql(
            pending,
            sql.pending_select(model=model, candidates=cand, retry_rejected=retry_rejected),
            wh.dialect,
        )
    )
    n_candidates = int(wh.query(sql.count_sql(cand, wh.dialect))[0][0])
    n_keys, rows, new = wh.query(sql.pending_rows_sql(pending, wh.dialect))[0]
    return Staged(selected, n_candidates, int(n_keys or 0), int(rows or 0), pending, int(new or 0))


def unstage(ledger: Ledger, model: InteractionModel) -> None:
    ledger.warehouse.execute_many(
        [
            sql.drop_sql(ledger.staging_table(model, step), ledger.dialect)
            for step in sql.STAGING_STEPS
        ]
    )


def preview(
    ledger: Ledger, model: InteractionModel, *, retry_rejected: bool, ledger_exists: bool
) -> Staged:
    """The same diff from SELECTs only, for a dry run (no DDL, no writes)."""
    wh = ledger.warehouse
    deliveries = ledger.table("deliveries") if ledger_exists else sql.empty_ledger()
    candidates, pending = sql.preview_selects(
        model=model,
        ledger=deliveries,
        retry_rejected=retry_rejected,
        dialect=wh.dialect,
        environment=ledger.environment,
    )
    # A dry run stages nothing, so whatever memory its queries use is freed when each ends:
    # the allowance of the key join applies to all of them.
    with wh.keys_join():
        source = sql.source_table(model, wh.dialect)
        selected = int(wh.query(sql.count_sql(source, wh.dialect))[0][0])
        n_candidates = int(wh.query(sql.count_sql(candidates, wh.dialect))[0][0])
        keys, rows, new = wh.query(sql.pending_rows_sql(pending, wh.dialect))[0]
    return Staged(selected, n_candidates, int(keys or 0), int(rows or 0), pending, int(new or 0))


def page(
    ledger: Ledger, model: InteractionModel, staged: Staged, *, after: int, size: int
) -> list[tuple[int, PendingRow]]:
    """Pending rows after sequence number ``after``: (sequence number, row).

    Before each page of a real run the run's claim on the ledger is checked: a run whose lock
    was taken over stops here, before it journals or sends anything more. A page holds at
    least what keeps requests flowing while the warehouse answers: on a warehouse whose
    statements take a second, ``size`` rows would drain before the next page is journaled.
    """
    wh = ledger.warehouse
    ledger.check_lock()
    size = max(size, _fed_size(wh, size))
    query = sql.page_sql(
        model=model, pending=staged.pending, after=after, size=size, dialect=wh.dialect
    )
    if isinstance(staged.pending, exp.Subquery):
        with wh.keys_join():
            rows = wh.query(query)
    else:
        rows = wh.query(query)
    used = model.columns_used
    out = []
    for r in rows:
        values = dict(zip(used, r[6:], strict=True))
        ref = RowRef(
            model=model.model,
            schema_id=model.schema_id,
            row_key=str(r[1]),
            row_key_display=", ".join(f"{c}={values[c]}" for c in model.unique_key),
            content_hash=str(r[2]),
            first_seen_at=r[5],
            relation=str(model.relation),
        )
        out.append((int(r[0]), PendingRow(ref, int(r[3]), r[4], values)))
    return out


#: Warehouse statements between two pages (page, contacts, journal, outcomes, lock check, ...).
_STATEMENTS_PER_PAGE = 8
_MAX_PAGE = 10_000


def _fed_size(wh: Warehouse, size: int) -> int:
    """The page size at which the warehouse's work per page takes at most a third of the time
    the page's requests take. ``size`` is sized for two seconds of requests (the runner's
    default: twice the rate), so the rate is about ``size / 2`` per second."""
    latency = float(getattr(wh, "latency", 0.0) or 0.0)
    if latency <= 0:
        return size
    needed = 3 * _STATEMENTS_PER_PAGE * latency * size / 2
    return int(min(_MAX_PAGE, max(size, needed)))
