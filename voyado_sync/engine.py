"""manifest -> warehouse -> diff -> validate -> journal -> send -> ledger. Never prints.

The only module that knows every layer. Warehouse calls run on one dedicated thread (dbt's
connections belong to the thread that opened them) so that ledger writes never stall the
HTTP requests in flight on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from voyado_sync import __version__
from voyado_sync import diff as sql
from voyado_sync.config import VoyadoConnection, check_rate, connection_from_env
from voyado_sync.contacts import ContactCache, Normalised, normalise
from voyado_sync.exceptions import (
    ApiError,
    ConfigError,
    ConfigProblem,
    FatalApiError,
    RowRejected,
    VoyadoSyncError,
)
from voyado_sync.manifest import Manifest, ModelNode, load_manifest, manifest_path
from voyado_sync.payload import PayloadBuilder
from voyado_sync.schemas import describe_drift
from voyado_sync.spec import InteractionModel, VoyadoSpec, check_project_rules, parse_spec, resolve
from voyado_sync.state import DEFAULT_SCHEMA, Delivery, Ledger, new_run_id, utc_now
from voyado_sync.voyado import (
    ContactAmbiguous,
    ContactFound,
    ContactInvalid,
    ContactNotFound,
    Delivered,
    DeliveryOutcome,
    Failed,
    LookupOutcome,
    Rejected,
    RetryPolicy,
    VoyadoClient,
)
from voyado_sync.warehouse.base import Warehouse

T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``voyado-sync run`` can be told."""

    project_dir: Path = Path(".")
    profiles_dir: Path | None = None
    target: str | None = None
    target_path: str | None = None
    select: tuple[str, ...] = ()
    dry_run: bool = False
    state_schema: str = DEFAULT_SCHEMA
    base_url: str | None = None
    rate: float = 40.0
    concurrency: int | None = None
    retry_rejected: bool = False
    page_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0


@dataclass
class ModelResult:
    """What one model's sync did. Counts are rows of the model unless said otherwise."""

    model: str
    schema_id: str
    selected: int = 0
    already_sent: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    waiting: int = 0
    previously_rejected: int = 0
    reconciled: int = 0
    schema_created: bool = False
    lookups: int = 0
    lookups_cached: int = 0
    #: Rows whose contact identifier was changed before lookup, by kind of change.
    normalised: dict[str, int] = field(default_factory=dict)
    #: Cached contact ids dropped because Voyado answered a POST with 404 ContactNotFound.
    invalidated: int = 0
    error: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def count_normalised(self, change: str | None) -> None:
        if change:
            self.normalised[change] = self.normalised.get(change, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "schema_id": self.schema_id,
            "selected": self.selected,
            "already_sent": self.already_sent,
            "sent": self.sent,
            "rejected": self.rejected,
            "failed": self.failed,
            "contact_not_found": self.waiting,
            "previously_rejected": self.previously_rejected,
            "reconciled": self.reconciled,
            "schema_created": self.schema_created,
            "contact_lookups": self.lookups,
            "contact_lookups_cached": self.lookups_cached,
            "contacts_normalised": dict(self.normalised),
            "contact_ids_invalidated": self.invalidated,
            "error": self.error,
        }
        if self.samples:
            out["samples"] = self.samples
        if self.reasons:
            out["reasons"] = self.reasons
        return out


@dataclass
class SyncResult:
    """The typed result of one run."""

    run_id: str
    dry_run: bool
    models: list[ModelResult]
    warehouse: str = ""
    interrupted: bool = False
    fatal: str | None = None
    requests: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.fatal or any(m.error for m in self.models):
            return 2
        # Rows waiting for their contact are neither rejected nor failed: they are retried by
        # design on later runs, so they alone do not fail a scheduled job.
        if self.interrupted or any(m.rejected or m.failed for m in self.models):
            return 1
        return 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "warehouse": self.warehouse,
            "interrupted": self.interrupted,
            "error": self.fatal,
            "exit_code": self.exit_code,
            "models": [m.as_dict() for m in self.models],
            "requests": self.requests,
        }


ProgressCallback = Callable[[str, int, int], None]


# -- loading the project ----------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    manifest: Manifest
    nodes: list[ModelNode]
    specs: dict[str, VoyadoSpec]


def load_project(project_dir: Path, *, target_path: str | None, select: Sequence[str]) -> Project:
    """Read the manifest, select models and parse every meta.voyado (all problems at once)."""
    manifest = load_manifest(manifest_path(project_dir, target_path))
    nodes = manifest.select(select)
    problems: list[ConfigProblem] = []
    specs: dict[str, VoyadoSpec] = {}
    for node in nodes:
        if node.materialized == "ephemeral":
            problems.append(
                ConfigProblem(
                    "is ephemeral, so there is no table to read: materialize it as a table, "
                    "view or incremental model",
                    node.name,
                    "config.materialized",
                )
            )
            continue
        try:
            specs[node.name] = parse_spec(node.name, node.voyado)
        except ConfigError as exc:
            problems.extend(exc.problems)
    every = [
        (m.name, parse_spec(m.name, m.voyado)) for m in manifest.voyado_models if m.name in specs
    ]
    problems.extend(check_project_rules(every))
    if problems:
        raise ConfigError(problems)
    return Project(manifest=manifest, nodes=[n for n in nodes if n.name in specs], specs=specs)


def resolve_models(project: Project, warehouse: Warehouse) -> list[InteractionModel]:
    """Resolve each spec against the built model's columns; every problem at once."""
    problems: list[ConfigProblem] = []
    models: list[InteractionModel] = []
    for node in project.nodes:
        columns = warehouse.columns(node.relation)
        if columns is None:
            problems.append(
                ConfigProblem(
                    f"relation {node.relation} does not exist in the {warehouse.description}: "
                    "run dbt build for this target first",
                    node.name,
                )
            )
            continue
        try:
            models.append(
                resolve(
                    model=node.name,
                    unique_id=node.unique_id,
                    relation=node.relation,
                    spec=project.specs[node.name],
                    columns=columns,
                )
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return models


def open_warehouse(options: RunOptions) -> Warehouse:
    from voyado_sync.warehouse.adapter import DbtWarehouse

    return DbtWarehouse(
        project_dir=options.project_dir, profiles_dir=options.profiles_dir, target=options.target
    )


# -- the run ----------------------------------------------------------------------------------


@dataclass
class _Row:
    key: str
    display: str
    group_hash: str
    dup_count: int
    prev_status: str | None
    first_seen: str | None
    values: dict[str, Any]


class _Stop:
    """Set by SIGINT/SIGTERM: take no new rows, finish what is in flight, write the ledger."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            # A second signal means "now": rows in flight are reconciled by the next run.
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    @property
    def set(self) -> bool:
        return self.event.is_set()


class Engine:
    """One sync run. Create, then call :meth:`run`."""

    def __init__(
        self,
        options: RunOptions,
        *,
        progress: ProgressCallback | None = None,
        warehouse_factory: Callable[[RunOptions], Warehouse] = open_warehouse,
    ) -> None:
        self.options = options
        self.progress = progress
        self.warehouse_factory = warehouse_factory
        self.run_id = new_run_id()
        self.stop = _Stop()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse")
        self._warehouse: Warehouse | None = None
        self._claimed: set[str] = set()
        self._body_locks: dict[str, asyncio.Lock] = {}
        self._last_stamp: datetime | None = None
        # Per run, by (contact key, identifier): lookups that found no single contact, and
        # second lookups after Voyado refused a cached id; each identifier is asked once.
        self._not_resolved: dict[tuple[str, str], LookupOutcome] = {}
        self._reresolved: dict[tuple[str, str], LookupOutcome] = {}

    # Warehouse calls, always on the warehouse thread.
    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def run(self) -> SyncResult:
        check_rate(self.options.rate, self.options.concurrency)
        project = load_project(
            self.options.project_dir,
            target_path=self.options.target_path,
            select=self.options.select,
        )
        connection = None if self.options.dry_run else connection_from_env(self.options.base_url)
        installed = self._install_signal_handlers()
        try:
            return asyncio.run(self._run(project, connection))
        finally:
            for signum, previous in installed:
                signal.signal(signum, previous)
            self._pool.submit(self._close_warehouse).result()
            self._pool.shutdown(wait=True)

    def _install_signal_handlers(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: list[tuple[int, Any]] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            installed.append((signum, signal.getsignal(signum)))
            signal.signal(signum, self.stop)
        return installed

    def _close_warehouse(self) -> None:
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    async def _run(self, project: Project, connection: VoyadoConnection | None) -> SyncResult:
        warehouse = self._warehouse = await self._db(self.warehouse_factory, self.options)
        models = await self._db(resolve_models, project, warehouse)
        ledger = Ledger(warehouse, schema=self.options.state_schema)
        result = SyncResult(
            run_id=self.run_id,
            dry_run=self.options.dry_run,
            models=[ModelResult(m.model, m.schema_id) for m in models],
            warehouse=warehouse.description,
        )
        if self.options.dry_run:
            ledger_exists = await self._db(ledger.exists)
            for model, res in zip(models, result.models, strict=True):
                await self._dry_run_model(model, res, ledger, ledger_exists)
            return result

        assert connection is not None
        await self._db(ledger.ensure)
        await self._db(ledger.acquire_lock, self.run_id)
        try:
            await self._db(
                ledger.start_run, self.run_id, models=[m.model for m in models], version=__version__
            )
            client = VoyadoClient(
                base_url=connection.base_url,
                api_key=connection.api_key.get_secret_value(),
                rate=self.options.rate,
                concurrency=self.options.concurrency,
                timeout=self.options.timeout,
                retry=self.options.retry,
            )
            async with client:
                try:
                    # Check every schema before sending anything: drift stops only its model.
                    for model, res in zip(models, result.models, strict=True):
                        await self._ensure_schema(client, model, res)
                    for model, res in zip(models, result.models, strict=True):
                        if res.error or self.stop.set:
                            continue
                        await self._sync_model(client, ledger, model, res)
                except FatalApiError as exc:
                    result.fatal = str(exc)
                result.requests = client.stats.as_dict()
            result.interrupted = self.stop.set
            status = "failed" if result.fatal else ("interrupted" if result.interrupted else "ok")
            totals = {
                key: sum(getattr(m, key) for m in result.models)
                for key in ("selected", "already_sent", "sent", "rejected", "failed")
            }
            await self._db(
                ledger.finish_run,
                self.run_id,
                status=status,
                counts=totals,
                message=result.fatal or "",
            )
        finally:
            await self._db(ledger.release_lock, self.run_id)
        return result

    # -- schemas ------------------------------------------------------------------------------

    async def _ensure_schema(
        self, client: VoyadoClient, model: InteractionModel, res: ModelResult
    ) -> None:
        wanted = model.schema_body()
        try:
            existing = await client.get_schema(model.schema_id)
            if existing is None:
                await client.create_schema(wanted)
                res.schema_created = True
                return
        except FatalApiError:
            raise
        except ApiError as exc:
            res.error = f"could not check interaction schema {model.schema_id} in Voyado: {exc}"
            return
        drift = describe_drift(wanted, existing)
        if drift:
            res.error = (
                f"interaction schema {model.schema_id} in Voyado differs from the model's "
                f"meta.voyado, so nothing was sent for this model:\n"
                + "\n".join(f"    {line}" for line in drift)
                + "\n  Voyado cannot update a schema. Use a new schema_id (for example "
                f"{model.schema_id}-v2), or see `voyado-sync schemas diff`."
            )

    # -- one model ----------------------------------------------------------------------------

    def _stage(self, ledger: Ledger, model: InteractionModel) -> tuple[int, int, int, int]:
        """Run the diff into staging tables.

        Returns (selected rows, candidate rows, pending keys, pending rows).
        """
        wh = ledger.warehouse
        source, deliveries = sql.source_table(model), ledger.table("deliveries")
        keys, cand, pending = (ledger.table(sql.staged_name(model, s)) for s in sql.STAGING_STEPS)
        unsent_keys = sql.unsent_keys_select(model=model, source=source, ledger=deliveries)
        with wh.keys_join():
            wh.execute_many(sql.create_sql(keys, unsent_keys, wh.dialect))
        selected = int(wh.query(sql.count_sql(source, wh.dialect))[0][0])
        unsent = int(wh.query(sql.count_sql(keys, wh.dialect))[0][0])
        # With no row sent yet (a first run) the keys filter removes nothing and costs a
        # semi-join of every key; the ledger then holds none of these rows as sent, so the
        # one-statement join is small.
        candidates = sql.candidates_select(
            model=model, source=source, ledger=deliveries, keys=None if unsent >= selected else keys
        )
        wh.execute_many(
            [*sql.create_sql(cand, candidates, wh.dialect), sql.drop_sql(keys, wh.dialect)]
        )
        wh.execute_many(
            sql.create_sql(
                pending,
                sql.pending_select(
                    model=model, candidates=cand, retry_rejected=self.options.retry_rejected
                ),
                wh.dialect,
            )
        )
        n_candidates = int(wh.query(sql.count_sql(cand, wh.dialect))[0][0])
        n_keys, rows = wh.query(sql.pending_rows_sql(pending, wh.dialect))[0]
        return selected, n_candidates, int(n_keys or 0), int(rows or 0)

    def _drop_staging(self, ledger: Ledger, model: InteractionModel) -> None:
        ledger.warehouse.execute_many(
            [
                sql.drop_sql(ledger.table(sql.staged_name(model, step)), ledger.dialect)
                for step in sql.STAGING_STEPS
            ]
        )

    def _page(
        self, ledger: Ledger, model: InteractionModel, after: int, size: int
    ) -> list[tuple[int, _Row]]:
        pending = ledger.table(sql.staged_name(model, "pending"))
        rows = ledger.warehouse.query(
            sql.page_sql(
                model=model, pending=pending, after=after, size=size, dialect=ledger.dialect
            )
        )
        used = model.columns_used
        out = []
        for r in rows:
            values = dict(zip(used, r[6:], strict=True))
            display = ", ".join(f"{c}={values[c]}" for c in model.unique_key)
            out.append(
                (
                    int(r[0]),
                    _Row(
                        key=str(r[1]),
                        display=display,
                        group_hash=str(r[2]),
                        dup_count=int(r[3]),
                        prev_status=r[4],
                        first_seen=r[5],
                        values=values,
                    ),
                )
            )
        return out

    async def _reconcile(
        self, client: VoyadoClient, ledger: Ledger, model: InteractionModel, res: ModelResult
    ) -> None:
        """Settle rows a previous run left in flight: found in Voyado -> sent; absent -> failed."""
        rows = await self._db(ledger.in_flight, model.model, model.schema_id)
        if not rows:
            return
        contacts = sorted({r.contact_id for r in rows if r.contact_id})
        self._claimed |= await self._db(ledger.sent_ids, model.schema_id, contacts)
        updates: list[Delivery] = []
        now = utc_now()
        for row in rows:
            body = row.body()
            if body is None:
                updates.append(
                    self._update(
                        row,
                        status=sql.FAILED,
                        reason="left in flight without a request body; will be sent again",
                        now=now,
                    )
                )
                continue
            try:
                found = await client.find_delivered(body, claimed=self._claimed)
            except FatalApiError:
                raise
            except ApiError as exc:
                if exc.status == 404:
                    # The contact itself is gone (merged or deleted): nothing can be stored
                    # under it any more, so the row is sent again to whoever its identifier
                    # resolves to now, instead of waiting in flight forever.
                    reason = (
                        f"contact {row.contact_id} no longer exists in Voyado after an unknown "
                        "outcome; will be sent again"
                    )
                    updates.append(self._update(row, status=sql.FAILED, reason=reason, now=now))
                continue  # otherwise leave it in flight: never resend without knowing
            if found:
                res.reconciled += 1
                updates.append(
                    self._update(
                        row,
                        status=sql.SENT,
                        interaction_id=found,
                        request_body=None,
                        reason="found in Voyado after an unknown outcome",
                        now=now,
                    )
                )
            else:
                updates.append(
                    self._update(
                        row,
                        status=sql.FAILED,
                        reason="not stored in Voyado after an unknown outcome; will be sent again",
                        now=now,
                    )
                )
        await self._db(ledger.write, updates)

    @staticmethod
    def _update(row: Delivery, *, status: str, now: str, **changes: Any) -> Delivery:
        values = {**row.__dict__, "status": status, "updated_at": now, **changes}
        return Delivery(**values)

    async def _sync_model(
        self, client: VoyadoClient, ledger: Ledger, model: InteractionModel, res: ModelResult
    ) -> None:
        await self._reconcile(client, ledger, model, res)
        try:
            selected, candidates, keys, rows = await self._db(self._stage, ledger, model)
            res.selected = selected
            res.already_sent = selected - candidates
            res.previously_rejected = candidates - rows
            await self._send_pending(client, ledger, model, res, keys)
        finally:
            await self._db(self._drop_staging, ledger, model)

    def _page_size(self) -> int:
        if self.options.page_size:
            return self.options.page_size
        return int(min(1000, max(50, self.options.rate * 2)))

    async def _send_pending(
        self,
        client: VoyadoClient,
        ledger: Ledger,
        model: InteractionModel,
        res: ModelResult,
        total: int,
    ) -> None:
        builder = PayloadBuilder(model)
        cache = ContactCache(ledger)
        size = self._page_size()
        self._report(model, 0, total)
        gate = asyncio.Semaphore(client.max_in_flight)
        outstanding: list[tuple[list[_Prepared], list[asyncio.Task[DeliveryOutcome | None]]]] = []
        after = 0
        done = 0
        try:
            while not self.stop.set:
                page = await self._db(self._page, ledger, model, after, size)
                if not page:
                    break
                after = page[-1][0]
                prepared, settled = await self._prepare(
                    client, cache, builder, model, [r for _, r in page], res
                )
                # The journal is committed before any of these requests leaves.
                journal = [p.delivery(sql.IN_FLIGHT, self.run_id) for p in prepared]
                await self._db(ledger.write, settled + journal)
                done += len(settled)
                tasks = [asyncio.create_task(self._deliver(client, gate, p)) for p in prepared]
                outstanding.append((prepared, tasks))
                # Keep one page in flight while the next is read and journaled, so the
                # request pipeline never drains at a page boundary.
                if len(outstanding) > 1:
                    done += await self._settle(
                        ledger, res, *outstanding.pop(0), client=client, cache=cache
                    )
                    self._report(model, done, total)
                    await self._db(ledger.heartbeat, self.run_id)
        finally:
            # Whatever happened, every request that left gets its answer recorded.
            errors: list[BaseException] = []
            while outstanding:
                try:
                    done += await self._settle(
                        ledger, res, *outstanding.pop(0), client=client, cache=cache
                    )
                except BaseException as exc:  # settle the rest before raising
                    self.stop.event.set()
                    errors.append(exc)
            self._report(model, done, total)
            if errors:
                raise errors[0]

    def _report(self, model: InteractionModel, done: int, total: int) -> None:
        if self.progress:
            self.progress(model.model, done, total)

    async def _deliver(
        self, client: VoyadoClient, gate: asyncio.Semaphore, item: _Prepared
    ) -> DeliveryOutcome | None:
        # Two rows with the same body are never in flight together: otherwise reconciling one
        # after an unknown outcome could claim the interaction the other just created.
        same_body = self._body_locks.setdefault(item.fingerprint, asyncio.Lock())
        try:
            async with same_body, gate:
                if self.stop.set:
                    return None  # journaled but never sent: recorded as failed, sent next run
                return await client.deliver_interaction(item.body, claimed=self._claimed)
        finally:
            if not same_body.locked() and self._body_locks.get(item.fingerprint) is same_body:
                del self._body_locks[item.fingerprint]

    async def _settle(
        self,
        ledger: Ledger,
        res: ModelResult,
        prepared: list[_Prepared],
        tasks: list[asyncio.Task[DeliveryOutcome | None]],
        *,
        client: VoyadoClient,
        cache: ContactCache,
    ) -> int:
        """Wait for a page's requests and write their outcomes; 401/403 stops the run."""
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        pairs: list[tuple[_Prepared, object]] = list(zip(prepared, outcomes, strict=True))
        fatal: BaseException | None = None
        updates: list[Delivery] = []
        try:
            pairs, updates, fatal = await self._follow_merged_contacts(
                client, cache, ledger, res, pairs
            )
        except Exception as exc:  # e.g. the warehouse: nothing was sent again, so retry later
            fatal = exc
            self.stop.event.set()
            pairs = [
                (
                    item,
                    Failed(
                        f"Voyado no longer knows contact {item.body['contactId']}; "
                        f"looking it up again failed ({exc}); tried again next run"
                    ),
                )
                if item.identifier is not None and _contact_gone(outcome)
                else (item, outcome)
                for item, outcome in pairs
            ]
        for item, outcome in pairs:
            if isinstance(outcome, FatalApiError):
                fatal = fatal or outcome
                self.stop.event.set()
                # The request was refused (401/403): nothing was stored.
                updates.append(
                    item.delivery(
                        sql.FAILED,
                        self.run_id,
                        reason=str(outcome),
                        http_status=outcome.status,
                        error_code=outcome.error_code,
                    )
                )
                res.failed += 1
            elif isinstance(outcome, BaseException):
                fatal = fatal or outcome  # a bug: keep the row in flight, reconcile next run
            elif outcome is None:
                updates.append(
                    item.delivery(
                        sql.FAILED, self.run_id, reason="not sent: the run was interrupted"
                    )
                )
                res.failed += 1
            elif isinstance(outcome, Delivered):
                updates.append(
                    item.delivery(
                        sql.SENT,
                        self.run_id,
                        interaction_id=outcome.interaction_id,
                        keep_body=False,
                    )
                )
                res.sent += 1
                res.reconciled += int(outcome.reconciled)
            elif isinstance(outcome, Rejected):
                reason = (
                    f"Voyado answered {outcome.status}"
                    + (f" {outcome.error_code}" if outcome.error_code else "")
                    + f": {outcome.message}"
                )
                if _contact_gone(outcome):
                    reason = _gone_reason(item)
                updates.append(
                    item.delivery(
                        sql.REJECTED,
                        self.run_id,
                        reason=reason,
                        http_status=outcome.status,
                        error_code=outcome.error_code,
                        keep_body=False,
                    )
                )
                res.rejected += 1
                res.reasons[_reason_class(reason)] = res.reasons.get(_reason_class(reason), 0) + 1
            elif isinstance(outcome, Failed):
                # Unknown whether Voyado stored it: keep it in flight so the next run looks first.
                status = sql.IN_FLIGHT if outcome.maybe_delivered else sql.FAILED
                updates.append(
                    item.delivery(
                        status,
                        self.run_id,
                        reason=outcome.reason,
                        http_status=outcome.status,
                        error_code=outcome.error_code,
                    )
                )
                res.failed += 1
        await self._db(ledger.write, updates)
        if fatal is not None:
            raise fatal
        return len(prepared)

    async def _prepare(
        self,
        client: VoyadoClient,
        cache: ContactCache,
        builder: PayloadBuilder,
        model: InteractionModel,
        rows: list[_Row],
        res: ModelResult,
    ) -> tuple[list[_Prepared], list[Delivery]]:
        """Validate rows and resolve contacts: (rows to send, rows settled without sending)."""
        now = utc_now()
        settled: list[Delivery] = []
        # row, payload, createdDate, normalised identifier
        ready: list[tuple[_Row, dict[str, Any], str | None, str]] = []
        for row in rows:
            try:
                payload, created, contact = self.validate_row(builder, model, row)
            except RowRejected as exc:
                settled.append(
                    _settled(model, row, sql.REJECTED, self.run_id, now, reason=exc.reason)
                )
                res.rejected += row.dup_count
                res.reasons[_reason_class(exc.reason)] = (
                    res.reasons.get(_reason_class(exc.reason), 0) + row.dup_count
                )
                continue
            res.count_normalised(contact.changed)
            ready.append((row, payload, created, contact.value))

        looked_up = model.contact_key != "contactId"
        contact_ids: dict[str, str] = {}
        if not looked_up:
            contact_ids = {ident: ident for *_, ident in ready}
        else:
            outcomes = await self._resolve_contacts(
                client, cache, model, sorted({i for *_, i in ready}), res
            )
            for entry in list(ready):
                row, _, _, identifier = entry
                outcome = outcomes[identifier]
                if isinstance(outcome, ContactFound):
                    contact_ids[identifier] = outcome.contact_id
                    continue
                ready.remove(entry)
                settled.append(self._unresolved(model, row, identifier, outcome, now, res))
        prepared = []
        for row, payload, created, identifier in ready:
            body: dict[str, Any] = {
                "contactId": contact_ids[identifier],
                "schemaId": model.schema_id,
            }
            # Without a created_date column, the journal time is sent: it means what Voyado's
            # default means and gives reconciliation a precise key (one per row and run).
            body["createdDate"] = created or self._journal_time()
            body["payload"] = payload
            prepared.append(
                _Prepared(
                    model=model,
                    row=row,
                    body=body,
                    now=now,
                    identifier=identifier if looked_up else None,
                )
            )
        return prepared, settled

    def _unresolved(
        self,
        model: InteractionModel,
        row: _Row,
        identifier: str,
        outcome: LookupOutcome,
        now: str,
        res: ModelResult,
    ) -> Delivery:
        """The ledger row of a row whose contact lookup found no single contact, counted."""
        key = model.contact_key
        if isinstance(outcome, ContactNotFound):
            days = model.not_found_retry_days
            first = row.first_seen or now
            age = (_parse(now) - _parse(first)).total_seconds() / 86400
            if age >= days:
                res.rejected += 1
                reason = (
                    f"no Voyado contact has {key} {identifier!r} (ContactNotFound), "
                    f"still absent after {days} days"
                )
                return _settled(
                    model,
                    row,
                    sql.REJECTED,
                    self.run_id,
                    now,
                    reason=reason,
                    http_status=404,
                    error_code="ContactNotFound",
                )
            res.waiting += 1
            reason = (
                f"no Voyado contact has {key} {identifier!r} yet (ContactNotFound); "
                f"retried on later runs for {days} days"
            )
            return _settled(
                model,
                row,
                sql.CONTACT_NOT_FOUND,
                self.run_id,
                now,
                reason=reason,
                http_status=404,
                error_code="ContactNotFound",
            )
        if isinstance(outcome, ContactAmbiguous):
            res.rejected += 1
            ids = ", ".join(outcome.contact_ids) or "Voyado did not list them"
            reason = (
                f"{len(outcome.contact_ids) or 'several'} Voyado contacts match {key} "
                f"{identifier!r} (MultipleMatches): {ids}"
            )
            return _settled(
                model,
                row,
                sql.REJECTED,
                self.run_id,
                now,
                reason=reason,
                http_status=409,
                error_code="MultipleMatches",
            )
        if isinstance(outcome, ContactInvalid):
            res.rejected += 1
            reason = (
                f"Voyado refused {key} {identifier!r} ({outcome.error_code}): {outcome.message}"
            )
            return _settled(
                model,
                row,
                sql.REJECTED,
                self.run_id,
                now,
                reason=reason,
                http_status=400,
                error_code=outcome.error_code,
            )
        res.failed += 1
        reason = outcome.reason if isinstance(outcome, Failed) else "contact lookup failed"
        return _settled(
            model,
            row,
            sql.FAILED,
            self.run_id,
            now,
            reason=reason,
            http_status=outcome.status if isinstance(outcome, Failed) else None,
            error_code=outcome.error_code if isinstance(outcome, Failed) else None,
        )

    def _journal_time(self) -> str:
        """Now, to the millisecond, never the same value twice in one run."""
        now = datetime.now(UTC)
        moment = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._last_stamp is not None and moment <= self._last_stamp:
            moment = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = moment
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @staticmethod
    def validate_row(
        builder: PayloadBuilder, model: InteractionModel, row: _Row
    ) -> tuple[dict[str, Any], str | None, Normalised]:
        """Everything that can be checked without Voyado; raise RowRejected with the reason."""
        nulls = [c for c in model.unique_key if row.values.get(c) is None]
        if nulls:
            raise RowRejected(f"unique key column {', '.join(nulls)} is NULL")
        if row.dup_count > 1:
            raise RowRejected(
                f"{row.dup_count} rows share the unique key {row.display}; none is sent until "
                "it is unique"
            )
        raw_contact = row.values.get(model.contact_column)
        if raw_contact is None:
            raise RowRejected(f"contact column {model.contact_column} is NULL")
        try:
            # Before any lookup: one person is one lookup, and a value Voyado would refuse
            # never spends a request.
            contact = normalise(
                model.contact_key, raw_contact, default_country=model.default_country
            )
        except ValueError as exc:
            raise RowRejected(
                f"contact column {model.contact_column} ({model.contact_key}): {exc}"
            ) from None
        payload = builder.payload(row.values)
        created = builder.created_date(row.values)
        return payload, created, contact

    async def _resolve_contacts(
        self,
        client: VoyadoClient,
        cache: ContactCache,
        model: InteractionModel,
        identifiers: list[str],
        res: ModelResult,
    ) -> dict[str, LookupOutcome]:
        """The lookup outcome of each distinct identifier of a page: from the cache, from an
        earlier page of this run, or from one lookup."""
        key = model.contact_key
        cached = await self._db(cache.get, key, identifiers)
        res.lookups_cached += len(cached)
        out: dict[str, LookupOutcome] = {i: ContactFound(c) for i, c in cached.items()}
        missing = []
        for identifier in identifiers:
            if identifier in out:
                continue
            earlier = self._not_resolved.get((key, identifier))
            if earlier is not None:
                out[identifier] = earlier
            else:
                missing.append(identifier)
        gate = asyncio.Semaphore(client.max_in_flight)

        async def one(identifier: str) -> tuple[str, LookupOutcome]:
            async with gate:
                return identifier, await client.lookup_contact(key, identifier)

        found: dict[str, str] = {}
        for identifier, outcome in await asyncio.gather(*(one(i) for i in missing)):
            res.lookups += 1
            out[identifier] = outcome
            if isinstance(outcome, ContactFound):
                found[identifier] = outcome.contact_id
            elif not isinstance(outcome, Failed):
                # Not found, ambiguous or invalid will not change within minutes: one lookup
                # per run, however many pages hold the identifier. Later runs ask again.
                self._not_resolved[(key, identifier)] = outcome
        await self._db(cache.put, key, found)
        return out

    async def _follow_merged_contacts(
        self,
        client: VoyadoClient,
        cache: ContactCache,
        ledger: Ledger,
        res: ModelResult,
        pairs: list[tuple[_Prepared, object]],
    ) -> tuple[list[tuple[_Prepared, object]], list[Delivery], BaseException | None]:
        """Rows whose POST got 404 ContactNotFound for a looked-up contact id.

        The cached id is stale: Voyado merged or deleted that contact. Forget it, look the
        identifier up again once per run, and send again to a different id. A 404 means
        Voyado stored nothing, so sending again is safe; the new body is journaled in flight
        before it leaves. Returns (pairs to settle as usual, rows settled here, a fatal error).
        """
        stale = [
            (n, item)
            for n, (item, outcome) in enumerate(pairs)
            if item.identifier is not None and _contact_gone(outcome)
        ]
        if not stale:
            return pairs, [], None
        model = stale[0][1].model
        key = model.contact_key
        gone: dict[str, set[str]] = {}
        for _, item in stale:
            assert item.identifier is not None
            gone.setdefault(item.identifier, set()).add(str(item.body["contactId"]).lower())
        fresh = sorted(i for i in gone if (key, i) not in self._reresolved)
        fatal: BaseException | None = None
        failures: dict[str, LookupOutcome] = {}
        if fresh:
            await self._db(cache.forget, key, fresh)
            res.invalidated += len(fresh)
            answers = await asyncio.gather(
                *(client.lookup_contact(key, i) for i in fresh), return_exceptions=True
            )
            res.lookups += len(fresh)
            found: dict[str, str] = {}
            for identifier, answer in zip(fresh, answers, strict=True):
                if isinstance(answer, BaseException):
                    if isinstance(answer, FatalApiError):
                        self.stop.event.set()
                    fatal = fatal or answer
                    failures[identifier] = Failed(f"looking the contact up again failed: {answer}")
                    continue
                self._reresolved[(key, identifier)] = answer
                if isinstance(answer, ContactFound) and answer.contact_id.lower() not in gone.get(
                    identifier, set()
                ):
                    found[identifier] = answer.contact_id
            await self._db(cache.put, key, found)

        now = utc_now()
        out: list[tuple[_Prepared, object] | None] = list(pairs)
        settled: list[Delivery] = []
        resend: list[tuple[int, _Prepared]] = []
        for n, item in stale:
            assert item.identifier is not None
            answer = failures.get(item.identifier) or self._reresolved[(key, item.identifier)]
            if isinstance(answer, ContactFound):
                if answer.contact_id.lower() != str(item.body["contactId"]).lower():
                    body = {**item.body, "contactId": answer.contact_id}
                    resend.append((n, dataclasses.replace(item, body=body)))
                # The same id again: left as the rejection it is, with the reason _settle gives.
                continue
            settled.append(self._unresolved(model, item.row, item.identifier, answer, now, res))
            out[n] = None
        if resend:
            # Journal first, then send: a crash in between leaves the new body in flight.
            await self._db(
                ledger.write, [p.delivery(sql.IN_FLIGHT, self.run_id) for _, p in resend]
            )
            gate = asyncio.Semaphore(client.max_in_flight)
            results = await asyncio.gather(
                *(self._deliver(client, gate, p) for _, p in resend), return_exceptions=True
            )
            for (n, item), result in zip(resend, results, strict=True):
                out[n] = (item, result)
        return [pair for pair in out if pair is not None], settled, fatal

    # -- dry run ------------------------------------------------------------------------------

    async def _dry_run_model(
        self, model: InteractionModel, res: ModelResult, ledger: Ledger, ledger_exists: bool
    ) -> None:
        from voyado_sync.dryrun import preview

        await self._db(preview, ledger, model, res, ledger_exists, self.options.retry_rejected)


@dataclass
class _Prepared:
    model: InteractionModel
    row: _Row
    body: dict[str, Any]
    now: str
    #: The normalised identifier the contact id was looked up by; None for contact.key contactId.
    identifier: str | None = None

    @property
    def fingerprint(self) -> str:
        return json.dumps(self.body, sort_keys=True, default=str)

    def delivery(
        self, status: str, run_id: str, *, keep_body: bool = True, **changes: Any
    ) -> Delivery:
        return Delivery(
            model=self.model.model,
            schema_id=self.model.schema_id,
            row_key=self.row.key,
            row_key_display=self.row.display,
            content_hash=self.row.group_hash,
            status=status,
            run_id=run_id,
            first_seen_at=self.row.first_seen or self.now,
            updated_at=utc_now(),
            contact_id=str(self.body["contactId"]),
            created_date=str(self.body.get("createdDate")),
            request_body=json.dumps(self.body, separators=(",", ":")) if keep_body else None,
            **changes,
        )


def _settled(
    model: InteractionModel, row: _Row, status: str, run_id: str, now: str, **changes: Any
) -> Delivery:
    return Delivery(
        model=model.model,
        schema_id=model.schema_id,
        row_key=row.key,
        row_key_display=row.display,
        content_hash=row.group_hash,
        status=status,
        run_id=run_id,
        first_seen_at=row.first_seen or now,
        updated_at=now,
        **changes,
    )


def _contact_gone(outcome: object) -> bool:
    """Voyado answered the POST that the body's contactId names no contact (nothing stored)."""
    return (
        isinstance(outcome, Rejected)
        and outcome.status == 404
        and outcome.error_code == "ContactNotFound"
    )


def _gone_reason(item: _Prepared) -> str:
    contact_id = item.body["contactId"]
    if item.identifier is None:
        return (
            f"Voyado has no contact {contact_id} (404 ContactNotFound): the contactId column "
            "names a contact that does not exist, or was merged or deleted"
        )
    return (
        f"Voyado has no contact {contact_id} (404 ContactNotFound), yet looking up "
        f"{item.model.contact_key} {item.identifier!r} again returns that id"
    )


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def _reason_class(reason: str) -> str:
    """A short grouping key for the summary: the reason without its values."""
    head = reason.split(":")[0]
    return head[:80]


def run(options: RunOptions, *, progress: ProgressCallback | None = None) -> SyncResult:
    """Run one sync; raise VoyadoSyncError subclasses when it cannot run at all."""
    return Engine(options, progress=progress).run()


__all__ = ["Engine", "ModelResult", "RunOptions", "SyncResult", "VoyadoSyncError", "run"]
