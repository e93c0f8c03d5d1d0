"""Every statement voyado-sync can send, rendered for each warehouse and held to its rules.

BigQuery, Redshift and Databricks have no local engine here, and fakesnow ignores the case of
quoted names: the ledger and the diff are driven through every statement they send (set-up,
lock, run history, staging, paging, writes, contact cache, dry run, the column lookup), and
each statement must parse for its dialect, qualify its catalog, have a FROM under every
WHERE, declare no key, and (Snowflake) resolve every name the way Snowflake stores names.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.warehouse.sqlcheck import Recorder, SnowflakeNames, problems
from voyado_sync.spec import InteractionModel, Relation, parse_spec, resolve
from voyado_sync.state import Delivery, Ledger, RowRef, SchemaUpgrade, Status, utc_now
from voyado_sync.sync import mirror, stage
from voyado_sync.warehouse.dialects import dialect_of, relation_table

COLUMNS = ("repair_id", "email", "repaired_at", "cost")
# relation_name as each adapter renders it under its default quoting policy.
RELATIONS = {
    "snowflake": "ANALYTICS_DB.ANALYTICS.VOYADO_REPAIRS",
    "bigquery": "`my-project`.`analytics`.`voyado_repairs`",
    "redshift": '"analytics_db"."analytics"."voyado_repairs"',
    "databricks": "`main`.`analytics`.`voyado_repairs`",
    "spark": "analytics.voyado_repairs",
    "postgres": '"analytics_db"."analytics"."voyado_repairs"',
    "duckdb": '"analytics_db"."analytics"."voyado_repairs"',
}


def _model(dialect: str, **more: object) -> InteractionModel:
    stored = [c.upper() for c in COLUMNS] if dialect == "snowflake" else list(COLUMNS)
    raw = {
        "schema_id": "repair",
        "unique_key": ["repair_id"],
        "contact": {"column": "email", "key": "email"},
        "created_date": "repaired_at",
        "properties": {"cost": "cost"},
        **more,
    }
    types = ("INTEGER", "VARCHAR", "TIMESTAMP", "INTEGER")
    return resolve(
        model="voyado_repairs",
        unique_id="model.shop.voyado_repairs",
        relation=Relation(
            "analytics_db", "analytics", "voyado_repairs", rendered=RELATIONS[dialect]
        ),
        spec=parse_spec("voyado_repairs", raw),
        columns=dict(zip(stored, types, strict=True)),
    )


def every_statement(dialect: str) -> list[str]:
    """What a first run, a second run's reads and a dry run send, in order."""
    model = _model(dialect)
    rec = Recorder(dialect)
    rec.statements.append(
        dialect_of(dialect).columns_sql(
            relation_table(model.relation.rendered, ("", "", ""), dialect)
        )
    )
    dry = Ledger(rec)  # type: ignore[arg-type]
    staged = stage.preview(dry, model, retry_rejected=False, ledger_exists=False)
    stage.page(dry, model, staged, after=0, size=100)
    ledger = Ledger(rec)  # type: ignore[arg-type]
    # A staging table a killed run left behind, which the next run drops.
    stale = "vs_stage_deadbeef_voyado_repairs_keys"
    listing = "SHOW TABLES" if dialect in ("spark", "databricks") else "table_name"
    rec.answers[listing] = [("voyado_sync", stale, False) if listing == "SHOW TABLES" else (stale,)]
    ledger.exists()
    ledger.ensure()
    run_id = "20261201T000000Z-abcd1234"
    ledger.acquire_lock(run_id)
    now = utc_now()
    assert any(stale in sql and "DROP" in sql.upper() for sql in rec.statements)
    holder = (run_id, os.getpid(), socket.gethostname(), now, now, "claim", "", 0)
    rec.answers["run_claims"] = [holder]
    ledger.start_run(run_id, models=[model.model], version="test")
    ledger.in_flight(model.model, model.schema_id)
    ledger.sent_ids(model.schema_id, ["c1"])
    staged = stage.stage(ledger, model, retry_rejected=False)
    stage.page(ledger, model, staged, after=0, size=100)
    ledger.cached_contacts("email", ["a@x.se"])
    ledger.cache_contacts("email", {"a@x.se": "c1"})
    ledger.forget_contacts("email", ["a@x.se"])
    # Reads and writes about one Voyado: the contact cache's environment, the self-check's
    # ledger row.
    about = Ledger(rec, environment="https://acme.voyado.com")  # type: ignore[arg-type]
    about.cached_contacts("email", ["a@x.se"], since=now)
    about.cache_contacts("email", {"a@x.se": "c1"})
    about.a_sent_interaction(model.schema_id)
    ref = RowRef(model.model, model.schema_id, "k1", "repair_id=1", "h1", None)
    journal = Delivery.journaled(ref, {"contactId": "c1"}, run_id=run_id, now=utc_now())
    ledger.write([journal])
    ledger.write([journal.sent("i1", now=utc_now())])
    ledger.renew_lock(run_id)
    ledger.check_lock()
    stage.unstage(ledger, model)
    ledger.finish_run(run_id, status="ok", counts={"sent": 1})  # type: ignore[arg-type]
    ledger.run_history(5)
    ledger.problems([model.model])
    ledger.sent_count(model.schema_id)
    # First runs and mirror models: the guards' counts, the mirror diff, deletes, baselines.
    ledger.history(model.model, model.schema_id)
    ledger.record_first_sync(
        model.model, model.schema_id, state="started", policy="baseline", run_id=run_id
    )
    mirrored = _model(dialect, mode="mirror")
    # schemas upgrade: the history check, the rows it replays marked, where they stand.
    ledger.schema_history(model.schema_id, [model, mirrored])
    rec.answers["deliveries"] = [(3,)]  # every count: each marking statement is rendered
    ledger.mark_for_replay(model.schema_id, [model, mirrored], run_id=run_id)
    ledger.strand_left_rows(model.schema_id, [model, mirrored], upgrade_id=run_id)
    ledger.left_rows(model.schema_id, [model, mirrored], upgrade_id=run_id, history_only=True)
    ledger.sent_count(model.schema_id, Status.REPLAY)
    del rec.answers["deliveries"]
    upgrade = SchemaUpgrade(
        schema_id=model.schema_id,
        base_url="https://acme.voyado.com",
        phase="replaying",
        run_id=run_id,
        planned=3,
        deleted_with_schema=3,
        old_definition="{}",
        new_definition="{}",
        started_at=now,
        updated_at=now,
    )
    rec.answers["table_name"] = [("upgrade_rows",), ("deliveries",)]
    rec.answers["SHOW TABLES"] = [("voyado_sync", "upgrade_rows", False)]
    ledger.replay_statuses(upgrade)
    del rec.answers["table_name"], rec.answers["SHOW TABLES"]
    ledger.deleting(mirrored.model, mirrored.schema_id)
    staged = stage.stage(ledger, mirrored, retry_rejected=False)
    stage.page(ledger, mirrored, staged, after=0, size=100)
    mirror.planned(ledger, mirrored)
    mirror.live(ledger, mirrored)
    stage.unstage(ledger, mirrored)
    sent = journal.sent("i1", now=now)
    deleting = sent.deleting(run_id=run_id, now=now, reason="left the model")
    ledger.write([Delivery.baselined(ref, run_id=run_id, now=now, reason="baselined")])
    ledger.write([deleting])
    ledger.write([deleting.deleted(now=now, reason="deleted", http_status=204)])
    ledger.release_lock(run_id)
    rec.answers.clear()
    staged = stage.preview(dry, model, retry_rejected=False, ledger_exists=True)
    stage.page(dry, model, staged, after=0, size=100)
    for exists in (False, True):
        staged = stage.preview(dry, mirrored, retry_rejected=False, ledger_exists=exists)
        stage.page(dry, mirrored, staged, after=0, size=100)
        mirror.planned(dry, mirrored, exists=exists)
    return rec.statements


@pytest.mark.parametrize(
    "dialect", ["bigquery", "redshift", "databricks", "snowflake", "spark", "postgres", "duckdb"]
)
def test_every_statement_is_one_the_warehouse_accepts(dialect: str) -> None:
    statements = every_statement(dialect)
    assert len(statements) > 40
    found = {sql: p for sql in statements if (p := problems(sql, dialect))}
    assert not found, "\n".join(f"{p}: {sql}" for sql, p in found.items())


def test_every_snowflake_statement_resolves_under_snowflakes_name_rules() -> None:
    catalog = SnowflakeNames("ANALYTICS_DB")
    # As dbt-snowflake created the model: unquoted, so stored in upper case.
    catalog.add_table("ANALYTICS", "VOYADO_REPAIRS", [c.upper() for c in COLUMNS])
    statements = every_statement("snowflake")
    failed = [(sql, why) for sql in statements if (why := catalog.run(sql))]
    assert not failed, f"{len(failed)} of {len(statements)} refused:\n" + "\n".join(
        f"{why}\n  {sql}" for sql, why in failed[:5]
    )


def test_the_checker_refuses_what_snowflake_refuses() -> None:
    catalog = SnowflakeNames("DB")
    catalog.add_table("ANALYTICS", "T", ["A"])
    assert catalog.run('SELECT "a" FROM analytics.t') is not None  # quoted is exact
    assert catalog.run('SELECT a FROM "analytics".t') is not None
    assert catalog.run('SELECT a FROM analytics.t AS m WHERE "m".a = 1') is not None
    assert catalog.run('SELECT "A" FROM ANALYTICS.T') is None
    assert catalog.run("SELECT a FROM analytics.t") is None
