"""The runner: one sync run, conducted stage by stage.

::

    load project -> open warehouse -> resolve models
      -> [dry run]  each model: preview -> pages -> prepare -> (offline) resolve -> DrySender
      -> [real run] ledger + lock -> schema gate (every model first)
                    -> each model: recover -> stage -> pages -> prepare -> resolve -> journal
                       -> deliver -> merged contacts -> settle -> ledger
                    -> run history, unlock

Every warehouse call runs on the warehouse thread; every request goes through one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from voyado_sync import __version__, settings
from voyado_sync.dbt_status import read_build_status
from voyado_sync.exceptions import ConfigProblem, FatalApiError, VoyadoSyncError, error_kind
from voyado_sync.project import Project, load_project, open_warehouse, resolve_models
from voyado_sync.settings import (
    RunOptions,
    VoyadoConnection,
    check_rate,
    connection_from_env,
    raw_connection,
)
from voyado_sync.spec import InteractionModel
from voyado_sync.state import (
    LOCK_RENEW_SECONDS,
    Ledger,
    RunStatus,
    SchemaUpgrade,
    environment_of,
    new_run_id,
    utc_now,
)
from voyado_sync.sync import stage
from voyado_sync.sync.contacts import ContactResolver, OfflineResolver
from voyado_sync.sync.deliver import DrySender, VoyadoSender
from voyado_sync.sync.lifecycle import Stop, WarehouseThread, signals_to
from voyado_sync.sync.mirror import Deleter
from voyado_sync.sync.pipeline import Plan, sync_model
from voyado_sync.sync.preflight import unreachable
from voyado_sync.sync.prepare import JournalClock
from voyado_sync.sync.result import ModelResult, ProgressCallback, SyncResult
from voyado_sync.sync.schema_gate import check_schema
from voyado_sync.voyado import VoyadoClient
from voyado_sync.warehouse.base import Warehouse

DRY_RUN_PAGE = 5000
_log = logging.getLogger("voyado_sync")


def run(
    options: RunOptions,
    *,
    progress: ProgressCallback | None = None,
    upgrading: str | None = None,
) -> SyncResult:
    """Run one sync; raise VoyadoSyncError subclasses when it cannot run at all.

    ``upgrading``: the schema id whose upgrade this run replays (upgrade.py). Models of a
    schema with an unfinished upgrade are held, except this one's; its rows are sent with
    the createdDate the ledger recorded."""
    check_rate(options.rate, options.concurrency)
    project = load_project(options)
    connection = None if options.dry_run else connection_from_env(options.base_url)
    stop = Stop()
    db = WarehouseThread()
    opened: list[Warehouse] = []
    try:
        with signals_to(stop):
            return asyncio.run(
                _run(options, project, connection, stop, db, opened, progress, upgrading)
            )
    finally:
        for warehouse in opened:
            db.run(warehouse.close)
        db.shutdown()


async def _run(
    options: RunOptions,
    project: Project,
    connection: VoyadoConnection | None,
    stop: Stop,
    db: WarehouseThread,
    opened: list[Warehouse],
    progress: ProgressCallback | None,
    upgrading: str | None = None,
) -> SyncResult:
    warehouse = await db(open_warehouse, options)
    opened.append(warehouse)
    resolved = await db(resolve_models, project, warehouse)
    models = resolved.models
    # Which Voyado the ledger's rows are about: a dry run without a key still diffs against
    # the rows delivered to the Voyado it names (or, naming none, to any).
    url = connection.base_url if connection is not None else raw_connection(options.base_url)[0]
    ledger = Ledger(
        warehouse,
        schema=options.state_schema,
        environment=environment_of(url) if url else None,
    )
    result = SyncResult(
        run_id=new_run_id(),
        dry_run=options.dry_run,
        synced=[ModelResult(m.model, m.schema_id) for m in models],
        warehouse=warehouse.description,
        broken=[_broken(project, name, found) for name, found in resolved.broken.items()],
        problems=[{"model": p.model, "key": p.key, "message": p.message} for p in project.typos],
    )
    if not options.ignore_dbt_status:
        models = await _respect_the_build(project, ledger, db, models, result)
    if connection is None:
        await _dry_run(options, ledger, db, stop, models, result)
        return result

    await db(ledger.ensure)
    await db(ledger.acquire_lock, result.run_id)
    renewal = asyncio.create_task(_renew_lock(db, ledger, result.run_id))
    try:
        await db(
            ledger.start_run, result.run_id, models=[m.model for m in models], version=__version__
        )
        client = VoyadoClient(
            base_url=connection.base_url,
            api_key=connection.api_key.get_secret_value(),
            rate=options.rate,
            concurrency=options.concurrency,
            timeout=options.timeout,
            retry=options.retry_policy(),
        )
        loop = asyncio.get_running_loop()
        # After SIGTERM/Ctrl-C, requests in flight get a grace period, then are abandoned
        # (left in flight for the next run): the process exits in bounded time.

        def abandon_later() -> None:
            loop.call_soon_threadsafe(loop.call_later, options.stop_grace, client.stop)

        stop.on_signal(abandon_later)
        async with client:
            try:
                why = await unreachable(connection.base_url)
                if why:
                    result.fatal, result.fatal_kind = why, "RetryableApiError"
                else:
                    held = await db(ledger.unfinished_upgrades, connection.base_url)
                    _hold_upgrading(models, result, held, upgrading)
                    await _real_run(
                        options,
                        ledger,
                        db,
                        stop,
                        client,
                        models,
                        result,
                        progress,
                        replaying=upgrading is not None,
                    )
            except FatalApiError as exc:
                result.fatal, result.fatal_kind = str(exc), error_kind(exc)
            result.requests = client.stats.as_dict()
        if result.fatal:
            await _count_untouched(ledger, db, models, result)
        result.interrupted = stop.is_set
        status = (
            RunStatus.FAILED
            if result.fatal
            else (RunStatus.INTERRUPTED if result.interrupted else RunStatus.OK)
        )
        await db(
            ledger.finish_run,
            result.run_id,
            status=status,
            counts=result.totals(),
            message=result.fatal or "",
        )
    finally:
        renewal.cancel()
        await db(ledger.release_lock, result.run_id)
    return result


async def _renew_lock(db: WarehouseThread, ledger: Ledger, run_id: str) -> None:
    """Renew the run's claim on a timer, whatever the run waits for (a long Retry-After)."""
    while True:
        await asyncio.sleep(LOCK_RENEW_SECONDS)
        try:
            await db(ledger.renew_lock, run_id)
        except VoyadoSyncError as exc:  # lost: the check before the next page stops the run
            _log.warning("could not renew the run's lock: %s", exc)


async def _real_run(
    options: RunOptions,
    ledger: Ledger,
    db: WarehouseThread,
    stop: Stop,
    client: VoyadoClient,
    models: list[InteractionModel],
    result: SyncResult,
    progress: ProgressCallback | None,
    *,
    replaying: bool = False,
) -> None:
    # Check every schema before sending anything: drift stops only its model.
    for i, (model, res) in enumerate(zip(models, result.synced, strict=True)):
        if stop.is_set:
            return  # SIGTERM while checking schemas: nothing sent, nothing more to check
        if res.error:  # held (an unfinished schema upgrade): not even its schema is touched
            continue
        check = await check_schema(client, model)
        res.schema_created, res.error = check.created, check.error
        models[i] = dataclasses.replace(model, stored_json_schema=check.stored)
    claimed: set[str] = set()
    # The client's window bounds what is really in flight; these gates only need to let it.
    resolver = ContactResolver(
        client, ledger, db, client.max_in_flight, max_age_days=settings.contact_cache_days()
    )
    sender = VoyadoSender(client, stop, client.max_in_flight, claimed)
    plan = Plan(
        ledger=ledger,
        db=db,
        stop=stop,
        run_id=result.run_id,
        resolver=resolver,
        sender=sender,
        page_size=_page_size(options),
        retry_rejected=options.retry_rejected,
        dry_run=False,
        clock=JournalClock(),
        progress=progress,
        lag=options.lag(),
        keep_created_dates=replaying,
        **_guard_options(options, models if replaying else ()),
        deleter=Deleter(
            client=client,
            db=db,
            ledger=ledger,
            stop=stop,
            run_id=result.run_id,
            page_size=_page_size(options),
        ),
    )
    try:
        for model, res in zip(models, result.synced, strict=True):
            if res.error or stop.is_set:
                continue
            await sync_model(plan, model, res)
    finally:
        if sender.calibration.warning:
            result.warnings.append(sender.calibration.warning)


def _hold_upgrading(
    models: list[InteractionModel],
    result: SyncResult,
    held: Mapping[str, SchemaUpgrade],
    upgrading: str | None,
) -> None:
    """While ``schemas upgrade`` of a schema is unfinished, nothing is sent to it but by the
    upgrade's own replay: a row sent now would be deleted with the schema, or sent with a new
    createdDate instead of its original one."""
    for model, res in zip(models, result.synced, strict=True):
        upgrade = held.get(model.schema_id)
        if upgrade is None or model.schema_id == upgrading:
            continue
        res.error = (
            f"held: the upgrade of interaction schema {model.schema_id} (started "
            f"{upgrade.started_at}, at step {upgrade.phase}) is unfinished, so nothing is sent "
            "to it. Finish it with `voyado-sync schemas upgrade "
            f"{model.schema_id}`; then `voyado-sync run` sends its new rows."
        )


async def _dry_run(
    options: RunOptions,
    ledger: Ledger,
    db: WarehouseThread,
    stop: Stop,
    models: list[InteractionModel],
    result: SyncResult,
) -> None:
    """The same pipeline with a resolver that makes no request and a sender that does not
    send: SELECTs only, no DDL, no writes, no HTTP."""
    exists = await db(ledger.exists)
    now = utc_now()
    for model, res in zip(models, result.synced, strict=True):
        sender = DrySender()
        plan = Plan(
            ledger=ledger,
            db=db,
            stop=stop,
            run_id=result.run_id,
            resolver=OfflineResolver(ledger, db, exists),
            sender=sender,
            page_size=options.page_size or DRY_RUN_PAGE,
            retry_rejected=options.retry_rejected,
            dry_run=True,
            clock=lambda: f"<time of sending, e.g. {now}>",
            ledger_exists=exists,
            **_guard_options(options),
        )
        await sync_model(plan, model, res)
        res.samples = sender.samples


async def _respect_the_build(
    project: Project,
    ledger: Ledger,
    db: WarehouseThread,
    models: list[InteractionModel],
    result: SyncResult,
) -> list[InteractionModel]:
    """Hold back the models dbt's last build failed or skipped, or whose tests failed (see
    dbt_status.py): reported with the reason and their row counts, not synced (exit 1)."""
    status = read_build_status(project.manifest.path)
    if status.note:
        result.warnings.append(status.note)
    if not status.held:
        return models
    keep: list[InteractionModel] = []
    synced: list[ModelResult] = []
    held: list[tuple[InteractionModel, ModelResult]] = []
    for model, res in zip(models, result.synced, strict=True):
        reason = status.held.get(model.unique_id)
        if reason is None:
            keep.append(model)
            synced.append(res)
        else:
            res.skipped_by_dbt = f"{reason} (--ignore-dbt-status syncs it anyway)"
            held.append((model, res))
    exists = await db(ledger.exists)
    for model, res in held:
        with contextlib.suppress(VoyadoSyncError):
            staged = await db(
                stage.preview, ledger, model, retry_rejected=False, ledger_exists=exists
            )
            res.selected, res.already_sent = staged.selected, staged.already_sent
    result.synced = synced
    result.held = [res for _, res in held]
    return keep


async def _count_untouched(
    ledger: Ledger, db: WarehouseThread, models: list[InteractionModel], result: SyncResult
) -> None:
    """After a run stopped before some models were staged, their real row counts (SELECTs
    only), so that the summary never says "0 rows" for a model of 63."""
    exists = await db(ledger.exists)
    for model, res in zip(models, result.synced, strict=True):
        if res.selected or res.error:
            continue
        try:
            staged = await db(
                stage.preview, ledger, model, retry_rejected=False, ledger_exists=exists
            )
        except VoyadoSyncError:
            continue  # the counts are a courtesy: never hide the error that stopped the run
        res.selected = staged.selected
        res.already_sent = staged.already_sent
        res.previously_rejected = staged.previously_rejected


def _broken(project: Project, name: str, problems: list[ConfigProblem]) -> ModelResult:
    """A model with a configuration problem: reported and skipped, the others sync."""
    node = next((n for n in project.manifest.models if n.name == name), None)
    raw = node.voyado if node is not None else None
    schema_id = raw.get("schema_id") if isinstance(raw, dict) else None
    text = "; ".join(
        (f"key {p.key}: {p.message}" if p.key else p.message) if p.model == name else str(p)
        for p in problems
    )
    return ModelResult(
        name,
        schema_id if isinstance(schema_id, str) else "",
        error=f"not synced: {text}",
        problems=[{"model": p.model, "key": p.key, "message": p.message} for p in problems],
    )


def _guard_options(
    options: RunOptions, replaying: Sequence[InteractionModel] = ()
) -> dict[str, Any]:
    # A schema upgrade's replay is the mass send the user confirmed (with its automations
    # paused): the mass-send guard lets it through.
    return {
        "first_run": options.first_run,
        "allow_mass_send": frozenset(options.allow_mass_send) | {m.model for m in replaying},
        "allow_mass_delete": frozenset(options.allow_mass_delete),
    }


def _page_size(options: RunOptions) -> int:
    if options.page_size:
        return options.page_size
    return int(min(1000, max(50, options.rate * 2)))
