"""The "rows not yet delivered" SQL, executed on an in-memory DuckDB against a real ledger table."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pytest
import sqlglot

from voyado_sync import diff
from voyado_sync.spec import InteractionModel, Relation, parse_spec, resolve
from voyado_sync.sqlexpr import ident
from voyado_sync.state import create_table_sql

LEDGER_SCHEMA = "voyado_sync"


@pytest.fixture(scope="module")
def _database() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    connection.execute(f"CREATE SCHEMA {LEDGER_SCHEMA}")
    connection.execute(create_table_sql("deliveries", LEDGER_SCHEMA, "duckdb"))
    yield connection
    connection.close()


@pytest.fixture
def con(_database: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """One in-memory database for the module (connecting is the slow part), empty ledger."""
    _database.execute(f"DELETE FROM {LEDGER_SCHEMA}.deliveries")
    return _database


def _model(
    *,
    name: str = "reviews",
    unique_key: Sequence[str] = ("review_id",),
    columns: dict[str, str] | None = None,
    properties: dict[str, Any] | None = None,
    mode: str = "append",
) -> InteractionModel:
    raw = {
        "schema_id": "productReview",
        "unique_key": list(unique_key),
        "contact": {"column": "contact_id"},
        "properties": properties or {"rating": "rating"},
        "mode": mode,
    }
    return resolve(
        model=name,
        unique_id=f"model.shop.{name}",
        relation=Relation(None, "main", "src"),
        spec=parse_spec(name, raw),
        columns=columns or {"review_id": "INTEGER", "contact_id": "VARCHAR", "rating": "INTEGER"},
    )


def _source(
    con: duckdb.DuckDBPyConnection, model: InteractionModel, rows: list[tuple[Any, ...]]
) -> None:
    cols = ", ".join(ident(c).sql("duckdb") + " " + t for c, t in model.column_types.items())
    con.execute("DROP TABLE IF EXISTS main.src")
    con.execute(f"CREATE TABLE main.src ({cols})")
    if rows:
        marks = ", ".join("?" for _ in model.column_types)
        con.executemany(f"INSERT INTO main.src VALUES ({marks})", rows)


def _pending(
    con: duckdb.DuckDBPyConnection,
    model: InteractionModel,
    *,
    retry_rejected: bool = False,
    page_size: int = 1000,
    environment: str | None = None,
) -> list[dict[str, Any]]:
    """Run the diff steps into staging tables and read every page, as the engine does."""
    pend = _stage(con, model, retry_rejected=retry_rejected, environment=environment)
    used = model.columns_used
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = con.execute(
            diff.page_sql(model=model, pending=pend, after=after, size=page_size, dialect="duckdb")
        ).fetchall()
        if not page:
            return out
        for r in page:
            out.append(
                {
                    "seq": r[0],
                    "key": r[1],
                    "group_hash": r[2],
                    "dup_count": r[3],
                    "prev_status": r[4],
                    **dict(zip(used, r[6:], strict=True)),
                }
            )
        after = page[-1][0]


def _stage(
    con: duckdb.DuckDBPyConnection,
    model: InteractionModel,
    *,
    retry_rejected: bool = False,
    filter_by_keys: bool | None = None,
    environment: str | None = None,
) -> Any:
    """The engine's three steps; ``filter_by_keys`` None decides as the engine does."""
    source, ledger = diff.source_table(model), diff.table("deliveries", LEDGER_SCHEMA)
    keys, cand, pend = (
        diff.table(diff.staged_name(model, s), LEDGER_SCHEMA) for s in diff.STAGING_STEPS
    )
    for sql in diff.create_sql(
        keys,
        diff.unsent_keys_select(model=model, source=source, ledger=ledger, environment=environment),
        "duckdb",
    ):
        con.execute(sql)
    if filter_by_keys is None:
        unsent = con.execute(diff.count_sql(keys, "duckdb")).fetchone()
        selected = con.execute(diff.count_sql(source, "duckdb")).fetchone()
        filter_by_keys = unsent < selected
    candidates = diff.candidates_select(
        model=model,
        source=source,
        ledger=ledger,
        keys=keys if filter_by_keys else None,
        environment=environment,
    )
    for sql in diff.create_sql(cand, candidates, "duckdb"):
        con.execute(sql)
    pending = diff.pending_select(model=model, candidates=cand, retry_rejected=retry_rejected)
    for sql in diff.create_sql(pend, pending, "duckdb"):
        con.execute(sql)
    return pend


def _record(
    con: duckdb.DuckDBPyConnection,
    model: InteractionModel,
    row: dict[str, Any],
    status: str,
    *,
    model_name: str | None = None,
    schema_id: str | None = None,
    environment: str | None = None,
) -> None:
    con.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.deliveries "
        "(model, schema_id, row_key, content_hash, status, first_seen_at, environment) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            model_name or model.model,
            schema_id or model.schema_id,
            row["key"],
            row["group_hash"],
            status,
            "2024-01-01T00:00:00.000Z",
            environment,
        ],
    )


def test_new_rows_are_all_pending(con: duckdb.DuckDBPyConnection) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (2, "c2", 3), (3, None, None)])
    rows = _pending(con, model)
    assert sorted(r["review_id"] for r in rows) == [1, 2, 3]
    assert all(r["prev_status"] is None and r["dup_count"] == 1 for r in rows)
    by_id = {r["review_id"]: r for r in rows}
    assert (by_id[1]["contact_id"], by_id[1]["rating"]) == ("c1", 5)


def test_empty_model_has_nothing_pending(con: duckdb.DuckDBPyConnection) -> None:
    model = _model()
    _source(con, model, [])
    assert _pending(con, model) == []


def test_row_key_is_md5_of_the_key_text(con: duckdb.DuckDBPyConnection) -> None:
    # The ledger stores these keys: changing the recipe would resend every row ever sent.
    model = _model(unique_key=("review_id", "contact_id"))
    _source(con, model, [(1, "c1", 5), (2, None, 5)])
    keys = {r["review_id"]: r["key"] for r in _pending(con, model)}
    assert keys == {
        1: hashlib.md5(b"1|c1").hexdigest(),
        2: hashlib.md5(b"2|\\N").hexdigest(),
    }


@pytest.mark.parametrize(
    ("status", "content_changed", "retry_rejected", "pending"),
    [
        ("sent", False, False, False),
        ("sent", True, False, False),  # interactions are immutable: never resent
        ("sent", False, True, False),
        ("failed", False, False, True),
        ("contact_not_found", False, False, True),
        ("rejected", False, False, False),
        ("rejected", True, False, True),
        ("rejected", False, True, True),
        ("in_flight", False, False, False),  # reconciled with Voyado, not blindly resent
        ("in_flight", False, True, False),
    ],
)
def test_ledger_status_decides_what_is_pending(
    con: duckdb.DuckDBPyConnection,
    status: str,
    content_changed: bool,
    retry_rejected: bool,
    pending: bool,
) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (2, "c2", 3)])
    first = {r["review_id"]: r for r in _pending(con, model)}
    _record(con, model, first[1], status)
    if content_changed:
        con.execute("UPDATE main.src SET rating = 4 WHERE review_id = 1")
    rows = _pending(con, model, retry_rejected=retry_rejected)
    ids = sorted(r["review_id"] for r in rows)
    assert ids == ([1, 2] if pending else [2])
    if pending:
        again = next(r for r in rows if r["review_id"] == 1)
        assert again["prev_status"] == status
        assert again["rating"] == (4 if content_changed else 5)


def test_a_row_is_its_schema_and_key_not_its_model_name(con: duckdb.DuckDBPyConnection) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5)])
    (row,) = _pending(con, model)
    _record(con, model, row, "sent", schema_id="otherSchema")
    assert [r["review_id"] for r in _pending(con, model)] == [1]
    _record(con, model, row, "sent", model_name="the_model_before_its_rename")
    assert _pending(con, model) == []


def test_rows_sent_to_another_voyado_are_pending_here(con: duckdb.DuckDBPyConnection) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (2, "c2", 4)])
    one, two = _pending(con, model)
    _record(con, model, one, "sent", environment="https://staging.example")
    _record(con, model, two, "sent")  # before ledger version 3: no environment
    prod = "https://prod.example"
    assert [r["review_id"] for r in _pending(con, model, environment=prod)] == [1]
    assert _pending(con, model, environment="https://staging.example") == []


def test_duplicated_key_yields_one_pending_row_with_its_count(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (1, "c1", 4), (2, "c2", 3)])
    rows = {r["review_id"]: r for r in _pending(con, model)}
    assert len(rows) == 2
    assert (rows[1]["dup_count"], rows[2]["dup_count"]) == (2, 1)


def test_rejected_duplicate_stays_rejected_until_the_group_changes(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (1, "c1", 4)])
    (row,) = _pending(con, model)
    _record(con, model, row, "rejected")
    assert _pending(con, model) == []
    con.execute("DELETE FROM main.src WHERE rating = 4")  # duplicate fixed in the model
    assert [r["dup_count"] for r in _pending(con, model)] == [1]


def test_composite_keys_with_nulls_in_different_places_differ(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model(
        unique_key=("order_id", "line"),
        columns={
            "order_id": "INTEGER",
            "line": "INTEGER",
            "contact_id": "VARCHAR",
            "rating": "INTEGER",
        },
    )
    _source(con, model, [(1, None, "c1", 5), (None, 1, "c2", 3)])
    rows = _pending(con, model)
    assert len(rows) == 2
    assert len({r["key"] for r in rows}) == 2
    assert all(r["dup_count"] == 1 for r in rows)


def test_composite_key_values_containing_the_separator_differ(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model(
        unique_key=("order_id", "line"),
        columns={
            "order_id": "VARCHAR",
            "line": "VARCHAR",
            "contact_id": "VARCHAR",
            "rating": "INTEGER",
        },
    )
    _source(con, model, [("a|b", "c", "c1", 5), ("a", "b|c", "c2", 3)])
    rows = _pending(con, model)
    assert [r["dup_count"] for r in rows] == [1, 1]


def test_odd_identifiers_are_quoted(con: duckdb.DuckDBPyConnection) -> None:
    model = _model(
        name='it\'s "reviews"',
        unique_key=("select", "order id"),
        columns={
            "select": "INTEGER",
            "order id": "VARCHAR",
            "contact_id": "VARCHAR",
            "from": "INTEGER",
        },
        properties={"rating": "from"},
    )
    _source(con, model, [(1, "a b", "c1", 5), (2, "x'y", "c2", 3)])
    rows = _pending(con, model)
    assert sorted((r["select"], r["order id"], r["from"]) for r in rows) == [
        (1, "a b", 5),
        (2, "x'y", 3),
    ]
    _record(con, model, rows[0], "sent")
    assert len(_pending(con, model)) == 1


@pytest.mark.parametrize("page_size", [7, 25])
def test_paging_returns_every_pending_row_exactly_once(
    con: duckdb.DuckDBPyConnection, page_size: int
) -> None:
    model = _model()
    _source(con, model, [(i, f"c{i}", i % 5) for i in range(1, 51)])
    sent = _pending(con, model)[::2]
    for row in sent:
        _record(con, model, row, "sent")
    rows = _pending(con, model, page_size=page_size)
    assert [r["seq"] for r in rows] == list(range(1, 26))  # dense after filtering
    got = [r["review_id"] for r in rows]
    assert len(got) == len(set(got)) == 25
    assert set(got) == set(range(1, 51)) - {r["review_id"] for r in sent}


def test_candidates_are_the_step_one_keys_minus_any_sent_since(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (2, "c2", 3), (3, "c3", 4)])
    ledger = diff.table("deliveries", LEDGER_SCHEMA)
    source = diff.table("src", "main")
    keys_select = diff.unsent_keys_select(model=model, source=source, ledger=ledger)
    # Only the key goes through the anti-join with the ledger's sent rows.
    assert len(keys_select.expressions) == 1
    con.execute(f"CREATE OR REPLACE TABLE {LEDGER_SCHEMA}.k AS {keys_select.sql('duckdb')}")
    assert con.execute(f"SELECT count(*) FROM {LEDGER_SCHEMA}.k").fetchone() == (3,)
    rows = {r["review_id"]: r for r in _pending(con, model)}
    _record(con, model, rows[1], diff.SENT)  # sent after step 1 ran
    con.execute(f"DELETE FROM {LEDGER_SCHEMA}.k WHERE __vs_row_key = ?", [rows[3]["key"]])
    select = diff.candidates_select(
        model=model, source=source, ledger=ledger, keys=diff.table("k", LEDGER_SCHEMA)
    )
    got = con.execute(select.sql("duckdb")).fetchall()
    assert [r[0] for r in got] == [rows[2]["key"]]


def test_dry_run_without_a_ledger_sees_every_row(con: duckdb.DuckDBPyConnection) -> None:
    model = _model()
    _source(con, model, [(1, "c1", 5), (2, "c2", 2), (2, "c2", 2)])
    candidates, pending = diff.preview_selects(
        model=model, ledger=diff.empty_ledger(), retry_rejected=False
    )
    assert con.execute(diff.count_sql(candidates, "duckdb")).fetchone() == (3,)
    assert con.execute(diff.pending_rows_sql(pending, "duckdb")).fetchone() == (2, 3, 2)


def test_with_or_without_the_keys_filter_the_same_rows_are_pending(
    con: duckdb.DuckDBPyConnection,
) -> None:
    model = _model()
    _source(con, model, [(i, f"c{i}", i % 5) for i in range(1, 41)] + [(7, "c7", 2)])
    first = {r["review_id"]: r for r in _pending(con, model)}
    for review_id, status in (
        (1, diff.SENT),
        (2, diff.REJECTED),
        (3, diff.FAILED),
        (4, diff.IN_FLIGHT),
    ):
        _record(con, model, first[review_id], status)
    _record(con, model, first[5], diff.SENT, schema_id="otherSchema")

    def read(filter_by_keys: bool) -> list[tuple[Any, ...]]:
        pend = _stage(con, model, filter_by_keys=filter_by_keys)
        return con.execute(f"SELECT * FROM {pend.sql('duckdb')} ORDER BY 1").fetchall()

    filtered, unfiltered = read(True), read(False)
    assert filtered == unfiltered
    # 40 keys minus the sent one, the unchanged rejection and the one in flight (reconciled first)
    assert len(filtered) == 37


def test_postgres_sql_parses_back() -> None:
    model = _model(
        unique_key=("select", "order id"),
        columns={
            "select": "INTEGER",
            "order id": "TEXT",
            "contact_id": "VARCHAR",
            "rating": "INTEGER",
        },
    )
    source, ledger = diff.table("src", "main"), diff.table("deliveries", LEDGER_SCHEMA)
    keys, cand, pend = (
        diff.table(diff.staged_name(model, s), LEDGER_SCHEMA) for s in diff.STAGING_STEPS
    )
    statements = [
        *diff.create_sql(
            keys, diff.unsent_keys_select(model=model, source=source, ledger=ledger), "postgres"
        ),
        *diff.create_sql(
            cand,
            diff.candidates_select(model=model, source=source, ledger=ledger, keys=keys),
            "postgres",
        ),
        *diff.create_sql(
            pend,
            diff.pending_select(model=model, candidates=cand, retry_rejected=False),
            "postgres",
        ),
        diff.page_sql(model=model, pending=pend, after=0, size=100, dialect="postgres"),
        diff.pending_rows_sql(pend, "postgres"),
        diff.drop_sql(cand, "postgres"),
    ]
    for sql in statements:
        parsed = sqlglot.parse_one(sql, read="postgres")
        assert parsed is not None
    create_keys, create_candidates = statements[1], statements[3]
    assert "NOT EXISTS" in create_keys and '"__vs_row_key" IN (SELECT' in create_candidates
    assert '"select"' in create_candidates and '"order id"' in create_candidates
    assert "MD5(" in create_candidates
    # The round trip keeps the quoted identifiers (a reserved word must stay quoted).
    assert '"select"' in sqlglot.parse_one(create_candidates, read="postgres").sql("postgres")


def test_the_new_keys_count_leaves_out_keys_the_ledger_has_seen(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """The mass-send guard counts keys the ledger never held: a failed or deleted row sent
    again is a retry, not an old row under a new key."""
    model = _model()
    _source(con, model, [(i, f"c{i}", i % 5) for i in range(1, 11)])
    first = {r["review_id"]: r for r in _pending(con, model)}
    _record(con, model, first[1], diff.SENT)
    _record(con, model, first[2], diff.FAILED)
    _record(con, model, first[3], diff.CONTACT_NOT_FOUND)
    _record(con, model, first[4], diff.SENT, schema_id="otherSchema")  # another schema's
    pend = _stage(con, model)
    assert con.execute(diff.pending_rows_sql(pend, "duckdb")).fetchone() == (9, 9, 7)


def test_a_mirror_models_changed_baselined_rows_count_as_new(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """Baselined rows were never sent: when they all change in a mirror model (and so are
    pending), they are as many first sends as new keys."""
    model = _model(mode="mirror")
    _source(con, model, [(i, f"c{i}", i % 5) for i in range(1, 5)])
    first = {r["review_id"]: r for r in _pending(con, model)}
    _record(con, model, {**first[1], "group_hash": "before"}, diff.BASELINED)
    _record(con, model, {**first[2], "group_hash": "before"}, diff.SENT)
    _record(con, model, first[3], diff.SENT)
    pend = _stage(con, model)
    assert con.execute(diff.pending_rows_sql(pend, "duckdb")).fetchone() == (3, 3, 2)
