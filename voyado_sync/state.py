r"""The ledger: deliveries, run history, run lock and contact cache, kept in the warehouse.

Every statement on the ledger's tables and every status lives in this module. One ledger row
per (model, schema_id, row key); its status changes only through the named transitions of
:class:`Delivery`::

    (absent) --journaled--> in_flight --sent--> sent
                               |  \--rejected--> rejected
                               |  \--failed----> failed
                               |  \--waiting_for_contact--> contact_not_found
                               \--unknown--> in_flight (no answer: the next run looks it up)
    failed / contact_not_found --> journaled again on the next run
    rejected --> journaled again when its content changed, or with --retry-rejected
    in_flight (left by a crash) --found--> sent | --absent--> failed (resent in that run)

Rows that never leave (a NULL key, a contact that cannot be found) go from absent straight to
rejected or contact_not_found. ``in_flight`` is written and committed *before* the request
leaves, and ``sent`` only from Voyado's answer: a crash at any moment leaves either a row Voyado
never saw (absent or failed) or an in-flight row the next run reconciles by looking it up.

Timestamps are ISO 8601 UTC strings, so the tables are the same on every warehouse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from voyado_sync.exceptions import LockError, StateError, WarehouseError
from voyado_sync.sqlexpr import col, ident, lit, literal, table

if TYPE_CHECKING:
    from voyado_sync.warehouse.base import Warehouse

LEDGER_VERSION = 1
DEFAULT_SCHEMA = "voyado_sync"


class Status(StrEnum):
    """Where a model row stands with Voyado (the ``status`` column of ``deliveries``)."""

    IN_FLIGHT = "in_flight"
    """Journaled before its request left; the outcome is not known yet."""
    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"
    """Not stored in Voyado; sent again on the next run."""
    CONTACT_NOT_FOUND = "contact_not_found"
    """Waiting for its contact to exist in Voyado; looked up again on later runs."""
    NOT_SENT = "not_sent"
    """Journaled, but the run stopped before its request left: sent on the next run. Not a
    failure: nothing was tried."""


class RunStatus(StrEnum):
    """The ``status`` column of ``runs``."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


#: Statuses whose rows are sent again on the next run without any change.
RETRYABLE = (Status.FAILED, Status.CONTACT_NOT_FOUND, Status.NOT_SENT)
#: Statuses ``voyado-sync rejected`` lists.
PROBLEMS = (Status.REJECTED, Status.FAILED, Status.CONTACT_NOT_FOUND, Status.IN_FLIGHT)
STALE_LOCK_SECONDS = 15 * 60

_DDL = {
    "deliveries": """
        CREATE TABLE IF NOT EXISTS t (
            model VARCHAR, schema_id VARCHAR, row_key VARCHAR, row_key_display VARCHAR,
            content_hash VARCHAR, status VARCHAR, interaction_id VARCHAR, contact_id VARCHAR,
            created_date VARCHAR, request_body VARCHAR, http_status INTEGER, error_code VARCHAR,
            reason VARCHAR, run_id VARCHAR, first_seen_at VARCHAR, updated_at VARCHAR
        )""",
    "runs": """
        CREATE TABLE IF NOT EXISTS t (
            run_id VARCHAR, started_at VARCHAR, finished_at VARCHAR, status VARCHAR,
            pid INTEGER, host VARCHAR, version VARCHAR, models VARCHAR, selected INTEGER,
            already_sent INTEGER, sent INTEGER, rejected INTEGER, failed INTEGER, message VARCHAR
        )""",
    "run_lock": """
        CREATE TABLE IF NOT EXISTS t (
            name VARCHAR PRIMARY KEY, run_id VARCHAR, pid INTEGER, host VARCHAR,
            acquired_at VARCHAR, heartbeat_at VARCHAR
        )""",
    "contacts": """
        CREATE TABLE IF NOT EXISTS t (
            key_type VARCHAR, key_value VARCHAR, contact_id VARCHAR, resolved_at VARCHAR
        )""",
    "ledger_version": "CREATE TABLE IF NOT EXISTS t (version INTEGER)",
}

DELIVERY_COLUMNS = (
    "model",
    "schema_id",
    "row_key",
    "row_key_display",
    "content_hash",
    "status",
    "interaction_id",
    "contact_id",
    "created_date",
    "request_body",
    "http_status",
    "error_code",
    "reason",
    "run_id",
    "first_seen_at",
    "updated_at",
)


def utc_now() -> str:
    """Now, as Voyado writes instants: ISO 8601 UTC with milliseconds and Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class RowRef:
    """Which ledger row: one model row's identity and the content it had when seen."""

    model: str
    schema_id: str
    row_key: str
    row_key_display: str
    content_hash: str
    #: When the ledger first saw this key; None for a row it has never held.
    first_seen_at: str | None


@dataclass(frozen=True)
class Delivery:
    """One ledger row: the last known state of one model row in Voyado.

    Build one with :meth:`journaled` (a request about to leave) or :meth:`of` (a row settled
    without a request), and move it on with the transitions, which return a new value.
    """

    model: str
    schema_id: str
    row_key: str
    row_key_display: str
    content_hash: str
    status: str
    run_id: str
    first_seen_at: str
    updated_at: str
    interaction_id: str | None = None
    contact_id: str | None = None
    created_date: str | None = None
    request_body: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    reason: str | None = None

    def body(self) -> dict[str, Any] | None:
        return json.loads(self.request_body) if self.request_body else None

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def of(cls, ref: RowRef, *, run_id: str, now: str) -> Delivery:
        """A row as this run first handles it (absent from Voyado); settle it with a
        transition before writing it."""
        return cls(
            model=ref.model,
            schema_id=ref.schema_id,
            row_key=ref.row_key,
            row_key_display=ref.row_key_display,
            content_hash=ref.content_hash,
            status=Status.IN_FLIGHT,
            run_id=run_id,
            first_seen_at=ref.first_seen_at or now,
            updated_at=now,
        )

    @classmethod
    def journaled(cls, ref: RowRef, body: Mapping[str, Any], *, run_id: str, now: str) -> Delivery:
        """In flight with the exact request body, written before the request leaves."""
        return dataclasses.replace(
            cls.of(ref, run_id=run_id, now=now),
            contact_id=str(body["contactId"]),
            created_date=str(body.get("createdDate")),
            request_body=json.dumps(body, separators=(",", ":")),
        )

    # -- transitions -----------------------------------------------------------------------

    def sent(self, interaction_id: str, *, now: str, reason: str | None = None) -> Delivery:
        """Voyado stored it (its answer, or found in Voyado after an unknown outcome)."""
        return self._to(
            Status.SENT, now, interaction_id=interaction_id, request_body=None, reason=reason
        )

    def rejected(
        self,
        reason: str,
        *,
        now: str,
        http_status: int | None = None,
        error_code: str | None = None,
    ) -> Delivery:
        """It cannot be sent as it is; tried again when its content changes."""
        return self._to(
            Status.REJECTED,
            now,
            reason=reason,
            http_status=http_status,
            error_code=error_code,
            request_body=None,
        )

    def failed(
        self,
        reason: str,
        *,
        now: str,
        http_status: int | None = None,
        error_code: str | None = None,
    ) -> Delivery:
        """Known not to be stored in Voyado: sent again on the next run."""
        return self._to(
            Status.FAILED, now, reason=reason, http_status=http_status, error_code=error_code
        )

    def waiting_for_contact(
        self, reason: str, *, now: str, http_status: int | None = 404
    ) -> Delivery:
        """Its contact does not exist in Voyado yet: looked up again on later runs."""
        return self._to(
            Status.CONTACT_NOT_FOUND,
            now,
            reason=reason,
            http_status=http_status,
            error_code="ContactNotFound",
        )

    def not_sent(self, *, now: str) -> Delivery:
        """The run stopped before the request left: as if never journaled, sent next run."""
        return self._to(
            Status.NOT_SENT,
            now,
            reason="not sent: the run stopped before this request left; sent on the next run",
            request_body=None,
        )

    def unknown(
        self,
        reason: str,
        *,
        now: str,
        http_status: int | None = None,
        error_code: str | None = None,
    ) -> Delivery:
        """The request left but no answer says whether Voyado stored it: stays in flight,
        with its body, so that a later run looks it up before anything is sent again."""
        return self._to(
            Status.IN_FLIGHT, now, reason=reason, http_status=http_status, error_code=error_code
        )

    def _to(self, status: Status, now: str, **changes: Any) -> Delivery:
        return dataclasses.replace(self, status=status, updated_at=now, **changes)


def _keys_by_target(deliveries: Sequence[Delivery]) -> dict[tuple[str, str], list[str]]:
    """The distinct row keys of each (model, schema_id), for the DELETE of an upsert."""
    groups: dict[tuple[str, str], dict[str, None]] = {}
    for d in deliveries:
        groups.setdefault((d.model, d.schema_id), {})[d.row_key] = None
    return {target: list(keys) for target, keys in groups.items()}


class Ledger:
    """Reads and writes the ledger tables of one warehouse, in schema ``schema``."""

    def __init__(self, warehouse: Warehouse, *, schema: str = DEFAULT_SCHEMA) -> None:
        self.warehouse = warehouse
        self.schema = schema
        self.dialect = warehouse.dialect
        self._array_statements: tuple[str, str] | None = None

    def table(self, name: str) -> exp.Table:
        return table(name, self.schema, self.warehouse.database)

    def _sql(self, expression: exp.Expr) -> str:
        return expression.sql(dialect=self.dialect)

    # -- set-up --------------------------------------------------------------------------------

    def exists(self) -> bool:
        info = exp.Table(
            this=exp.to_identifier("tables"), db=exp.to_identifier("information_schema")
        )
        query = (
            exp.select(exp.Count(this=exp.Star()))
            .from_(info)
            .where(
                exp.and_(
                    exp.func("lower", exp.column("table_schema")).eq(lit(self.schema.lower())),
                    exp.column("table_name").eq(lit("deliveries")),
                )
            )
        )
        return bool(self.warehouse.query(self._sql(query))[0][0])

    def ensure(self) -> None:
        """Create the ledger schema and tables on first use; refuse a newer ledger."""
        # Postgres and Redshift name one database per connection: no catalog before a schema.
        catalog = self.warehouse.database if self.dialect not in ("postgres", "redshift") else None
        schema = exp.Create(
            this=exp.Table(this=ident(self.schema), db=ident(catalog) if catalog else None),
            kind="SCHEMA",
            exists=True,
        )
        statements = [self._sql(schema)]
        for name, ddl in _DDL.items():
            create = sqlglot.parse_one(ddl, read="duckdb")
            create.find(exp.Table).replace(self.table(name))  # type: ignore[union-attr]
            statements.append(self._sql(create))
        self.warehouse.execute_many(statements)
        version_rows = self.warehouse.query(
            self._sql(exp.select("version").from_(self.table("ledger_version")))
        )
        if not version_rows:
            self.warehouse.execute(
                self._sql(
                    exp.insert(
                        exp.values([(exp.Literal.number(LEDGER_VERSION),)]),
                        self.table("ledger_version"),
                    )
                )
            )
        elif int(version_rows[0][0]) > LEDGER_VERSION:
            raise StateError(
                f"the ledger in schema {self.schema} was written by a newer voyado-sync "
                f"(ledger version {version_rows[0][0]}); upgrade voyado-sync"
            )

    # -- the run lock --------------------------------------------------------------------------

    def acquire_lock(self, run_id: str) -> None:
        """One run at a time per ledger. A lock left by a dead process is taken over."""
        host = socket.gethostname()
        row = (
            lit("ledger"),
            lit(run_id),
            exp.Literal.number(os.getpid()),
            lit(host),
            lit(utc_now()),
            lit(utc_now()),
        )
        insert = self._sql(exp.insert(exp.values([row]), self.table("run_lock")))
        try:
            self.warehouse.execute(insert)
            return
        except WarehouseError:
            pass
        holder = self.lock_holder()
        if holder is None or self._is_stale(holder):
            where = col("name").eq(lit("ledger"))
            self.warehouse.execute_many(
                [self._sql(exp.delete(self.table("run_lock"), where=where)), insert]
            )
            return
        raise LockError(
            f"another voyado-sync run ({holder['run_id']}, PID {holder['pid']} on "
            f"{holder['host']}, started {holder['acquired_at']}) holds the ledger in schema "
            f"{self.schema}: only one run at a time may write it. Wait for it to finish; if "
            "that process is gone for good, the lock is released automatically after "
            f"{STALE_LOCK_SECONDS // 60} minutes without a heartbeat."
        )

    def lock_holder(self) -> dict[str, Any] | None:
        rows = self.warehouse.query(
            self._sql(
                exp.select("run_id", "pid", "host", "acquired_at", "heartbeat_at").from_(
                    self.table("run_lock")
                )
            )
        )
        if not rows:
            return None
        keys = ("run_id", "pid", "host", "acquired_at", "heartbeat_at")
        return dict(zip(keys, rows[0], strict=True))

    @staticmethod
    def _is_stale(holder: dict[str, Any]) -> bool:
        if holder["host"] == socket.gethostname():
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        try:
            beat = datetime.fromisoformat(str(holder["heartbeat_at"]).replace("Z", "+00:00"))
        except ValueError:
            return True
        return (datetime.now(UTC) - beat).total_seconds() > STALE_LOCK_SECONDS

    def heartbeat(self, run_id: str) -> None:
        self.warehouse.execute(
            self._sql(
                exp.update(
                    self.table("run_lock"),
                    {"heartbeat_at": lit(utc_now())},
                    where=col("run_id").eq(lit(run_id)),
                )
            )
        )

    def release_lock(self, run_id: str) -> None:
        self.warehouse.execute(
            self._sql(exp.delete(self.table("run_lock"), where=col("run_id").eq(lit(run_id))))
        )

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, run_id: str, *, models: Sequence[str], version: str) -> None:
        values = {
            "run_id": run_id,
            "started_at": utc_now(),
            "status": RunStatus.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": version,
            "models": ",".join(models),
        }
        self.warehouse.execute(
            self._sql(
                exp.insert(
                    exp.values([tuple(literal(v) for v in values.values())]),
                    self.table("runs"),
                    columns=list(values),
                )
            )
        )

    def finish_run(
        self, run_id: str, *, status: RunStatus, counts: Mapping[str, int], message: str = ""
    ) -> None:
        changes: dict[str, Any] = {
            "finished_at": lit(utc_now()),
            "status": lit(status),
            "message": lit(message[:2000]),
        }
        for key in ("selected", "already_sent", "sent", "rejected", "failed"):
            changes[key] = exp.Literal.number(int(counts.get(key, 0)))
        self.warehouse.execute(
            self._sql(exp.update(self.table("runs"), changes, where=col("run_id").eq(lit(run_id))))
        )

    # -- deliveries ----------------------------------------------------------------------------

    def write(self, deliveries: Sequence[Delivery]) -> None:
        """Upsert ledger rows in one transaction (delete the keys, insert the new state)."""
        if not deliveries:
            return
        if self.warehouse.array_params:
            self._write_arrays(deliveries)
            return
        statements: list[str] = []
        for (model, schema_id), keys in _keys_by_target(deliveries).items():
            where = exp.and_(
                col("model").eq(lit(model)),
                col("schema_id").eq(lit(schema_id)),
                col("row_key").isin(*(lit(k) for k in keys)),
            )
            statements.append(self._sql(exp.delete(self.table("deliveries"), where=where)))
        rows = [tuple(literal(getattr(d, c)) for c in DELIVERY_COLUMNS) for d in deliveries]
        statements.append(
            self._sql(
                exp.insert(
                    exp.values(rows),
                    self.table("deliveries"),
                    columns=[ident(c) for c in DELIVERY_COLUMNS],
                )
            )
        )
        self.warehouse.execute_many(statements)

    def _write_arrays(self, deliveries: Sequence[Delivery]) -> None:
        # Every page is written twice (journal, then outcome): as literals, building and
        # parsing the SQL cost about 1 ms per row. Here the SQL is built once and each column
        # is bound as one array parameter: about 0.15 ms per row.
        delete, insert = self._array_sql()
        statements: list[tuple[str, Sequence[Any]]] = []
        for (model, schema_id), keys in _keys_by_target(deliveries).items():
            statements.append((delete, [model, schema_id, keys]))
        columns = [[getattr(d, c) for d in deliveries] for c in DELIVERY_COLUMNS]
        statements.append((insert, columns))
        self.warehouse.execute_params(statements)

    def _array_sql(self) -> tuple[str, str]:
        if self._array_statements is None:
            deliveries = self.table("deliveries")

            def unnest(column: str) -> exp.Expr:
                kind = "INT" if column == "http_status" else "VARCHAR"
                array = exp.DataType.build(f"ARRAY<{kind}>")
                return exp.Unnest(expressions=[exp.Cast(this=exp.Placeholder(), to=array)])

            where = exp.and_(
                col("model").eq(exp.Placeholder()),
                col("schema_id").eq(exp.Placeholder()),
                col("row_key").isin(query=exp.select(unnest("row_key"))),
            )
            insert = exp.insert(
                exp.select(*(unnest(c).as_(ident(c)) for c in DELIVERY_COLUMNS)),
                deliveries,
                columns=[ident(c) for c in DELIVERY_COLUMNS],
            )
            self._array_statements = (
                self._sql(exp.delete(deliveries, where=where)),
                self._sql(insert),
            )
        return self._array_statements

    def _select(self, where: exp.Expr, order: Iterable[str] = ()) -> list[Delivery]:
        query = exp.select(*DELIVERY_COLUMNS).from_(self.table("deliveries")).where(where)
        for name in order:
            query = query.order_by(name)
        rows = self.warehouse.query(self._sql(query))
        return [Delivery(**dict(zip(DELIVERY_COLUMNS, r, strict=True))) for r in rows]

    def in_flight(self, model: str, schema_id: str) -> list[Delivery]:
        """Rows a previous run journaled but never saw answered: their outcome is unknown."""
        return self._select(
            exp.and_(
                col("model").eq(lit(model)),
                col("schema_id").eq(lit(schema_id)),
                col("status").eq(lit(Status.IN_FLIGHT)),
            )
        )

    def sent_ids(self, schema_id: str, contact_ids: Sequence[str]) -> set[str]:
        """Voyado ids already claimed by sent rows of these contacts (never matched twice)."""
        if not contact_ids:
            return set()
        query = (
            exp.select("interaction_id")
            .from_(self.table("deliveries"))
            .where(
                exp.and_(
                    col("schema_id").eq(lit(schema_id)),
                    col("status").eq(lit(Status.SENT)),
                    col("contact_id").isin(*(lit(c) for c in contact_ids)),
                )
            )
        )
        return {str(r[0]) for r in self.warehouse.query(self._sql(query)) if r[0]}

    def problems(self, models: Sequence[str] = ()) -> list[Delivery]:
        """Rejected, failed and waiting rows, for ``voyado-sync rejected``."""
        where: exp.Expr = col("status").isin(*(lit(s) for s in PROBLEMS))
        if models:
            where = exp.and_(where, col("model").isin(*(lit(m) for m in models)))
        return self._select(where, order=("model", "row_key_display"))

    def sent_count(self, schema_id: str) -> int:
        """How many rows voyado-sync holds as stored in Voyado under ``schema_id``."""
        if not self.exists():
            return 0
        query = (
            exp.select(exp.Count(this=exp.Star()))
            .from_(self.table("deliveries"))
            .where(
                exp.and_(col("schema_id").eq(lit(schema_id)), col("status").eq(lit(Status.SENT)))
            )
        )
        rows = self.warehouse.query(self._sql(query))
        return int(rows[0][0]) if rows else 0

    # -- the contact cache ---------------------------------------------------------------------

    def cached_contacts(self, key: str, values: Sequence[str]) -> dict[str, str]:
        """Resolved contactIds of these identifiers (of contact key ``key``), where cached."""
        if not values:
            return {}
        query = (
            exp.select("key_value", "contact_id")
            .from_(self.table("contacts"))
            .where(self._contacts_where(key, values))
        )
        return {str(v): str(c) for v, c in self.warehouse.query(self._sql(query))}

    def cache_contacts(self, key: str, resolved: Mapping[str, str]) -> None:
        """Remember identifier -> contactId, replacing what was cached for them."""
        if not resolved:
            return
        contacts = self.table("contacts")
        now = utc_now()
        rows = [(lit(key), lit(v), lit(c), lit(now)) for v, c in resolved.items()]
        self.warehouse.execute_many(
            [
                self._sql(exp.delete(contacts, where=self._contacts_where(key, list(resolved)))),
                self._sql(exp.insert(exp.values(rows), contacts)),
            ]
        )

    def forget_contacts(self, key: str, values: Sequence[str]) -> None:
        """Drop cached ids Voyado no longer knows (the contact was merged or deleted)."""
        if not values:
            return
        self.warehouse.execute(
            self._sql(exp.delete(self.table("contacts"), where=self._contacts_where(key, values)))
        )

    @staticmethod
    def _contacts_where(key: str, values: Sequence[str]) -> exp.Expr:
        return exp.and_(
            col("key_type").eq(lit(key)), col("key_value").isin(*(lit(v) for v in values))
        )

    def count_in_flight(self, model: str, schema_id: str) -> int:
        """Rows of the model whose outcome is unknown (unverified)."""
        query = (
            exp.select(exp.Count(this=exp.Star()))
            .from_(self.table("deliveries"))
            .where(
                exp.and_(
                    col("model").eq(lit(model)),
                    col("schema_id").eq(lit(schema_id)),
                    col("status").eq(lit(Status.IN_FLIGHT)),
                )
            )
        )
        rows = self.warehouse.query(self._sql(query))
        return int(rows[0][0]) if rows else 0

    # -- run history, read-only (``voyado-sync runs`` and ``debug``) ----------------------------

    def version(self) -> int | None:
        """The ledger's version (:data:`LEDGER_VERSION` when written by this voyado-sync),
        or None when it has no version row."""
        rows = self.warehouse.query(
            self._sql(exp.select("version").from_(self.table("ledger_version")))
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first, each with the rows per model and status
        that it left in ``deliveries``.

        ``runs`` holds totals only; the per-model counts come from ``deliveries``, which keeps
        one row per model row with the run that last changed it. So a run's counts are the
        rows whose latest state it wrote: rows a later run settled again count for that run.
        """
        columns = _RUN_COLUMNS
        query = (
            exp.select(*columns)
            .from_(self.table("runs"))
            .order_by(exp.Ordered(this=col("started_at"), desc=True))
            .limit(max(1, int(limit)))
        )
        runs = [
            dict(zip(columns, row, strict=True)) for row in self.warehouse.query(self._sql(query))
        ]
        counts: dict[str, dict[str, dict[str, int]]] = {}
        if runs:
            per_model = (
                exp.select("run_id", "model", "status", exp.Count(this=exp.Star()))
                .from_(self.table("deliveries"))
                .where(col("run_id").isin(*(lit(str(r["run_id"])) for r in runs)))
                .group_by("run_id", "model", "status")
            )
            for run_id, model, status, n in self.warehouse.query(self._sql(per_model)):
                by_model = counts.setdefault(str(run_id), {})
                by_model.setdefault(str(model), {})[str(status)] = int(n)
        return [
            RunRecord(
                run_id=str(r["run_id"]),
                started_at=_text(r["started_at"]),
                finished_at=_text(r["finished_at"]),
                status=str(r["status"] or ""),
                pid=int(r["pid"]) if r["pid"] is not None else None,
                host=_text(r["host"]),
                version=_text(r["version"]),
                models=tuple(m for m in str(r["models"] or "").split(",") if m),
                totals={k: int(r[k] or 0) for k in RUN_TOTALS},
                message=_text(r["message"]),
                by_model=counts.get(str(r["run_id"]), {}),
            )
            for r in runs
        ]

    def last_finished_run(self, *, excluding: str | None = None) -> dict[str, Any] | None:
        """The latest finished run in ``runs`` other than ``excluding``: its ``run_id``,
        ``status``, ``finished_at``, ``rejected`` and ``failed``; None without a ledger or a
        finished run. Read-only: it creates nothing."""
        if not self.exists():
            return None
        keys = ("run_id", "status", "finished_at", "rejected", "failed")
        where: exp.Expr = exp.Not(this=exp.Is(this=col("finished_at"), expression=exp.null()))
        if excluding:
            where = exp.and_(where, col("run_id").neq(lit(excluding)))
        query = (
            exp.select(*(col(k) for k in keys))
            .from_(self.table("runs"))
            .where(where)
            .order_by(exp.Ordered(this=col("finished_at"), desc=True))
            .limit(1)
        )
        rows = self.warehouse.query(self._sql(query))
        return dict(zip(keys, rows[0], strict=True)) if rows else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


_RUN_COLUMNS = (
    "run_id",
    "started_at",
    "finished_at",
    "status",
    "pid",
    "host",
    "version",
    "models",
    "selected",
    "already_sent",
    "sent",
    "rejected",
    "failed",
    "message",
)
#: The totals ``runs`` keeps per run.
RUN_TOTALS = ("selected", "already_sent", "sent", "rejected", "failed")


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs`` with, per model, the rows it left in each delivery status."""

    run_id: str
    started_at: str | None
    finished_at: str | None
    status: str
    pid: int | None
    host: str | None
    version: str | None
    models: tuple[str, ...]
    totals: dict[str, int]
    message: str | None
    #: model -> status -> rows whose latest ledger state this run wrote.
    by_model: dict[str, dict[str, int]]

    @property
    def seconds(self) -> float | None:
        """How long the run took; None while it runs (or when it died without finishing)."""
        if not self.started_at or not self.finished_at:
            return None
        try:
            start = datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))
            end = datetime.fromisoformat(self.finished_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (end - start).total_seconds()

    # -- the previous run, for alerts (read-only) ----------------------------------------------
