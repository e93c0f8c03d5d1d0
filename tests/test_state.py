"""The ledger's batched writes on a real DuckDB file, with array parameters and as literals.

Both ways must store exactly the same rows: the array way is what DuckDB and Postgres use,
the literal way what every other warehouse uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from voyado_sync.state import DELIVERY_COLUMNS, Delivery, Ledger, environment_of
from voyado_sync.warehouse.base import Warehouse


class RawDuckDB:
    """The Warehouse protocol on a bare duckdb connection (no dbt)."""

    dialect = "duckdb"
    description = "test DuckDB"

    def __init__(self, path: Path, *, array_params: bool) -> None:
        self.con = duckdb.connect(str(path))
        self.database: str | None = path.stem
        self.array_params = array_params
        self.statements: list[str] = []

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(sql).fetchall()]

    def execute(self, sql: str) -> None:
        self.execute_many([sql])

    def execute_many(self, statements: Sequence[str]) -> None:
        self.execute_params([(s, ()) for s in statements])

    def execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        self.con.execute("BEGIN TRANSACTION")
        for sql, params in statements:
            self.statements.append(sql)
            self.con.execute(sql, list(params)) if params else self.con.execute(sql)
        self.con.execute("COMMIT")

    def keys_join(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def columns(self, relation: Any) -> dict[str, str] | None:
        return None

    def close(self) -> None:
        self.con.close()


@pytest.fixture(params=[True, False], ids=["arrays", "literals"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    warehouse = RawDuckDB(tmp_path / "ledger.duckdb", array_params=request.param)
    checked: Warehouse = warehouse  # the test double really implements the protocol
    ledger = Ledger(checked)
    ledger.ensure()
    yield ledger
    warehouse.close()


def delivery(key: str, status: str = "in_flight", **changes: Any) -> Delivery:
    values: dict[str, Any] = {
        "model": "model.shop.reviews",
        "schema_id": "review",
        "row_key": key,
        "row_key_display": f"review_id={key}",
        "content_hash": "h-" + key,
        "status": status,
        "run_id": "run-1",
        "first_seen_at": "2026-11-24T00:00:00.000Z",
        "updated_at": "2026-11-24T00:00:00.000Z",
    }
    return Delivery(**{**values, **changes})


def stored(ledger: Ledger) -> dict[tuple[str, str], Delivery]:
    rows = ledger.warehouse.query(
        f'SELECT {", ".join(DELIVERY_COLUMNS)} FROM "voyado_sync"."deliveries"'
    )
    out = {}
    for row in rows:
        d = Delivery(**dict(zip(DELIVERY_COLUMNS, row, strict=True)))
        assert (d.schema_id, d.row_key) not in out, f"row {d.row_key} stored twice"
        out[(d.schema_id, d.row_key)] = d
    return out


def test_writes_store_every_value_as_given_and_replace_earlier_states(ledger: Ledger) -> None:
    awkward = 'it\'s "quoted", with a \\ backslash, ünïcode, a ? and a %s and a $1'
    body = '{"contactId":"c-1","payload":{"text":"' + awkward.replace('"', '\\"') + '"}}'
    journal = [
        delivery("a", request_body=body, contact_id="c-1", created_date="2026-01-01T00:00:00Z"),
        delivery("b", reason=awkward),
        delivery("c", schema_id="repair"),  # same key, another schema: kept apart
        delivery("a", schema_id="repair", model="model.shop.repairs"),
    ]
    ledger.write(journal)
    assert stored(ledger) == {(d.schema_id, d.row_key): d for d in journal}
    assert len(ledger.in_flight("model.shop.reviews", "review")) == 2

    outcome = [
        delivery("a", "sent", interaction_id="i-1", http_status=201, contact_id="c-1"),
        delivery("b", "rejected", http_status=400, error_code="InvalidModel", reason=awkward),
    ]
    ledger.write(outcome)
    reviews = {d.row_key: d for d in ledger.problems() if d.schema_id == "review"}
    assert reviews == {"b": outcome[1]}
    repairs = ledger.in_flight("model.shop.repairs", "repair")
    assert sorted(d.row_key for d in repairs) == ["a", "c"]
    assert ledger.sent_ids("review", ["c-1"]) == {"i-1"}
    assert len(ledger.warehouse.query('SELECT * FROM "voyado_sync"."deliveries"')) == 4


def test_a_row_is_its_schema_and_key_in_one_environment(tmp_path: Path) -> None:
    """A renamed model's rows are the same rows; another Voyado's rows are not."""
    warehouse = RawDuckDB(tmp_path / "env.duckdb", array_params=True)
    staging = Ledger(warehouse, environment=environment_of("https://acme.staging.voyado.com/"))
    staging.ensure()
    staging.write([delivery("a", "sent", interaction_id="i-1"), delivery("b")])
    renamed = Ledger(warehouse, environment=environment_of("HTTPS://Acme.Staging.voyado.com:443"))
    assert [d.row_key for d in renamed.in_flight("model.shop.reviews_v2", "review")] == ["b"]
    production = Ledger(warehouse, environment=environment_of("https://acme.voyado.com/api/v3"))
    assert production.in_flight("model.shop.reviews", "review") == []
    assert production.sent_count("review") == 0
    assert renamed.sent_count("review") == 1
    warehouse.close()


def test_a_cached_contact_id_is_used_only_against_the_voyado_that_gave_it(tmp_path: Path) -> None:
    """Contact ids differ between tenants: a staging trial's cache must not steer production
    rows to staging's ids, nor an entry from before environments were recorded."""
    warehouse = RawDuckDB(tmp_path / "contacts.duckdb", array_params=False)
    staging = Ledger(warehouse, environment=environment_of("https://acme.staging.voyado.com"))
    staging.ensure()
    staging.cache_contacts("email", {"a@example.com": "staging-1"})
    warehouse.execute(
        'INSERT INTO "voyado_sync"."contacts" (key_type, key_value, contact_id, resolved_at) '
        "VALUES ('email', 'b@example.com', 'old-1', '2026-12-01T00:00:00.000Z')"
    )
    production = Ledger(warehouse, environment=environment_of("https://acme.voyado.com"))
    emails = ["a@example.com", "b@example.com"]
    assert production.cached_contacts("email", emails) == {}
    production.cache_contacts("email", {"a@example.com": "prod-1"})
    assert production.cached_contacts("email", emails) == {"a@example.com": "prod-1"}
    assert staging.cached_contacts("email", emails) == {"a@example.com": "staging-1"}
    production.forget_contacts("email", ["a@example.com"])
    assert production.cached_contacts("email", emails) == {}
    assert staging.cached_contacts("email", emails) == {"a@example.com": "staging-1"}
    warehouse.close()


def test_environment_of_spells_one_voyado_one_way() -> None:
    assert environment_of("https://Acme.voyado.com:443/") == "https://acme.voyado.com"
    assert environment_of("https://acme.voyado.com/api/v3/") == "https://acme.voyado.com"
    assert environment_of("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert environment_of("https://acme.voyado.com") != environment_of("https://acme2.voyado.com")


def test_a_column_that_is_null_in_every_row_is_written(ledger: Ledger) -> None:
    rows = [delivery(str(i)) for i in range(3)]  # interaction_id, http_status ... all None
    ledger.write(rows)
    assert len(stored(ledger)) == 3
    assert all(d.http_status is None and d.interaction_id is None for d in stored(ledger).values())


def test_a_large_page_is_one_statement_per_model_plus_one_insert(ledger: Ledger) -> None:
    rows = [delivery(f"k{i:04d}", reason="x" * (i % 7)) for i in range(2500)]
    warehouse: Any = ledger.warehouse
    warehouse.statements.clear()
    ledger.write(rows)
    ledger.write(rows[:10] + rows[-10:])  # the same keys again: replaced, not added
    assert len(stored(ledger)) == 2500
    if warehouse.array_params:
        assert len(warehouse.statements) == 4  # (delete + insert) twice, independent of size
        assert all("k0001" not in sql for sql in warehouse.statements)


def test_a_first_sync_lasts_until_completed_per_model_and_environment(tmp_path: Path) -> None:
    """A first sync is the model's, in one Voyado: started (with its policy), then completed.
    A ledger from before first syncs were recorded counts every model it holds as synced."""
    warehouse = RawDuckDB(tmp_path / "first.duckdb", array_params=True)
    staging = Ledger(warehouse, environment=environment_of("https://acme.staging.voyado.com"))
    staging.ensure()
    reviews, other = "model.shop.reviews", "model.shop.more_reviews"
    assert staging.history(reviews, "review").first_sync
    staging.write([delivery("a", "sent", interaction_id="i-1")])
    staging.record_first_sync(
        reviews, "review", state="started", policy="since:2026-01-01T00:00:00.000Z", run_id="r1"
    )
    begun = staging.history(reviews, "review")
    assert begun.first_sync and begun.started_with == "since:2026-01-01T00:00:00.000Z"
    staging.record_first_sync(reviews, "review", state="completed", policy="", run_id="r1")
    assert not staging.history(reviews, "review").first_sync
    assert staging.history(other, "review").first_sync  # another model, same schema
    production = Ledger(warehouse, environment=environment_of("https://acme.voyado.com"))
    assert production.history(reviews, "review").first_sync

    # A version 4 ledger: no first_syncs table; migrating records what it holds as done.
    warehouse.execute('DROP TABLE "voyado_sync"."first_syncs"')
    warehouse.execute('DELETE FROM "voyado_sync"."ledger_version"')
    warehouse.execute('INSERT INTO "voyado_sync"."ledger_version" VALUES (4)')
    assert not staging.history(reviews, "review").first_sync  # entries stand for it
    assert staging.history(other, "review").first_sync is False
    staging.ensure()
    assert not staging.history(reviews, "review").first_sync
    assert staging.history(other, "review").first_sync
    assert production.history(reviews, "review").first_sync  # staging's sync is not its
    warehouse.close()
