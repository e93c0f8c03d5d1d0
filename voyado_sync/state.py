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
    in_flight (left by a crash) --found--> sent | --absent, the matcher proven--> resent

Identity: a row is (Voyado environment, schema_id, row key). ``model`` and ``relation`` record
which model and relation last wrote the entry; they are not part of the identity, so a renamed
model (same schema_id, same key) keeps its history, and models that share a schema_id share one
key space (``validate`` says so). ``environment`` is the normalised base URL of the Voyado the
entry is about (:func:`environment_of`): a row delivered to a staging tenant or the emulator is
not delivered to production. Entries written before ledger version 3 have no environment and
count for whichever Voyado the ledger is used with. The contact cache records the environment
too (version 4): a contact id is used only against the Voyado that gave it.

Rows that never leave (a NULL key, a contact that cannot be found) go from absent straight to
rejected or contact_not_found. ``in_flight`` is written and committed *before* the request
leaves, and ``sent`` only from Voyado's answer: a crash at any moment leaves either a row Voyado
never saw (absent or failed) or an in-flight row the next run reconciles by looking it up.

Timestamps are ISO 8601 UTC strings, so the tables are the same on every warehouse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlglot import exp

from voyado_sync.exceptions import LockError, StateError, WarehouseError
from voyado_sync.sqlexpr import col, ident, lit, literal, table
from voyado_sync.warehouse.dialects import dialect_of

if TYPE_CHECKING:
    from voyado_sync.spec import InteractionModel
    from voyado_sync.warehouse.base import Warehouse

LEDGER_VERSION = 5
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
    REPLAY = "replay"
    """Was sent, but ``schemas upgrade`` deletes (or deleted) its schema, and with it the
    interaction: sent again by the upgrade's replay with its original createdDate. The entry
    keeps the previous interaction id for the record."""
    BASELINED = "baselined"
    """There before the model's first sync, which was told not to send it (``first_run``):
    never sent, as if it had been."""
    DELETING = "deleting"
    """A mirror model's interaction whose DELETE is about to leave or had no clear answer:
    journaled, with its interaction id, before the request; deleted again by the next run
    until Voyado answers (a 404 means already gone). Its key is not sent meanwhile."""
    DELETED = "deleted"
    """A mirror model's row whose interaction Voyado no longer holds (its key left the model,
    or its content changed and it is sent again). Sent again when its key comes back."""


class RunStatus(StrEnum):
    """The ``status`` column of ``runs``."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


#: Statuses whose rows are sent again on the next run without any change.
RETRYABLE = (
    Status.FAILED,
    Status.CONTACT_NOT_FOUND,
    Status.NOT_SENT,
    Status.REPLAY,
    Status.DELETED,
)
#: Statuses of an upgrade's rows that it has still to replay (sent again by its replay).
REPLAY_OPEN = (Status.REPLAY, Status.IN_FLIGHT, Status.FAILED, Status.NOT_SENT)
#: Statuses of rows Voyado holds (or, baselined, is taken to hold): not sent again while the
#: row is unchanged (append models: whatever changes).
DONE = (Status.SENT, Status.BASELINED)
#: Statuses ``voyado-sync rejected`` lists.
PROBLEMS = (
    Status.REJECTED,
    Status.FAILED,
    Status.CONTACT_NOT_FOUND,
    Status.IN_FLIGHT,
    Status.DELETING,
)
#: A claim whose holder has been silent this long is taken over (when its process cannot be
#: checked). The holder renews it every LOCK_RENEW_SECONDS from a timer, whatever the run is
#: waiting for (a long Retry-After, a slow statement), so silence means gone or frozen.
STALE_LOCK_SECONDS = 15 * 60
LOCK_RENEW_SECONDS = 30.0
#: The journal's order: every entry a run writes gets the next number (state.py's Ledger).
ENTRY_SEQ = "entry_seq"

_TEXT, _INT, _BIGINT = "text", "int", "bigint"
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
    "environment",
    "relation",
)

# Every ledger table: (column, type). Created and referenced with quoted names, so a name
# means the same on every warehouse whatever it folds unquoted names to. No keys: Snowflake,
# BigQuery, Redshift and Databricks do not enforce them, and Spark cannot even declare them.
_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "deliveries": (
        *((c, _INT if c == "http_status" else _TEXT) for c in DELIVERY_COLUMNS),
        (ENTRY_SEQ, _BIGINT),
    ),
    "runs": (
        ("run_id", _TEXT),
        ("started_at", _TEXT),
        ("finished_at", _TEXT),
        ("status", _TEXT),
        ("pid", _INT),
        ("host", _TEXT),
        ("version", _TEXT),
        ("models", _TEXT),
        ("selected", _INT),
        ("already_sent", _INT),
        ("sent", _INT),
        ("rejected", _INT),
        ("failed", _INT),
        ("message", _TEXT),
        (ENTRY_SEQ, _BIGINT),
    ),
    "run_claims": (
        ("run_id", _TEXT),
        ("pid", _INT),
        ("host", _TEXT),
        ("claimed_at", _TEXT),
        ("heartbeat_at", _TEXT),
        ("state", _TEXT),
        ("supersedes", _TEXT),
        ("entry_n", _INT),
    ),
    "contacts": (
        ("key_type", _TEXT),
        ("key_value", _TEXT),
        ("contact_id", _TEXT),
        ("resolved_at", _TEXT),
        (ENTRY_SEQ, _BIGINT),
        # The Voyado the contact id belongs to (ledger version 4): a staging tenant's ids are
        # not production's.
        ("environment", _TEXT),
    ),
    "ledger_version": (("version", _INT),),
    # Each model's first sync for a schema_id (ledger version 5): ``started`` with the
    # first_run policy it runs under, then ``completed`` once a run went through all its rows.
    # Until then every run is that first sync, under the same policy.
    "first_syncs": (
        ("model", _TEXT),
        ("schema_id", _TEXT),
        ("environment", _TEXT),
        ("state", _TEXT),
        ("policy", _TEXT),
        ("run_id", _TEXT),
        ("updated_at", _TEXT),
        (ENTRY_SEQ, _BIGINT),
    ),
    # The rows an upgrade replays (ledger version 5), written before they are marked
    # ``replay``: which rows it replayed, lost or has still to replay is read from them.
    "upgrade_rows": (
        ("schema_id", _TEXT),
        ("upgrade_id", _TEXT),
        ("model", _TEXT),
        ("row_key", _TEXT),
        ("marked_at", _TEXT),
    ),
    # schemas upgrade's progress (upgrade.py): one journal of phases per (schema, base URL).
    "schema_upgrades": (
        ("schema_id", _TEXT),
        ("base_url", _TEXT),
        ("phase", _TEXT),
        ("run_id", _TEXT),
        ("planned", _INT),
        ("deleted_with_schema", _INT),
        ("old_definition", _TEXT),
        ("new_definition", _TEXT),
        ("started_at", _TEXT),
        ("updated_at", _TEXT),
        ("message", _TEXT),
        (ENTRY_SEQ, _BIGINT),
    ),
}
#: Columns earlier ledger versions lacked, added on first use: (version, table, column, type).
_ADDED = (
    (2, "deliveries", ENTRY_SEQ, _BIGINT),
    (2, "runs", ENTRY_SEQ, _BIGINT),
    (2, "contacts", ENTRY_SEQ, _BIGINT),
    (3, "deliveries", "environment", _TEXT),
    (3, "deliveries", "relation", _TEXT),
    (4, "contacts", "environment", _TEXT),
)
#: The states of a first sync (table ``first_syncs``).
FIRST_SYNC_STARTED = "started"
FIRST_SYNC_COMPLETED = "completed"
#: How a journal's rows are identified (the partition of :func:`latest_entries`).
DELIVERY_IDENTITY = ("schema_id", "row_key")


def environment_of(base_url: str) -> str:
    """The Voyado environment a base URL names, spelled one way: lower-case scheme and host,
    no default port, no trailing ``/`` or ``/api/v3``. ``https://Acme.voyado.com:443/`` and
    ``https://acme.voyado.com/api/v3`` are one environment."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("https", 443), ("http", 80)):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api/v3"):
        path = path[: -len("/api/v3")]
    return f"{scheme}://{host}{path}"


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
    #: The model's relation (recorded, not part of the identity).
    relation: str | None = None


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
    #: The Voyado this entry is about (set by the ledger when written; see environment_of).
    environment: str | None = None
    relation: str | None = None

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
            relation=ref.relation,
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

    @classmethod
    def baselined(cls, ref: RowRef, *, run_id: str, now: str, reason: str) -> Delivery:
        """A row of a first sync told not to send it (``first_run``): never sent."""
        return cls.of(ref, run_id=run_id, now=now)._to(Status.BASELINED, now, reason=reason)

    def deleting(self, *, run_id: str, now: str, reason: str) -> Delivery:
        """A mirror model's sent row whose interaction is about to be deleted: written and
        committed before the DELETE leaves, with the interaction id it deletes."""
        return self._to(
            Status.DELETING,
            now,
            run_id=run_id,
            reason=reason,
            request_body=None,
            http_status=None,
            error_code=None,
        )

    def deleted(self, *, now: str, reason: str, http_status: int | None = None) -> Delivery:
        """Voyado no longer holds its interaction (answered the DELETE, or 404: gone)."""
        return self._to(Status.DELETED, now, reason=reason, http_status=http_status)

    def delete_unsettled(
        self,
        reason: str,
        *,
        now: str,
        http_status: int | None = None,
        error_code: str | None = None,
    ) -> Delivery:
        """The DELETE got no clear answer or was refused: still deleting, tried again by the
        next run; its key is not sent meanwhile."""
        return self._to(
            Status.DELETING, now, reason=reason, http_status=http_status, error_code=error_code
        )

    def _to(self, status: Status, now: str, **changes: Any) -> Delivery:
        return dataclasses.replace(self, status=status, updated_at=now, **changes)


def create_table_sql(name: str, schema: str, dialect: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of ledger table ``name``, every name quoted."""
    create = exp.Create(
        this=exp.Schema(
            this=table(name, schema),
            expressions=[
                exp.ColumnDef(this=ident(c), kind=exp.DataType.build(t)) for c, t in _TABLES[name]
            ],
        ),
        kind="TABLE",
        exists=True,
    )
    return create.sql(dialect=dialect)


def latest_entries(
    journal: exp.Table,
    columns: Sequence[str],
    keys: Sequence[str],
    *,
    where: exp.Expr | None = None,
) -> exp.Select:
    """The latest entry of each key of a journal table: its current state.

    Entries are ordered by ``entry_seq``; an entry without one (written by ledger version 1,
    which kept one row per key) is older than any numbered entry.
    """
    order = exp.Coalesce(this=col(ENTRY_SEQ), expressions=[exp.Literal.number(-1)])
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[col(k) for k in keys],
        order=exp.Order(expressions=[exp.Ordered(this=order, desc=True)]),
    )
    inner = exp.select(*(col(c) for c in columns), exp.alias_(rank, "__vs_rank", quoted=True))
    inner = inner.from_(journal.copy())
    if where is not None:
        inner = inner.where(where)
    return (
        exp.select(*(col(c) for c in columns))
        .from_(inner.subquery(ident("e")))
        .where(col("__vs_rank").eq(exp.Literal.number(1)))
    )


def _last_per_key(deliveries: Sequence[Delivery]) -> list[Delivery]:
    # One entry per key and statement: the journal orders entries by statement, not within one.
    last: dict[tuple[str, str], Delivery] = {}
    for d in deliveries:
        last[(d.schema_id, d.row_key)] = d
    return list(last.values())


def _keys_by_schema(deliveries: Sequence[Delivery]) -> dict[str, list[str]]:
    """The distinct row keys of each schema_id."""
    groups: dict[str, dict[str, None]] = {}
    for d in deliveries:
        groups.setdefault(d.schema_id, {})[d.row_key] = None
    return {schema_id: list(keys) for schema_id, keys in groups.items()}


def environment_scope(environment: str | None, alias: str | None = None) -> exp.Expr:
    """Entries about ``environment``: its own and those written before environments were
    recorded (NULL). None: every environment."""
    if environment is None:
        return exp.true()
    column = col("environment", alias)
    return exp.or_(column.eq(lit(environment)), column.is_(exp.null()))


@dataclass(frozen=True)
class History:
    """What the ledger holds of one model (its latest entries), for the first-run and
    mass-send guards."""

    #: Rows under the model's schema_id in any status.
    entries: int
    #: Of those, rows Voyado holds (sent).
    sent: int
    #: Rows of the model sent under another schema_id (its history, sent again if synced).
    other_schemas_sent: int
    #: Whether a run of this model went through all its rows for this schema_id (table
    #: ``first_syncs``); None where that table is missing (a dry run on an older ledger),
    #: where having entries stands for it.
    completed: bool | None = None
    #: The first_run policy an unfinished first sync started with ("" for none): its next
    #: run goes on under it when neither the YAML nor ``--first-run`` chooses.
    started_with: str | None = None

    @property
    def first_sync(self) -> bool:
        """A model's first sync for its schema_id: until one of its runs has gone through
        every row, so a first sync killed midway is still the first sync when run again."""
        if self.completed is None:
            return self.entries == 0
        return not self.completed


def _count_if(condition: exp.Expr) -> exp.Expr:
    """How many rows meet ``condition`` (0 when none)."""
    hit = exp.Case(ifs=[exp.If(this=condition, true=exp.Literal.number(1))])
    return exp.Coalesce(
        this=exp.Sum(this=hit.else_(exp.Literal.number(0))),
        expressions=[exp.Literal.number(0)],
    )


@dataclass(frozen=True)
class SchemaHistory:
    """What the ledger holds as sent under one schema, for ``schemas upgrade``."""

    #: Rows sent: the interactions voyado-sync sent that deleting the schema destroys.
    sent: int
    #: Of those, rows no model using the schema holds any more: lost for good by a delete.
    lost: int
    #: Of those, rows gone from a mirror model: deleted with the schema, not history.
    gone: int

    @property
    def to_replay(self) -> int:
        return self.sent - self.lost - self.gone


_ACTIVE = ("claim", "renew")
_SUPERSEDED_N = 2_000_000_000  # sorts after every entry the superseded run itself writes


@dataclass(frozen=True)
class Claim:
    """The latest entry of one run's claim on the ledger (table ``run_claims``)."""

    run_id: str
    pid: int
    host: str
    claimed_at: str
    heartbeat_at: str
    state: str
    supersedes: tuple[str, ...]
    entry_n: int

    @property
    def active(self) -> bool:
        return self.state in _ACTIVE

    def gone(self) -> bool:
        """Whether its holder is provably gone: a dead process on this host, or (elsewhere,
        where the process cannot be checked) silent far longer than the renewal timer allows.

        A live process on this host is never gone, however long it has been silent.
        """
        if self.host == socket.gethostname():
            try:
                os.kill(int(self.pid), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, OverflowError, ValueError):
                return False
            return False
        try:
            beat = datetime.fromisoformat(self.heartbeat_at.replace("Z", "+00:00"))
        except ValueError:
            return True
        return (datetime.now(UTC) - beat).total_seconds() > STALE_LOCK_SECONDS

    def describe(self) -> str:
        return (
            f"{self.run_id}, PID {self.pid} on {self.host}, started {self.claimed_at}, "
            f"last heard of {self.heartbeat_at}"
        )


_CLAIM_COLUMNS = tuple(c for c, _ in _TABLES["run_claims"])


class Ledger:
    """Reads and writes the ledger tables of one warehouse, in schema ``schema``.

    Every table is an append-only journal: a write is one INSERT of new entries, and a key's
    latest entry (by ``entry_seq``) is its state. One INSERT is applied whole or not at all on
    every warehouse, so a failed statement or a crash between two statements loses no state
    and causes no resend, with or without multi-statement transactions. Where DELETE exists,
    the entries a write superseded are removed after it (in the same transaction where there
    are transactions); were that to fail, the latest entry still wins.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        *,
        schema: str = DEFAULT_SCHEMA,
        environment: str | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.schema = schema
        #: The Voyado this ledger's reads and writes are about (environment_of); None reads
        #: every environment (``rejected``, ``runs``).
        self.environment = environment
        self.dialect = warehouse.dialect
        self.quirks = dialect_of(warehouse.dialect)
        self._array_statements: tuple[str, str] | None = None
        self._seq: int | None = None
        #: The run holding the lock through this ledger (None: not locked, e.g. a dry run).
        self.run_id: str | None = None
        self._claim: dict[str, Any] | None = None
        self._renewed_at = 0.0
        self._runs: dict[str, dict[str, Any]] = {}

    def table(self, name: str) -> exp.Table:
        # No catalog: the connection's own database is the target's on every adapter, and the
        # profile's database name need not be rendered (its case and quoting vary).
        return table(name, self.schema)

    def staging_table(self, model: InteractionModel | str, step: str) -> exp.Table:
        """The staging table of one diff step of this run (see ``diff.staged_name``)."""
        from voyado_sync.diff import staged_name

        if self.run_id is None:
            raise StateError("staging needs the ledger's lock (no run holds it here)")
        return self.table(staged_name(model, step, self.run_id))

    def _sql(self, expression: exp.Expr) -> str:
        return expression.sql(dialect=self.dialect)

    # -- set-up --------------------------------------------------------------------------------

    def tables(self) -> set[str] | None:
        """The (lower-case) names of the tables in the ledger schema; None if it is missing."""
        try:
            rows = self.warehouse.query(self.quirks.tables_sql(self.schema))
        except WarehouseError:
            if self.quirks.missing_is_error():
                return None
            raise
        return self.quirks.tables_from(rows)

    def exists(self) -> bool:
        return "deliveries" in (self.tables() or set())

    def ensure(self) -> None:
        """Create the ledger schema and tables on first use; refuse a newer ledger."""
        schema = exp.Create(this=exp.Table(this=ident(self.schema)), kind="SCHEMA", exists=True)
        statements = [self._sql(schema)]
        statements += [create_table_sql(name, self.schema, self.dialect) for name in _TABLES]
        for statement in statements:
            self.warehouse.execute(statement)
        version = self._version()
        if version is None:
            self._insert("ledger_version", [(exp.Literal.number(LEDGER_VERSION),)], ["version"])
        elif version > LEDGER_VERSION:
            raise StateError(
                f"the ledger in schema {self.schema} was written by a newer voyado-sync "
                f"(ledger version {version}); upgrade voyado-sync"
            )
        elif version < LEDGER_VERSION:
            self._migrate(version)

    def _version(self) -> int | None:
        rows = self.warehouse.query(
            self._sql(exp.select(exp.Max(this=col("version"))).from_(self.table("ledger_version")))
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def _migrate(self, version: int) -> None:
        # Version 1 kept one row per key (its entries sort first) and locked with a primary
        # key (run_lock, no longer read); version 3 records the environment and relation.
        for added_in, name, column, kind in _ADDED:
            if version >= added_in:
                continue
            present = self.warehouse.columns_of(self.table(name)) or {}
            if column not in {c.lower() for c in present}:
                alter = exp.Alter(
                    this=self.table(name),
                    kind="TABLE",
                    actions=[exp.ColumnDef(this=ident(column), kind=exp.DataType.build(kind))],
                )
                self.warehouse.execute(self._sql(alter))
        if version < 5:
            # Every model that has entries under a schema had its first sync before first
            # syncs were recorded: later runs are later runs, as they were.
            self.warehouse.execute(self._completed_before_sql())
        self._insert("ledger_version", [(exp.Literal.number(LEDGER_VERSION),)], ["version"])

    def _completed_before_sql(self) -> str:
        values = {
            "model": col("model"),
            "schema_id": col("schema_id"),
            "environment": col("environment"),
            "state": lit(FIRST_SYNC_COMPLETED),
            "policy": exp.null(),
            "run_id": exp.null(),
            "updated_at": lit(utc_now()),
            ENTRY_SEQ: exp.Literal.number(0),
        }
        names = [c for c, _ in _TABLES["first_syncs"]]
        select = (
            exp.select(*(exp.alias_(values[c], c, quoted=True) for c in names))
            .distinct()
            .from_(self.table("deliveries"))
        )
        return self._sql(
            exp.insert(select, self.table("first_syncs"), columns=[ident(c) for c in names])
        )

    def _insert(
        self, name: str, rows: Sequence[tuple[exp.Expr, ...]], columns: Sequence[str]
    ) -> str:
        statement = self._sql(
            exp.insert(
                exp.values(list(rows)), self.table(name), columns=[ident(c) for c in columns]
            )
        )
        self.warehouse.execute(statement)
        return statement

    def _insert_sql(
        self, name: str, rows: Sequence[tuple[exp.Expr, ...]], columns: Sequence[str]
    ) -> str:
        return self._sql(
            exp.insert(
                exp.values(list(rows)), self.table(name), columns=[ident(c) for c in columns]
            )
        )

    # -- the journal's order -------------------------------------------------------------------

    def _next_seq(self, n: int) -> int:
        """The first of ``n`` new entry numbers. Runs are serialised by the lock, and each reads
        the highest number written so far, so entries are ordered without trusting clocks."""
        if self._seq is None:
            self._seq = 0
            for name in ("deliveries", "contacts", "runs", "first_syncs"):
                rows = self.warehouse.query(
                    self._sql(exp.select(exp.Max(this=col(ENTRY_SEQ))).from_(self.table(name)))
                )
                if rows and rows[0][0] is not None:
                    self._seq = max(self._seq, int(rows[0][0]))
        first = self._seq + 1
        self._seq += n
        return first

    # -- the run lock --------------------------------------------------------------------------
    #
    # No warehouse but DuckDB and PostgreSQL enforces a key, so the lock is a protocol over an
    # append-only table: refuse if another live claim exists; write a claim; read the claims
    # back; proceed only if yours is the only live one (so the oldest), otherwise withdraw and
    # refuse. Two runs cannot both proceed: each read its claims after writing its own, so the
    # later of the two reads sees the other's claim. (Two that start at the same instant may
    # both refuse; neither sends.) A claim is renewed on a timer and checked before every page;
    # one is taken over only when its holder is provably gone (Claim.gone), and the taker marks
    # it superseded, which the old holder finds at its next check or renewal.

    def _claims(self) -> dict[str, Claim]:
        rows = self.warehouse.query(
            self._sql(exp.select(*(col(c) for c in _CLAIM_COLUMNS)).from_(self.table("run_claims")))
        )
        latest: dict[str, Claim] = {}
        for r in rows:
            values = dict(zip(_CLAIM_COLUMNS, r, strict=True))
            claim = Claim(
                run_id=str(values["run_id"]),
                pid=int(values["pid"] or 0),
                host=str(values["host"] or ""),
                claimed_at=str(values["claimed_at"] or ""),
                heartbeat_at=str(values["heartbeat_at"] or ""),
                state=str(values["state"] or ""),
                supersedes=tuple(s for s in str(values["supersedes"] or "").split(",") if s),
                entry_n=int(values["entry_n"] or 0),
            )
            held = latest.get(claim.run_id)
            if held is None or claim.entry_n >= held.entry_n:
                latest[claim.run_id] = claim
        return latest

    def _live_others(self, run_id: str) -> list[Claim]:
        live = [
            c for c in self._claims().values() if c.run_id != run_id and c.active and not c.gone()
        ]
        return sorted(live, key=lambda c: (c.claimed_at, c.run_id))

    def _claim_entry(self, state: str, *, run_id: str | None = None, n: int | None = None) -> None:
        claim = self._claim
        assert claim is not None
        if n is None:
            claim["entry_n"] += 1
        values = {
            **claim,
            "run_id": run_id or claim["run_id"],
            "heartbeat_at": utc_now(),
            "state": state,
            "entry_n": n if n is not None else claim["entry_n"],
        }
        self._insert(
            "run_claims", [tuple(literal(values[c]) for c in _CLAIM_COLUMNS)], _CLAIM_COLUMNS
        )

    def _refusal(self, holder: Claim) -> LockError:
        return LockError(
            f"another voyado-sync run ({holder.describe()}) holds the ledger in schema "
            f"{self.schema}: only one run at a time may write it. Wait for it to finish; a "
            "claim is taken over only when its process is gone (on this host) or has been "
            f"silent for {STALE_LOCK_SECONDS // 60} minutes (elsewhere)."
        )

    def acquire_lock(self, run_id: str) -> None:
        """One run at a time per ledger; refuse (LockError) while another live run holds it."""
        others = self._live_others(run_id)
        if others:
            raise self._refusal(others[0])
        gone = sorted(c.run_id for c in self._claims().values() if c.active and c.run_id != run_id)
        now = utc_now()
        self._claim = {
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "claimed_at": now,
            "heartbeat_at": now,
            "state": "claim",
            "supersedes": ",".join(gone),
            "entry_n": 0,
        }
        self._claim_entry("claim", n=0)
        others = self._live_others(run_id)
        if others:
            self._claim_entry("withdrawn")
            self._claim = None
            raise self._refusal(others[0])
        for old in gone:  # the old holder finds this at its next check and stops
            self._claim_entry("superseded", run_id=old, n=_SUPERSEDED_N)
        self.run_id = run_id
        self._seq = None  # read the journal's highest number now that no one else writes
        self._renewed_at = time.monotonic()
        self._drop_stale_staging()

    def check_lock(self) -> None:
        """Raise LockError unless this run still holds the lock (before every page)."""
        if self.run_id is None:
            return
        claims = self._claims()
        mine = claims.get(self.run_id)
        if mine is None or not mine.active:
            raise LockError(
                f"this run ({self.run_id}) no longer holds the ledger in schema {self.schema}: "
                "another run took it over after this one was silent for "
                f"{STALE_LOCK_SECONDS // 60} minutes. Stopping before sending anything more; "
                "the rows in flight are reconciled by the next run."
            )

    def renew_lock(self, run_id: str) -> None:
        """Renew this run's claim (the timer calls this); LockError if it was taken over."""
        if self.run_id != run_id or self._claim is None:
            return
        self.check_lock()
        self._claim_entry("renew")
        self._renewed_at = time.monotonic()

    def heartbeat(self, run_id: str) -> None:
        """Renew the claim unless the timer did so recently (called after pages)."""
        if time.monotonic() - self._renewed_at >= LOCK_RENEW_SECONDS:
            self.renew_lock(run_id)

    def lock_holder(self) -> dict[str, Any] | None:
        """The oldest live claim on the ledger, or None."""
        live = self._live_others("")
        if not live:
            return None
        c = live[0]
        return {
            "run_id": c.run_id,
            "pid": c.pid,
            "host": c.host,
            "acquired_at": c.claimed_at,
            "heartbeat_at": c.heartbeat_at,
        }

    def release_lock(self, run_id: str) -> None:
        if self.run_id != run_id or self._claim is None:
            return
        self._drop_staging_of(run_id)
        self._claim_entry("released")
        superseded = [s for s in str(self._claim["supersedes"]).split(",") if s]
        self.run_id, self._claim = None, None
        if self.quirks.deletes:
            # Tidy: nobody needs a released claim or the ones it superseded. Best effort.
            gone = [run_id, *superseded]
            with contextlib.suppress(WarehouseError):
                self.warehouse.execute(
                    self._sql(
                        exp.delete(
                            self.table("run_claims"),
                            where=col("run_id").isin(*(lit(r) for r in gone)),
                        )
                    )
                )

    # -- staging tables ------------------------------------------------------------------------

    def _drop_stale_staging(self) -> None:
        """Drop the staging tables runs that are gone left behind (a SIGKILL, a takeover)."""
        from voyado_sync.diff import STAGING_PREFIX

        mine = self.staging_table("x", "y").name.split("_")[2]
        for name in sorted(self.tables() or ()):
            if name.startswith(STAGING_PREFIX) and name.split("_")[2] != mine:
                with contextlib.suppress(WarehouseError):
                    self.warehouse.execute(self._drop(name))

    def _drop_staging_of(self, run_id: str) -> None:
        from voyado_sync.diff import STAGING_PREFIX

        mine = self.staging_table("x", "y").name.split("_")[2]
        with contextlib.suppress(WarehouseError):
            for name in sorted(self.tables() or ()):
                if name.startswith(f"{STAGING_PREFIX}{mine}_"):
                    self.warehouse.execute(self._drop(name))

    def _drop(self, name: str) -> str:
        return self._sql(exp.Drop(tables=[self.table(name)], kind="TABLE", exists=True))

    # -- runs ----------------------------------------------------------------------------------

    _RUN_COLUMNS = tuple(c for c, _ in _TABLES["runs"])

    def start_run(self, run_id: str, *, models: Sequence[str], version: str) -> None:
        values: dict[str, Any] = {
            "run_id": run_id,
            "started_at": utc_now(),
            "status": RunStatus.RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": version,
            "models": ",".join(models),
        }
        self._runs[run_id] = values
        self._write_run(values)

    def finish_run(
        self, run_id: str, *, status: RunStatus, counts: Mapping[str, int], message: str = ""
    ) -> None:
        values = dict(self._runs.get(run_id) or {"run_id": run_id})
        values.update(finished_at=utc_now(), status=status, message=message[:2000])
        for key in ("selected", "already_sent", "sent", "rejected", "failed"):
            values[key] = int(counts.get(key, 0))
        self._write_run(values)

    def _write_run(self, values: Mapping[str, Any]) -> None:
        seq = self._next_seq(1)
        row = {**values, ENTRY_SEQ: seq}
        statements = [
            self._insert_sql(
                "runs",
                [tuple(literal(row.get(c)) for c in self._RUN_COLUMNS)],
                self._RUN_COLUMNS,
            )
        ]
        if self.quirks.deletes:
            statements.append(
                self._superseded_delete("runs", col("run_id").eq(lit(values["run_id"])), seq)
            )
        self.warehouse.execute_many(statements)

    def run_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The runs table, newest first: each run's latest entry (start, or its finish)."""
        latest = latest_entries(self.table("runs"), self._RUN_COLUMNS, ("run_id",))
        query = (
            exp.select(exp.Star())
            .from_(latest.subquery(ident("r")))
            .order_by(exp.Ordered(this=col("started_at"), desc=True))
        )
        if limit:
            query = query.limit(limit)
        rows = self.warehouse.query(self._sql(query))
        return [dict(zip(self._RUN_COLUMNS, r, strict=True)) for r in rows]

    def _superseded_delete(self, name: str, where: exp.Expr, first_seq: int) -> str:
        older = exp.or_(
            exp.LT(this=col(ENTRY_SEQ), expression=exp.Literal.number(first_seq)),
            col(ENTRY_SEQ).is_(exp.null()),
        )
        return self._sql(exp.delete(self.table(name), where=exp.and_(where, older)))

    # -- deliveries ----------------------------------------------------------------------------

    def write(self, deliveries: Sequence[Delivery]) -> None:
        """Append the new state of these rows to the journal: one INSERT (then, where DELETE
        exists, remove the entries it superseded)."""
        if not deliveries:
            return
        # Entries are about this ledger's environment (None: no environment recorded, as
        # before ledger version 3; only tests and tools that never send write so).
        entries = [
            dataclasses.replace(d, environment=self.environment)
            if self.environment is not None and d.environment != self.environment
            else d
            for d in _last_per_key(deliveries)
        ]
        first = self._next_seq(len(entries))
        if self.warehouse.array_params:
            self._write_arrays(entries, first)
            return
        rows = [
            (*(literal(getattr(d, c)) for c in DELIVERY_COLUMNS), exp.Literal.number(first + i))
            for i, d in enumerate(entries)
        ]
        statements = [self._insert_sql("deliveries", rows, (*DELIVERY_COLUMNS, ENTRY_SEQ))]
        if self.quirks.deletes:
            for schema_id, keys in _keys_by_schema(entries).items():
                where = exp.and_(
                    self.scope(schema_id), col("row_key").isin(*(lit(k) for k in keys))
                )
                statements.append(self._superseded_delete("deliveries", where, first))
        self.warehouse.execute_many(statements)

    def _write_arrays(self, entries: Sequence[Delivery], first: int) -> None:
        # Every page is written twice (journal, then outcome): as literals, building and
        # parsing the SQL cost about 1 ms per row. Here the SQL is built once and each column
        # is bound as one array parameter: about 0.15 ms per row.
        insert, delete = self._array_sql()
        columns: list[list[Any]] = [[getattr(d, c) for d in entries] for c in DELIVERY_COLUMNS]
        columns.append([first + i for i in range(len(entries))])
        statements: list[tuple[str, Sequence[Any]]] = [(insert, columns)]
        for schema_id, keys in _keys_by_schema(entries).items():
            statements.append((delete, [self.environment, schema_id, keys, first]))
        self.warehouse.execute_params(statements)

    def _array_sql(self) -> tuple[str, str]:
        if self._array_statements is None:
            deliveries = self.table("deliveries")

            def unnest(column: str) -> exp.Expr:
                kind = {"http_status": "INT", ENTRY_SEQ: "BIGINT"}.get(column, "VARCHAR")
                array = exp.DataType.build(f"ARRAY<{kind}>")
                return exp.Unnest(expressions=[exp.Cast(this=exp.Placeholder(), to=array)])

            every = (*DELIVERY_COLUMNS, ENTRY_SEQ)
            insert = exp.insert(
                exp.select(*(unnest(c).as_(ident(c)) for c in every)),
                deliveries,
                columns=[ident(c) for c in every],
            )
            where = exp.and_(
                exp.or_(
                    col("environment").eq(exp.Placeholder()), col("environment").is_(exp.null())
                ),
                col("schema_id").eq(exp.Placeholder()),
                col("row_key").isin(query=exp.select(unnest("row_key"))),
                exp.or_(
                    exp.LT(this=col(ENTRY_SEQ), expression=exp.Placeholder()),
                    col(ENTRY_SEQ).is_(exp.null()),
                ),
            )
            self._array_statements = (
                self._sql(insert),
                self._sql(exp.delete(deliveries, where=where)),
            )
        return self._array_statements

    def scope(self, schema_id: str) -> exp.Expr:
        """This schema's entries about this ledger's environment."""
        return exp.and_(col("schema_id").eq(lit(schema_id)), environment_scope(self.environment))

    def _latest_deliveries(self, where: exp.Expr | None = None) -> exp.Subquery:
        """The current entry of each row: per (schema_id, row key) within this environment;
        with no environment, per environment too."""
        if self.environment is not None:
            scoped = environment_scope(self.environment)
            where = scoped if where is None else exp.and_(where, scoped)
            identity: tuple[str, ...] = DELIVERY_IDENTITY
        else:
            identity = (*DELIVERY_IDENTITY, "environment")
        return latest_entries(
            self.table("deliveries"), DELIVERY_COLUMNS, identity, where=where
        ).subquery(ident("d"))

    def _select(
        self, within: exp.Expr | None, where: exp.Expr, order: Iterable[str] = ()
    ) -> list[Delivery]:
        query = exp.select(*(col(c) for c in DELIVERY_COLUMNS))
        query = query.from_(self._latest_deliveries(within)).where(where)
        for name in order:
            query = query.order_by(col(name))
        rows = self.warehouse.query(self._sql(query))
        return [Delivery(**dict(zip(DELIVERY_COLUMNS, r, strict=True))) for r in rows]

    def in_flight(self, model: str, schema_id: str) -> list[Delivery]:
        """Rows a previous run journaled but never saw answered: their outcome is unknown."""
        return self._select(
            col("schema_id").eq(lit(schema_id)), col("status").eq(lit(Status.IN_FLIGHT))
        )

    def deleting(self, model: str, schema_id: str) -> list[Delivery]:
        """A mirror model's rows whose DELETE a previous run journaled and never saw settled."""
        return self._select(
            col("schema_id").eq(lit(schema_id)), col("status").eq(lit(Status.DELETING))
        )

    def history(self, model: str, schema_id: str) -> History:
        """What the ledger holds for this model in this environment: the rows under
        ``schema_id`` (none: its first sync; a renamed model keeps its schema's history),
        those sent, and the model's rows sent under other schema ids."""
        names = self.tables() or set()
        if "deliveries" not in names:
            return History(0, 0, 0)
        mine = col("schema_id").eq(lit(schema_id))
        sent = col("status").eq(lit(Status.SENT))

        of_model = col("model").eq(lit(model))
        query = exp.select(
            _count_if(mine),
            _count_if(exp.and_(mine, sent)),
            _count_if(exp.and_(mine.copy().not_(), of_model, sent.copy())),
        ).from_(self._latest_deliveries(exp.or_(mine.copy(), of_model.copy())))
        rows = self.warehouse.query(self._sql(query))
        entries, sent_n, other = rows[0] if rows else (0, 0, 0)
        completed, started_with = (
            self._first_sync(model, schema_id) if "first_syncs" in names else (None, None)
        )
        return History(
            int(entries or 0), int(sent_n or 0), int(other or 0), completed, started_with
        )

    def _first_sync(self, model: str, schema_id: str) -> tuple[bool, str | None]:
        """(completed, the policy the latest start recorded) of this model's first sync."""
        query = (
            exp.select(col("state"), col("policy"))
            .from_(self.table("first_syncs"))
            .where(
                exp.and_(
                    col("model").eq(lit(model)),
                    col("schema_id").eq(lit(schema_id)),
                    environment_scope(self.environment),
                )
            )
            .order_by(col(ENTRY_SEQ))
        )
        completed, started_with = False, None
        for state, policy in self.warehouse.query(self._sql(query)):
            if state == FIRST_SYNC_COMPLETED:
                completed = True
            elif state == FIRST_SYNC_STARTED:
                started_with = str(policy or "")
        return completed, started_with

    def record_first_sync(
        self, model: str, schema_id: str, *, state: str, policy: str, run_id: str
    ) -> None:
        """Journal that this model's first sync for ``schema_id`` started (with ``policy``,
        "" for none) or completed."""
        values = {
            "model": model,
            "schema_id": schema_id,
            "environment": self.environment,
            "state": state,
            "policy": policy,
            "run_id": run_id,
            "updated_at": utc_now(),
            ENTRY_SEQ: self._next_seq(1),
        }
        names = [c for c, _ in _TABLES["first_syncs"]]
        self._insert("first_syncs", [tuple(literal(values[c]) for c in names)], names)

    def sent_ids(self, schema_id: str, contact_ids: Sequence[str]) -> set[str]:
        """Voyado ids already claimed by sent rows of these contacts (never matched twice)."""
        if not contact_ids:
            return set()
        # ``sent`` is final, so any sent entry counts; no ranking needed.
        query = (
            exp.select(col("interaction_id"))
            .from_(self.table("deliveries"))
            .where(
                exp.and_(
                    self.scope(schema_id),
                    col("status").eq(lit(Status.SENT)),
                    col("contact_id").isin(*(lit(c) for c in contact_ids)),
                )
            )
        )
        return {str(r[0]) for r in self.warehouse.query(self._sql(query)) if r[0]}

    def a_sent_interaction(self, schema_id: str) -> tuple[str, str, str] | None:
        """(contact id, schema id, interaction id) of the row held as sent under ``schema_id``
        the longest (its latest entry): Voyado's listing of that contact must show it. The
        echo self-check's fallback when a run has accepted nothing yet."""
        query = (
            exp.select(col("contact_id"), col("interaction_id"))
            .from_(self._latest_deliveries(col("schema_id").eq(lit(schema_id))))
            .where(
                exp.and_(
                    col("status").eq(lit(Status.SENT)),
                    col("contact_id").is_(exp.null()).not_(),
                    col("interaction_id").is_(exp.null()).not_(),
                )
            )
            .order_by(col("updated_at"))
            .limit(1)
        )
        rows = self.warehouse.query(self._sql(query))
        if not rows or not rows[0][0] or not rows[0][1]:
            return None
        return str(rows[0][0]), schema_id, str(rows[0][1])

    def problems(self, models: Sequence[str] = ()) -> list[Delivery]:
        """Rejected, failed and waiting rows, for ``voyado-sync rejected``."""
        within = col("model").isin(*(lit(m) for m in models)) if models else None
        return self._select(
            within,
            col("status").isin(*(lit(s) for s in PROBLEMS)),
            order=("model", "row_key_display"),
        )

    def sent_count(self, schema_id: str, status: Status = Status.SENT) -> int:
        """How many rows voyado-sync holds as stored in Voyado under ``schema_id`` (or, with
        ``status``, in that status)."""
        if not self.exists():
            return 0
        query = (
            exp.select(exp.Count(this=exp.Star()))
            .from_(self._latest_deliveries(col("schema_id").eq(lit(schema_id))))
            .where(col("status").eq(lit(status)))
        )
        rows = self.warehouse.query(self._sql(query))
        return int(rows[0][0]) if rows else 0

    # -- the contact cache ---------------------------------------------------------------------

    _CONTACT_COLUMNS = ("key_type", "key_value", "contact_id", "resolved_at")

    def cached_contacts(
        self, key: str, values: Sequence[str], *, since: str | None = None
    ) -> dict[str, str]:
        """Resolved contactIds of these identifiers (of contact key ``key``), where cached
        (with ``since``, an ISO instant: only those resolved at or after it)."""
        if not values:
            return {}
        latest = latest_entries(
            self.table("contacts"),
            self._CONTACT_COLUMNS,
            ("key_type", "key_value"),
            where=self._contacts_where(key, values),
        )
        query = (
            exp.select(col("key_value"), col("contact_id"))
            .from_(latest.subquery(ident("c")))
            .where(col("contact_id").is_(exp.null()).not_())
        )
        if since is not None:
            query = query.where(exp.GTE(this=col("resolved_at"), expression=lit(since)))
        return {str(v): str(c) for v, c in self.warehouse.query(self._sql(query))}

    def cache_contacts(self, key: str, resolved: Mapping[str, str]) -> None:
        """Remember identifier -> contactId, replacing what was cached for them."""
        self._write_contacts(key, dict(resolved))

    def forget_contacts(self, key: str, values: Sequence[str]) -> None:
        """Drop cached ids Voyado no longer knows (the contact was merged or deleted)."""
        self._write_contacts(key, dict.fromkeys(values))

    def _write_contacts(self, key: str, entries: Mapping[str, str | None]) -> None:
        if not entries:
            return
        now = utc_now()
        first = self._next_seq(len(entries))
        env = literal(self.environment)
        rows = [
            (lit(key), lit(v), literal(c), lit(now), exp.Literal.number(first + i), env.copy())
            for i, (v, c) in enumerate(entries.items())
        ]
        columns = (*self._CONTACT_COLUMNS, ENTRY_SEQ, "environment")
        statements = [self._insert_sql("contacts", rows, columns)]
        if self.quirks.deletes:
            statements.append(
                self._superseded_delete("contacts", self._contacts_where(key, list(entries)), first)
            )
        self.warehouse.execute_many(statements)

    def _contacts_where(self, key: str, values: Sequence[str]) -> exp.Expr:
        """These identifiers' entries about this ledger's Voyado: an entry written before
        ledger version 4 (no environment) is not trusted, so it is looked up again once."""
        where = exp.and_(
            col("key_type").eq(lit(key)), col("key_value").isin(*(lit(v) for v in values))
        )
        if self.environment is None:
            return where
        return exp.and_(where, col("environment").eq(lit(self.environment)))

    def count_in_flight(self, model: str, schema_id: str) -> int:
        """Rows of the model whose outcome is unknown (unverified): their latest entry."""
        query = (
            exp.select(exp.Count(this=exp.Star()))
            .from_(self._latest_deliveries(col("schema_id").eq(lit(schema_id))))
            .where(col("status").eq(lit(Status.IN_FLIGHT)))
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
        # On an append-only ledger (Spark) a run has several entries: its latest wins.
        query = (
            exp.select(*columns)
            .from_(self.table("runs"))
            .order_by(
                exp.Ordered(this=col("started_at"), desc=True),
                exp.Ordered(this=col("entry_seq"), desc=True),
            )
            .limit(max(1, int(limit)) * 4)
        )
        seen: dict[str, dict[str, Any]] = {}
        for row in self.warehouse.query(self._sql(query)):
            entry = dict(zip(columns, row, strict=True))
            seen.setdefault(str(entry["run_id"]), entry)
        runs = list(seen.values())[: max(1, int(limit))]
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

    # -- schema upgrades (upgrade.py; ``schemas upgrade``) -------------------------------------
    #
    # An upgrade deletes a schema (and every interaction under it) and replays its history.
    # Its progress is a journal in ``schema_upgrades``; the rows to replay are marked in
    # ``deliveries`` (status replay) before the schema is deleted, so a process killed at any
    # moment leaves a ledger that says what is left to do.

    _UPGRADE_COLUMNS = tuple(c for c, _ in _TABLES["schema_upgrades"] if c != ENTRY_SEQ)

    def _upgrades(self, where: exp.Expr) -> list[SchemaUpgrade]:
        if "schema_upgrades" not in (self.tables() or set()):
            return []
        latest = latest_entries(
            self.table("schema_upgrades"),
            self._UPGRADE_COLUMNS,
            ("schema_id", "base_url"),
            where=where,
        )
        rows = self.warehouse.query(self._sql(latest))
        return [SchemaUpgrade.of(dict(zip(self._UPGRADE_COLUMNS, r, strict=True))) for r in rows]

    def upgrade_of(self, schema_id: str, base_url: str) -> SchemaUpgrade | None:
        """The latest state of the upgrade of ``schema_id`` in the Voyado at ``base_url``."""
        found = self._upgrades(
            exp.and_(col("schema_id").eq(lit(schema_id)), col("base_url").eq(lit(base_url)))
        )
        return found[0] if found else None

    def unfinished_upgrades(self, base_url: str) -> dict[str, SchemaUpgrade]:
        """Schema id -> its upgrade, for the upgrades in ``base_url`` that are not done."""
        return {
            u.schema_id: u
            for u in self._upgrades(col("base_url").eq(lit(base_url)))
            if u.phase != UpgradePhase.DONE
        }

    def record_upgrade(self, upgrade: SchemaUpgrade) -> None:
        """Append the upgrade's new state (one INSERT; superseded entries removed after)."""
        top = self.warehouse.query(
            self._sql(exp.select(exp.Max(this=col(ENTRY_SEQ))).from_(self.table("schema_upgrades")))
        )
        seq = (int(top[0][0]) if top and top[0][0] is not None else 0) + 1
        values = dataclasses.asdict(upgrade)
        columns = (*self._UPGRADE_COLUMNS, ENTRY_SEQ)
        row = (*(literal(values[c]) for c in self._UPGRADE_COLUMNS), exp.Literal.number(seq))
        statements = [self._insert_sql("schema_upgrades", [row], columns)]
        if self.quirks.deletes:
            where = exp.and_(
                col("schema_id").eq(lit(upgrade.schema_id)),
                col("base_url").eq(lit(upgrade.base_url)),
            )
            statements.append(self._superseded_delete("schema_upgrades", where, seq))
        self.warehouse.execute_many(statements)

    def _schema_rows(self, schema_id: str) -> exp.Subquery:
        return self._latest_deliveries(col("schema_id").eq(lit(schema_id)))

    def schema_history(self, schema_id: str, models: Sequence[InteractionModel]) -> SchemaHistory:
        """What deleting ``schema_id`` costs: the rows the ledger holds as sent under it, those
        no row (same key) of ``models`` holds any more and that a delete would lose for good
        (nothing could send them again), and those gone from a mirror model (their
        interaction is to be deleted anyway: not history). A row is its schema_id and key
        (module docstring), whichever of the models holds it."""
        kept, mirrored = self._kept(models)
        gone = exp.and_(exp.paren(kept).not_(), exp.paren(mirrored))
        lost = exp.and_(exp.paren(kept.copy()).not_(), exp.paren(mirrored.copy()).not_())

        query = (
            exp.select(
                exp.Count(this=exp.Star()),
                _count_if(lost),
                _count_if(gone),
            )
            .from_(self._schema_rows(schema_id))
            .where(col("status").eq(lit(Status.SENT)))
        )
        rows = self.warehouse.query(self._sql(query))
        sent, lost_n, gone_n = rows[0] if rows else (0, 0, 0)
        return SchemaHistory(int(sent or 0), int(lost_n or 0), int(gone_n or 0))

    def _kept(self, models: Sequence[InteractionModel]) -> tuple[exp.Expr, exp.Expr]:
        """(the row's key is a row of one of ``models``, the row was written by one of them
        that is a mirror model)."""
        from voyado_sync.diff import row_key, source_table

        kept: exp.Expr = exp.false()
        for model in models:
            keys = exp.select(row_key(model)).from_(source_table(model, self.warehouse.dialect))
            kept = exp.or_(kept, col("row_key").isin(query=keys))
        mirrors = [m.model for m in models if m.mirror]
        mirrored: exp.Expr = (
            col("model").isin(*(lit(m) for m in mirrors)) if mirrors else exp.false()
        )
        return kept, mirrored

    def _upgrade_keys(self, upgrade_id: str) -> exp.Select:
        return (
            exp.select(col("row_key"))
            .from_(self.table("upgrade_rows"))
            .where(col("upgrade_id").eq(lit(upgrade_id)))
        )

    def mark_for_replay(
        self, schema_id: str, models: Sequence[InteractionModel], *, run_id: str
    ) -> int:
        """The upgrade ``run_id``'s history: every row sent under ``schema_id`` that is still
        a row of ``models`` is recorded in ``upgrade_rows``, then becomes ``replay`` (its
        interaction id, contact id and createdDate kept), each in one INSERT ... SELECT;
        the superseded entries are removed after. Idempotent: run again after a crash at any
        point, it records and marks what is left. Returns how many rows the upgrade replays."""
        kept, _ = self._kept(models)
        now = utc_now()
        tracked = (
            exp.select(exp.Literal.number(1))
            .from_(self.table("upgrade_rows").as_(ident("u")))
            .where(
                exp.and_(
                    col("upgrade_id", "u").eq(lit(run_id)),
                    col("row_key", "u").eq(col("row_key", "d")),
                )
            )
        )
        record = exp.insert(
            exp.select(
                exp.alias_(lit(schema_id), "schema_id", quoted=True),
                exp.alias_(lit(run_id), "upgrade_id", quoted=True),
                col("model", "d"),
                col("row_key", "d"),
                exp.alias_(lit(now), "marked_at", quoted=True),
            )
            .from_(self._schema_rows(schema_id))
            .where(
                exp.and_(
                    col("status", "d").eq(lit(Status.SENT)),
                    exp.paren(kept),
                    exp.Not(this=exp.Exists(this=tracked)),
                )
            ),
            self.table("upgrade_rows"),
            columns=[ident(c) for c, _ in _TABLES["upgrade_rows"]],
        )
        self.warehouse.execute(self._sql(record))
        mine = col("row_key").isin(query=self._upgrade_keys(run_id))
        self._mark(
            schema_id,
            run_id,
            mine,
            now,
            status=Status.REPLAY,
            reason=f"replay: interaction schema {schema_id} is being upgraded (deleted with its "
            "interactions and created again); interaction_id is the one it had before",
        )
        # Rows gone from a mirror model are not history: deleted with the schema, recorded so
        # (the replay's mirror run must not delete them again, nor count them as live).
        _, mirrored = self._kept(models)
        kept_again, _ = self._kept(models)
        self._mark(
            schema_id,
            run_id,
            exp.and_(exp.paren(kept_again).not_(), exp.paren(mirrored)),
            now,
            status=Status.DELETED,
            reason=f"deleted with interaction schema {schema_id} by schemas upgrade: the row "
            "had left its mirror model, so it was not replayed",
        )
        total = self.warehouse.query(
            self._sql(
                exp.select(exp.Count(this=exp.Star()))
                .from_(self.table("upgrade_rows"))
                .where(col("upgrade_id").eq(lit(run_id)))
            )
        )
        return int(total[0][0] or 0) if total else 0

    def _left(self, models: Sequence[InteractionModel], upgrade_id: str) -> exp.Expr:
        kept, _ = self._kept(models)
        return exp.and_(
            col("row_key").isin(query=self._upgrade_keys(upgrade_id)), exp.paren(kept).not_()
        )

    _STRANDABLE = (Status.REPLAY, Status.FAILED, Status.NOT_SENT)

    def left_rows(
        self,
        schema_id: str,
        models: Sequence[InteractionModel],
        *,
        upgrade_id: str,
        history_only: bool = False,
    ) -> int:
        """An upgrade's rows still to replay (not in flight) whose key has left every model
        since they were marked; ``history_only``: not counting mirror models' rows."""
        where = exp.and_(
            col("status").isin(*(lit(s) for s in self._STRANDABLE)), self._left(models, upgrade_id)
        )
        if history_only:
            _, mirrored = self._kept(models)
            where = exp.and_(where, exp.paren(mirrored).not_())
        query = exp.select(exp.Count(this=exp.Star())).from_(self._schema_rows(schema_id))
        rows = self.warehouse.query(self._sql(query.where(where)))
        return int(rows[0][0] or 0) if rows else 0

    def strand_left_rows(
        self, schema_id: str, models: Sequence[InteractionModel], *, upgrade_id: str
    ) -> int:
        """Record the :meth:`left_rows` ``deleted``: nothing can replay them (Voyado lost them
        with the schema; sent again if the key comes back). A mirror model's rows among them
        are not history and are no longer the upgrade's. Returns how many were recorded."""
        n = self._mark(
            schema_id,
            upgrade_id,
            self._left(models, upgrade_id),
            utc_now(),
            status=Status.DELETED,
            reason=f"left the model during the upgrade of interaction schema {schema_id}, "
            "before its replay: deleted with the schema, not replayed",
            among=self._STRANDABLE,
        )
        mirrors = [m.model for m in models if m.mirror]
        if mirrors and self.quirks.deletes:
            # Every time, not only when rows were just recorded: a crash may have come
            # between the two statements.
            kept, _ = self._kept(models)
            deleted = (
                exp.select(col("row_key"))
                .from_(self._schema_rows(schema_id))
                .where(col("status").eq(lit(Status.DELETED)))
            )
            self.warehouse.execute(
                self._sql(
                    exp.delete(
                        self.table("upgrade_rows"),
                        where=exp.and_(
                            col("upgrade_id").eq(lit(upgrade_id)),
                            col("model").isin(*(lit(m) for m in mirrors)),
                            exp.paren(kept).not_(),
                            col("row_key").isin(query=deleted),
                        ),
                    )
                )
            )
        return n

    def _mark(
        self,
        schema_id: str,
        run_id: str,
        where: exp.Expr,
        now: str,
        *,
        status: Status,
        reason: str,
        among: Sequence[Status] = (Status.SENT,),
    ) -> int:
        """Rows of ``schema_id`` whose latest entry is in ``among`` and that meet ``where``
        get a new entry in ``status`` (interaction id, contact id and createdDate kept): one
        INSERT ... SELECT, then the superseded entries removed. Returns how many."""
        current = exp.and_(col("status").isin(*(lit(s) for s in among)), where)
        count = exp.select(exp.Count(this=exp.Star())).from_(self._schema_rows(schema_id))
        rows = self.warehouse.query(self._sql(count.where(current.copy())))
        n = int(rows[0][0] or 0) if rows else 0
        if not n:
            return 0
        first = self._next_seq(n)
        replaced = {
            "status": lit(status),
            "request_body": exp.null(),
            "http_status": exp.null(),
            "error_code": exp.null(),
            "reason": lit(reason),
            "run_id": lit(run_id),
            "updated_at": lit(now),
        }
        if self.environment is not None:
            replaced["environment"] = lit(self.environment)
        number = exp.Window(
            this=exp.RowNumber(),
            order=exp.Order(
                expressions=[exp.Ordered(this=col("model")), exp.Ordered(this=col("row_key"))]
            ),
        )
        select = (
            exp.select(
                *(exp.alias_(replaced.get(c, col(c)), c, quoted=True) for c in DELIVERY_COLUMNS),
                exp.alias_(
                    exp.Add(this=number, expression=exp.Literal.number(first - 1)),
                    ENTRY_SEQ,
                    quoted=True,
                ),
            )
            .from_(self._schema_rows(schema_id))
            .where(current)
        )
        insert = exp.insert(
            select,
            self.table("deliveries"),
            columns=[ident(c) for c in (*DELIVERY_COLUMNS, ENTRY_SEQ)],
        )
        statements = [self._sql(insert)]
        if self.quirks.deletes:
            # Not correlated: a subquery naming the DELETE's own table is read differently
            # by different warehouses.
            newer = (
                exp.select(col("row_key", "r"))
                .from_(self.table("deliveries").as_(ident("r")))
                .where(
                    exp.and_(
                        col("schema_id", "r").eq(lit(schema_id)),
                        col("status", "r").eq(lit(status)),
                        exp.GTE(this=col(ENTRY_SEQ, "r"), expression=exp.Literal.number(first)),
                    )
                )
            )
            statements.append(
                self._superseded_delete(
                    "deliveries",
                    exp.and_(self.scope(schema_id), col("row_key").isin(query=newer)),
                    first,
                )
            )
        self.warehouse.execute_many(statements)
        return n

    def replay_statuses(self, upgrade: SchemaUpgrade) -> dict[str, int]:
        """Where the rows of ``upgrade`` stand, by latest status: ``sent`` is replayed;
        ``replay``, ``in_flight``, ``failed`` and ``not_sent`` are still to replay
        (:data:`REPLAY_OPEN`); anything else (rejected, contact_not_found, deleted) is history
        Voyado no longer holds. An upgrade recorded without its rows (before ledger version
        5: it planned rows but ``upgrade_rows`` holds none) counts every row of the schema in
        the open statuses."""
        schema_id, upgrade_id = upgrade.schema_id, upgrade.run_id
        tracked = 0
        if "upgrade_rows" in (self.tables() or set()):
            counted = self.warehouse.query(
                self._sql(
                    exp.select(exp.Count(this=exp.Star()))
                    .from_(self.table("upgrade_rows"))
                    .where(col("upgrade_id").eq(lit(upgrade_id)))
                )
            )
            tracked = int(counted[0][0] or 0) if counted else 0
            if not tracked and not upgrade.planned:
                return {}
        query = exp.select(col("status"), exp.Count(this=exp.Star())).from_(
            self._schema_rows(schema_id)
        )
        if tracked:
            query = query.where(col("row_key").isin(query=self._upgrade_keys(upgrade_id)))
        else:
            query = query.where(col("status").isin(*(lit(s) for s in REPLAY_OPEN)))
        query = query.group_by(col("status"))
        return {str(s): int(n) for s, n in self.warehouse.query(self._sql(query))}

    def awaiting_replay(self, upgrade: SchemaUpgrade) -> dict[str, int]:
        """Rows of ``upgrade`` not replayed yet, by status (:data:`REPLAY_OPEN`). Statuses
        without rows are left out."""
        statuses = self.replay_statuses(upgrade)
        return {s: n for s, n in statuses.items() if s in REPLAY_OPEN}

    def recorded_created_dates(
        self, model: str, schema_id: str, row_keys: Sequence[str]
    ) -> dict[str, str]:
        """Row key -> the createdDate the ledger recorded for it (its latest entry), for an
        upgrade's replay: an interaction is sent again with the createdDate it had."""
        if not row_keys:
            return {}
        within = exp.and_(
            col("schema_id").eq(lit(schema_id)), col("row_key").isin(*(lit(k) for k in row_keys))
        )
        query = (
            exp.select(col("row_key"), col("created_date"))
            .from_(self._latest_deliveries(within))
            .where(col("created_date").is_(exp.null()).not_())
        )
        return {
            str(k): str(d)
            for k, d in self.warehouse.query(self._sql(query))
            if d and str(d) != "None"
        }


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


# -- schema upgrades ----------------------------------------------------------------------------


class UpgradePhase(StrEnum):
    """Where ``schemas upgrade`` stands (the ``phase`` column of ``schema_upgrades``)::

    marked --(schema deleted)--> deleted --(created again)--> recreated
      --(replay run started)--> replaying --(nothing left to replay)--> done
    """

    MARKED = "marked"
    """Confirmed; every sent row of the schema is marked ``replay``; not deleted yet."""
    DELETED = "deleted"
    RECREATED = "recreated"
    REPLAYING = "replaying"
    DONE = "done"


@dataclass(frozen=True)
class SchemaUpgrade:
    """One entry of ``schema_upgrades``: an upgrade's state in one Voyado environment."""

    schema_id: str
    base_url: str
    phase: str
    run_id: str
    #: Rows marked for replay (the interactions the delete destroys that voyado-sync sent).
    planned: int
    deleted_with_schema: int
    #: The schema as Voyado held it before, and as the project defines it (JSON).
    old_definition: str
    new_definition: str
    started_at: str
    updated_at: str
    message: str = ""

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> SchemaUpgrade:
        def text(name: str) -> str:
            return str(values.get(name) or "")

        return cls(
            schema_id=text("schema_id"),
            base_url=text("base_url"),
            phase=text("phase"),
            run_id=text("run_id"),
            planned=int(values.get("planned") or 0),
            deleted_with_schema=int(values.get("deleted_with_schema") or 0),
            old_definition=text("old_definition"),
            new_definition=text("new_definition"),
            started_at=text("started_at"),
            updated_at=text("updated_at"),
            message=text("message"),
        )

    def at(self, phase: UpgradePhase, *, message: str = "") -> SchemaUpgrade:
        return dataclasses.replace(self, phase=phase, updated_at=utc_now(), message=message)
