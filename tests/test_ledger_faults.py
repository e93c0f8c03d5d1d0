"""The ledger where warehouses are not DuckDB: no transactions, no enforced keys, long pauses.

Each test reproduces a fault that the first version of the ledger had on Snowflake, BigQuery,
Redshift or Databricks (autocommit DELETE then INSERT; a lock that relied on an enforced
primary key; a live run's lock taken over after a long pause), on a real DuckDB file driven
the way those warehouses behave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from voyado_sync import state
from voyado_sync.exceptions import LockError, WarehouseError
from voyado_sync.state import Delivery, Ledger, RowRef


class AutocommitDuckDB:
    """The Warehouse protocol as dbt-snowflake behaves: every statement commits on its own,
    and ``fail_at`` makes the Nth statement from now fail (a dropped connection)."""

    dialect = "duckdb"
    description = "autocommit DuckDB"
    array_params = False

    def __init__(self, path: Path) -> None:
        self.con = duckdb.connect(str(path))
        self.database: str | None = path.stem
        self.fail_at: int | None = None
        self.statements: list[str] = []

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(sql).fetchall()]

    def execute(self, sql: str) -> None:
        self.execute_many([sql])

    def execute_many(self, statements: Sequence[str]) -> None:
        for sql in statements:
            if self.fail_at is not None:
                self.fail_at -= 1
                if self.fail_at == 0:
                    self.fail_at = None
                    raise WarehouseError("connection reset in the middle of a write")
            self.statements.append(sql)
            self.con.execute(sql)

    def execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        raise NotImplementedError

    def keys_join(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def columns(self, relation: Any) -> dict[str, str] | None:
        return None

    def columns_of(self, relation: Any) -> dict[str, str] | None:
        rows = self.con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [str(relation.db), str(relation.name)],
        ).fetchall()
        return {str(n): str(t) for n, t in rows} or None

    def close(self) -> None:
        self.con.close()


def _ref(key: str) -> RowRef:
    return RowRef("repairs", "repair", key, f"id={key}", "h-" + key, None)


def _ledger(path: Path) -> tuple[AutocommitDuckDB, Ledger]:
    wh = AutocommitDuckDB(path)
    ledger = Ledger(wh)  # type: ignore[arg-type]
    ledger.ensure()
    return wh, ledger


def test_a_failed_statement_in_a_page_write_loses_no_ledger_state(tmp_path: Path) -> None:
    wh, ledger = _ledger(tmp_path / "w.duckdb")
    now = state.utc_now()
    keys = [f"k{i}" for i in range(5)]
    journal = [Delivery.journaled(_ref(k), {"contactId": "c1"}, run_id="r1", now=now) for k in keys]
    ledger.write(journal)
    sent = [d.sent(f"i-{d.row_key}", now=now) for d in journal]
    # However many statements a page's write takes, a failure at any one of them must leave
    # each row either in flight (the next run looks it up) or sent: never absent, which
    # would send it again.
    for fail_at in range(1, 5):
        wh.fail_at = fail_at
        with contextlib.suppress(WarehouseError):
            ledger.write(sent)
        wh.fail_at = None
        known = {d.row_key for d in ledger.in_flight("repairs", "repair")}
        known |= {k for k in keys if _status(wh, k) == "sent"}
        assert known == set(keys), f"rows lost when statement {fail_at} of the write failed"
    ledger.write(sent)
    assert ledger.sent_count("repair") == 5
    assert ledger.in_flight("repairs", "repair") == []


def _status(wh: AutocommitDuckDB, key: str) -> str | None:
    # The journal's current entry of the key (the highest entry_seq; version 1: the one row).
    columns = {r[0] for r in wh.query("describe voyado_sync.deliveries")}
    order = "order by entry_seq desc nulls last" if "entry_seq" in columns else ""
    rows = wh.query(f"select status from voyado_sync.deliveries where row_key = '{key}' {order}")
    return str(rows[0][0]) if rows else None


def test_a_lock_without_an_enforced_key_still_refuses_a_second_run(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    con = duckdb.connect(str(path))
    # As on Snowflake, BigQuery, Redshift and Databricks: the key is declared, not enforced.
    con.execute("create schema voyado_sync")
    con.execute(
        "create table voyado_sync.run_lock (name varchar, run_id varchar, pid integer, "
        "host varchar, acquired_at varchar, heartbeat_at varchar)"
    )
    con.close()
    _, first = _ledger(path)
    first.acquire_lock("run-1")
    second = Ledger(first.warehouse)
    with pytest.raises(LockError, match="run-1"):
        second.acquire_lock("run-2")
    first.release_lock("run-1")
    second.acquire_lock("run-3")  # free again once released


def test_a_live_run_silent_for_long_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = _ledger(tmp_path / "s.duckdb")
    first.acquire_lock("run-1")
    # A long Retry-After pause: no heartbeat for longer than the stale limit, but the process
    # (this one) is alive on this host, so its lock must hold.
    monkeypatch.setattr(state, "STALE_LOCK_SECONDS", 0)
    with pytest.raises(LockError, match="run-1"):
        Ledger(first.warehouse).acquire_lock("run-2")


def test_a_silent_holder_elsewhere_is_taken_over_and_finds_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = _ledger(tmp_path / "t.duckdb")
    first.acquire_lock("run-1")
    first.check_lock()
    # Seen from another machine, whose view of run-1 is a claim that stopped renewing.
    monkeypatch.setattr(socket, "gethostname", lambda: "other-host")
    monkeypatch.setattr(state, "STALE_LOCK_SECONDS", 0)
    taker = Ledger(first.warehouse)
    taker.acquire_lock("run-2")
    monkeypatch.undo()
    with pytest.raises(LockError, match="no longer holds"):
        first.check_lock()  # before its next page: it stops
    with pytest.raises(LockError):
        first.renew_lock("run-1")  # and its timer cannot revive the claim
    taker.check_lock()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path: Path) -> None:
    _, first = _ledger(tmp_path / "d.duckdb")
    first.acquire_lock("run-1")
    first.warehouse.execute(  # type: ignore[attr-defined]
        f"update voyado_sync.run_claims set pid = {_dead_pid()}"
    )
    Ledger(first.warehouse).acquire_lock("run-2")


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_the_claim_is_renewed_on_a_timer_while_the_run_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voyado_sync.sync import runner
    from voyado_sync.sync.lifecycle import WarehouseThread

    wh, ledger = _ledger(tmp_path / "r.duckdb")
    ledger.acquire_lock("run-1")
    monkeypatch.setattr(runner, "LOCK_RENEW_SECONDS", 0.05)
    db = WarehouseThread()

    async def wait_like_a_long_retry_after() -> None:
        task = asyncio.create_task(runner._renew_lock(db, ledger, "run-1"))
        await asyncio.sleep(0.6)  # no page, no heartbeat from the pipeline
        task.cancel()

    try:
        asyncio.run(wait_like_a_long_retry_after())
    finally:
        db.shutdown()
    renewals = wh.query("select count(*) from voyado_sync.run_claims where state = 'renew'")
    assert renewals[0][0] >= 3
