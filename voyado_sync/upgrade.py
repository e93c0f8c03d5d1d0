"""``voyado-sync schemas upgrade``: change a schema in place, keeping its id and its history.

Voyado cannot update an interaction schema, and deleting one deletes every interaction stored
under it. The seed's way to change one anyway (for example to make a property segmentable)
while keeping its id is five steps, carried out here from what voyado-sync already holds:

1. check the history is saved: every row the ledger holds as sent under the schema is still a
   row of a model that uses it (same key), or the upgrade is refused with the number of
   interactions that would be lost for good (rows gone from a mirror model are not history);
2. confirm: the schema id typed (or ``--confirm-delete``) and the automations triggered by it
   paused (or ``--automations-paused``);
3. delete the schema; 4. create it again from the project under the same id;
5. replay every previously sent row with its original createdDate, through the normal sync
   pipeline (journaled, reconciled, paced, contacts looked up as in any run).

Exactly once and resumable. The progress is a journal in the ledger (``schema_upgrades``,
:class:`~voyado_sync.state.UpgradePhase`), recorded ``marked`` first; then the rows to replay
are recorded in ``upgrade_rows`` and marked ``replay`` in ``deliveries``, all before the
DELETE leaves. A run again after a crash at any moment reads the ledger and Voyado's schema to
decide the next step::

    marked    + schema as before      -> mark what is not marked yet, delete
    marked    + schema absent         -> (it was deleted) create
    marked/deleted + schema as the project's -> (it was created) replay
    deleted   + schema absent         -> create
    recreated + schema as the project's -> replay what is left (rows in flight are
                                          reconciled first, as after any crash)

While an upgrade is unfinished, ``run`` sends nothing to that schema (sync/runner.py).
Never prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from voyado_sync.exceptions import SchemaRefused, StateError
from voyado_sync.project import load_project, open_warehouse, opened
from voyado_sync.schema_ops import _with_client
from voyado_sync.schemas import Change, diff_schemas
from voyado_sync.settings import RunOptions, connection_from_env
from voyado_sync.spec import InteractionModel
from voyado_sync.state import (
    REPLAY_OPEN,
    Ledger,
    SchemaHistory,
    SchemaUpgrade,
    Status,
    UpgradePhase,
    environment_of,
    new_run_id,
    utc_now,
)
from voyado_sync.sync.result import ProgressCallback, SyncResult
from voyado_sync.voyado import VoyadoClient

__all__ = ["UpgradePlan", "UpgradeResult", "apply_upgrade", "plan_upgrade"]


@dataclass(frozen=True)
class UpgradePlan:
    """What ``schemas upgrade`` would do; built from the ledger (SELECTs only) and GETs."""

    schema_id: str
    base_url: str
    models: tuple[str, ...]
    generated: dict[str, Any]
    voyado: dict[str, Any] | None
    changes: tuple[Change, ...]
    #: Rows the ledger holds as sent under the schema: what the delete destroys.
    sent: int
    #: Of those, rows no model row holds any more: lost for good if the schema is deleted.
    lost: int
    #: Of those, rows gone from a mirror model: deleted with the schema, not replayed.
    gone: int
    #: An upgrade of this schema a previous call left unfinished (resumed, not started).
    unfinished: SchemaUpgrade | None
    #: Rows an unfinished upgrade has still to replay, by ledger status.
    awaiting: dict[str, int]
    rate: float
    #: Why it cannot go ahead; empty when it can (given the confirmations).
    refusal: str = ""
    #: Voyado already holds the project's definition and no upgrade is unfinished: there is
    #: nothing to do (an upgrade run again after it finished ends here, exit 0).
    up_to_date: bool = False

    def up_to_date_message(self) -> str:
        return (
            f"interaction schema {self.schema_id} in Voyado already matches model(s) "
            f"{', '.join(self.models)}: nothing to upgrade, nothing was changed."
        )

    @property
    def to_replay(self) -> int:
        if self.unfinished is not None:
            return sum(self.awaiting.values())
        return max(0, self.sent - self.lost - self.gone)

    @property
    def deleted_with_schema(self) -> int:
        return self.sent if self.deletes else 0

    @property
    def deletes(self) -> bool:
        """Whether the schema is still to be deleted."""
        return self.unfinished is None or (
            self.unfinished.phase == UpgradePhase.MARKED and self.voyado is not None
        )

    @property
    def replay_seconds(self) -> float:
        """At the configured rate, one POST per row (contact lookups not yet cached come on
        top, one per distinct identifier)."""
        return self.to_replay / self.rate if self.rate > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "models": list(self.models),
            "changes": [
                {
                    "property": c.property,
                    "kind": c.kind,
                    "detail": c.detail,
                    "classification": c.classification,
                }
                for c in self.changes
            ],
            "resuming": self.unfinished.phase if self.unfinished else None,
            "deleted_with_schema": self.deleted_with_schema,
            "to_replay": self.to_replay,
            "gone_from_mirror": self.gone,
            "replay_seconds": round(self.replay_seconds, 1),
            "rate": self.rate,
            "lost": self.lost,
            "refusal": self.refusal or None,
            "up_to_date": self.up_to_date,
            "voyado": self.voyado,
            "definition": self.generated,
        }


@dataclass(frozen=True)
class UpgradeResult:
    """What ``schemas upgrade`` did. ``lost`` is 0 whenever it went ahead (the history check
    refuses otherwise)."""

    schema_id: str
    deleted_with_schema: int
    replayed: int
    #: Rows still to replay (failed, unverified): run ``schemas upgrade`` again.
    remaining: dict[str, int]
    definition: dict[str, Any]
    sync: SyncResult | None
    #: History rows the replay could not put back (Voyado refused them for good: rejected,
    #: or their contact is gone), by status: in Voyado no more.
    lost_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Said instead of the usual message (nothing to upgrade).
    note: str = ""

    @property
    def lost(self) -> int:
        return sum(self.lost_rows.values())

    @property
    def done(self) -> bool:
        return not self.remaining

    @property
    def exit_code(self) -> int:
        if self.sync is not None and self.sync.exit_code == 2:
            return 2
        return 0 if self.done and not self.lost else 1

    def message(self) -> str:
        sid = self.schema_id
        if self.note:
            return self.note
        if self.done and self.lost:
            why = ", ".join(f"{n} {status}" for status, n in sorted(self.lost_rows.items()))
            return (
                f"Upgraded interaction schema {sid}, but {self.lost} interaction(s) of its "
                f"history were lost: Voyado refused them when they were replayed ({why}), so "
                f"it no longer holds them; {self.replayed} replayed with their original "
                "createdDate. `voyado-sync rejected` lists each row with Voyado's answer; a "
                "row waiting for its contact is sent by a later run once the contact exists."
            )
        if self.done:
            return (
                f"Upgraded interaction schema {sid}: deleted with {self.deleted_with_schema} "
                f"interaction(s) sent by voyado-sync, created again, {self.replayed} replayed "
                "with their original createdDate. Automations triggered by it can be resumed."
            )
        left = ", ".join(f"{n} {status}" for status, n in sorted(self.remaining.items()))
        return (
            f"The upgrade of interaction schema {sid} is not finished: {self.replayed} "
            f"replayed, still to replay: {left}. Run `voyado-sync schemas upgrade {sid}` again "
            "to finish it; until then `voyado-sync run` sends nothing to it."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "done": self.done,
            "deleted_with_schema": self.deleted_with_schema,
            "replayed": self.replayed,
            "lost": self.lost,
            "lost_by_status": self.lost_rows,
            "remaining": self.remaining,
            "definition": self.definition,
            "message": self.message(),
            "replay": self.sync.as_dict() if self.sync is not None else None,
        }


# -- plan -------------------------------------------------------------------------------------


def plan_upgrade(options: RunOptions, schema_id: str) -> UpgradePlan:
    """The upgrade of ``schema_id``: differences, history, what is left of an unfinished one.

    SELECTs on the ledger (no DDL) and GET requests only.
    """
    connection = connection_from_env(options.base_url)
    # Only the models that use the schema are resolved: a broken model elsewhere in the
    # project does not stand in the way (one that uses the schema does).
    project = load_project(dataclasses.replace(options, select=(), exclude=()))
    names = tuple(sorted(n for n, spec in project.specs.items() if spec.schema_id == schema_id))
    if not names:
        used = sorted({spec.schema_id for spec in project.specs.values()})
        raise SchemaRefused(
            f"no dbt model of the project uses interaction schema {schema_id} (schema ids "
            f"used: {', '.join(used) or 'none'}); an upgrade recreates a schema from the "
            "models that use it. Nothing was changed."
        )
    with opened(dataclasses.replace(options, select=names, exclude=())) as (every, warehouse):
        models = [m for m in every if m.schema_id == schema_id]
        generated = models[0].schema_body()
        differing = _differing(models)

        async def fetch(client: VoyadoClient) -> dict[str, Any] | None:
            return await client.get_schema(schema_id)

        voyado = _with_client(connection, options, fetch)
        ledger = Ledger(
            warehouse,
            schema=options.state_schema,
            environment=environment_of(connection.base_url),
        )
        unfinished: SchemaUpgrade | None = None
        awaiting: dict[str, int] = {}
        history = SchemaHistory(0, 0, 0)
        deletes = True
        if ledger.exists():
            unfinished = ledger.upgrade_of(schema_id, connection.base_url)
            if unfinished is not None and unfinished.phase == UpgradePhase.DONE:
                unfinished = None
            if unfinished is not None:
                awaiting = ledger.awaiting_replay(unfinished)
            history = ledger.schema_history(schema_id, models)
        sent, lost = history.sent, history.lost
        refusal = ""
        changes = tuple(diff_schemas(generated, voyado)) if voyado is not None else ()
        # Rows still marked replay mean an upgrade is under way whatever its record says.
        replaying = ledger.sent_count(schema_id, Status.REPLAY) if ledger.exists() else 0
        up_to_date = (
            unfinished is None
            and voyado is not None
            and not changes
            and not differing
            and not replaying
        )
        if unfinished is None:
            if replaying and not changes:
                refusal = (
                    f"{replaying} row(s) of interaction schema {schema_id} are marked for "
                    "replay, but the ledger holds no unfinished upgrade of it for "
                    f"{connection.base_url}: an upgrade started with another spelling of "
                    "VOYADO_BASE_URL? Run `voyado-sync schemas upgrade` with the base URL it "
                    "started with. Nothing was changed."
                )
            elif not up_to_date:
                refusal = differing or _refusal(
                    schema_id, models, voyado, changes, lost, sent, ledger
                )
        else:
            deletes = unfinished.phase == UpgradePhase.MARKED and voyado is not None
            if deletes:
                lost = 0  # checked when it was confirmed; the rows are marked since
    plan = UpgradePlan(
        schema_id=schema_id,
        base_url=connection.base_url,
        models=tuple(m.model for m in models),
        generated=generated,
        voyado=voyado,
        changes=changes,
        sent=sent if deletes and unfinished is None else (unfinished.planned if unfinished else 0),
        lost=lost if unfinished is None else 0,
        gone=history.gone if unfinished is None else 0,
        unfinished=unfinished,
        awaiting=awaiting,
        rate=options.rate,
        refusal=refusal,
        up_to_date=up_to_date,
    )
    return plan


def _differing(models: list[InteractionModel]) -> str:
    """Why models that share a schema cannot recreate it: they define it differently."""
    first = models[0]
    for other in models[1:]:
        drift = diff_schemas(first.schema_body(), other.schema_body())
        if drift:
            return (
                f"models {first.model} and {other.model} both use interaction schema "
                f"{first.schema_id} but define it differently ("
                + "; ".join(str(c) for c in drift)
                + "), so the upgrade cannot tell which definition to create. Make their "
                "config.meta.voyado agree. Nothing was changed."
            )
    return ""


def _refusal(
    schema_id: str,
    models: list[InteractionModel],
    voyado: dict[str, Any] | None,
    changes: tuple[Change, ...],
    lost: int,
    sent: int,
    ledger: Ledger,
) -> str:
    names = ", ".join(m.model for m in models)
    if voyado is None:
        return (
            f"interaction schema {schema_id} does not exist in Voyado, so there is nothing to "
            f"upgrade: `voyado-sync schemas push` (or the next `voyado-sync run`) creates it "
            f"from model(s) {names}. Nothing was changed."
        )
    if not ledger.quirks.deletes:
        return (
            f"schemas upgrade needs a ledger whose sent entries can be superseded (DELETE), "
            f"which this warehouse ({ledger.dialect}) lacks; use a new schema_id instead "
            "(see README, Changing a schema). Nothing was changed."
        )
    if lost:
        return (
            f"refused to upgrade interaction schema {schema_id}: deleting it would lose "
            f"{lost} of the {sent} interaction(s) voyado-sync sent under it for good, because "
            f"no row of model(s) {names} has their key any more, so they cannot be sent "
            "again. Restore those rows in the model(s), or keep the history under the old "
            "schema and use a new schema_id with first_run: backfill (README, Changing a "
            "schema). Nothing was changed."
        )
    return ""


# -- apply ------------------------------------------------------------------------------------


def apply_upgrade(
    plan: UpgradePlan,
    options: RunOptions,
    *,
    confirm: str | None,
    automations_paused: bool,
    progress: ProgressCallback | None = None,
) -> UpgradeResult:
    """Carry out (or resume) the upgrade of ``plan``.

    A new upgrade needs ``confirm`` equal to the schema id and ``automations_paused``; an
    unfinished one was confirmed when it started and is finished without asking again.
    Raises SchemaRefused (nothing changed, or, while resuming, nothing more) otherwise.
    """
    sid = plan.schema_id
    if plan.refusal:
        raise SchemaRefused(plan.refusal)
    if plan.up_to_date:
        return UpgradeResult(
            schema_id=sid,
            deleted_with_schema=0,
            replayed=0,
            remaining={},
            definition=plan.generated,
            sync=None,
            note=plan.up_to_date_message(),
        )
    if plan.unfinished is None:
        missing = []
        if confirm != sid:
            missing.append(
                f"type the schema id at the prompt or pass --confirm-delete {sid}"
                + ("" if confirm is None else f" (got {confirm!r})")
            )
        if not automations_paused:
            missing.append(
                f"pause the automations triggered by new {sid} interactions (so that contacts "
                "do not enter them again when the history is replayed), then confirm at the "
                "prompt or pass --automations-paused"
            )
        if missing:
            raise SchemaRefused(
                f"the upgrade of interaction schema {sid} was not confirmed: "
                + "; ".join(missing)
                + ". Nothing was changed."
            )
    connection = connection_from_env(options.base_url)
    run_id = new_run_id()
    upgrade = _prepare(plan, options, run_id, connection.base_url)
    deleted = upgrade.deleted_with_schema
    models = plan.models

    from voyado_sync.sync import runner

    replay_options = dataclasses.replace(options, select=models, exclude=(), dry_run=False)
    sync = runner.run(replay_options, progress=progress, upgrading=sid)

    statuses = _finish(options, upgrade, sync, models)
    remaining = {s: n for s, n in statuses.items() if s in REPLAY_OPEN}
    lost = {s: n for s, n in statuses.items() if s not in REPLAY_OPEN and s != Status.SENT}
    return UpgradeResult(
        schema_id=sid,
        deleted_with_schema=deleted,
        replayed=statuses.get(Status.SENT, 0),
        remaining=remaining,
        definition=plan.generated,
        sync=sync,
        lost_rows=lost,
    )


def _prepare(plan: UpgradePlan, options: RunOptions, run_id: str, base_url: str) -> SchemaUpgrade:
    """Steps 1 to 4 (under the ledger's lock): mark, delete, create. Returns the upgrade as
    recorded, ready to replay."""
    sid = plan.schema_id
    generated = plan.generated
    warehouse = open_warehouse(options)
    ledger = Ledger(warehouse, schema=options.state_schema, environment=environment_of(base_url))
    try:
        ledger.ensure()
        ledger.acquire_lock(run_id)
        try:
            with opened(dataclasses.replace(options, select=plan.models, exclude=())) as (
                every,
                _,
            ):
                models = [m for m in every if m.schema_id == sid]
            upgrade = ledger.upgrade_of(sid, base_url)
            if upgrade is None or upgrade.phase == UpgradePhase.DONE:
                upgrade = _start(plan, ledger, models, run_id, base_url)
            started: SchemaUpgrade = upgrade

            def record(phase: UpgradePhase, message: str = "") -> None:
                nonlocal started
                started = started.at(phase, message=message)
                ledger.record_upgrade(started)

            old = json.loads(started.old_definition) if started.old_definition else {}

            async def work(client: VoyadoClient) -> None:
                nonlocal started
                current = await client.get_schema(sid)
                if started.phase == UpgradePhase.MARKED:
                    if current is not None and not diff_schemas(generated, current):
                        record(UpgradePhase.DELETED, "found created again")
                    elif current is not None and old and not diff_schemas(old, current):
                        # A crash may have come between recording the upgrade and marking
                        # its rows: what is still sent is checked and marked before anything
                        # is deleted.
                        left = ledger.schema_history(sid, models)
                        gone = ledger.left_rows(
                            sid, models, upgrade_id=started.run_id, history_only=True
                        )
                        if left.lost or gone:
                            raise SchemaRefused(
                                _refusal(
                                    sid,
                                    models,
                                    current,
                                    (),
                                    left.lost + gone,
                                    left.sent + started.planned,
                                    ledger,
                                ).replace(" Nothing was changed.", "")
                                + " The upgrade stays unfinished (it was confirmed and its "
                                "rows are marked), so `voyado-sync run` holds the schema: "
                                f"restore the rows, then run `voyado-sync schemas upgrade {sid}`"
                                " again."
                            )
                        marked = ledger.mark_for_replay(sid, models, run_id=started.run_id)
                        if marked != started.planned:
                            started = dataclasses.replace(started, planned=marked)
                            ledger.record_upgrade(started)
                        await client.delete_schema(sid)
                        current = None
                        record(UpgradePhase.DELETED)
                    elif current is None:
                        record(UpgradePhase.DELETED, "found deleted")
                    else:
                        raise SchemaRefused(_changed(sid, current, generated))
                if started.phase == UpgradePhase.DELETED:
                    if current is None:
                        await client.create_schema(generated)
                        record(UpgradePhase.RECREATED)
                    elif not diff_schemas(generated, current):
                        record(UpgradePhase.RECREATED, "found created")
                    else:
                        raise SchemaRefused(_changed(sid, current, generated))
                elif started.phase in (UpgradePhase.RECREATED, UpgradePhase.REPLAYING) and (
                    current is None or diff_schemas(generated, current)
                ):
                    raise SchemaRefused(
                        f"the upgrade of interaction schema {sid} was replaying, but the "
                        "schema in Voyado is "
                        + ("gone" if current is None else "not the project's any more")
                        + ": someone deleted or changed it, or the model's meta.voyado "
                        "changed since. Restore the definition the upgrade created (see "
                        "`voyado-sync schemas diff`) and run `voyado-sync schemas upgrade "
                        f"{sid}` again."
                    )

            _with_client(connection_from_env(options.base_url), options, work)
            return started
        finally:
            ledger.release_lock(run_id)
    finally:
        warehouse.close()


def _start(
    plan: UpgradePlan,
    ledger: Ledger,
    models: list[InteractionModel],
    run_id: str,
    base_url: str,
) -> SchemaUpgrade:
    """Step 1 again under the lock, then record the upgrade, then mark its history for
    replay: a crash after the record leaves an upgrade that holds ``run`` and is resumed
    (marking what is left), never marked rows that ``run`` would send to the old schema."""
    if plan.voyado is None:
        raise SchemaRefused(plan.refusal or f"interaction schema {plan.schema_id} is gone")
    history = ledger.schema_history(plan.schema_id, models)
    if history.lost:
        raise SchemaRefused(
            _refusal(
                plan.schema_id,
                models,
                plan.voyado,
                plan.changes,
                history.lost,
                history.sent,
                ledger,
            )
        )
    now = utc_now()
    upgrade = SchemaUpgrade(
        schema_id=plan.schema_id,
        base_url=base_url,
        phase=UpgradePhase.MARKED,
        run_id=run_id,
        planned=history.to_replay,
        deleted_with_schema=history.sent,
        old_definition=json.dumps(plan.voyado, sort_keys=True),
        new_definition=json.dumps(plan.generated, sort_keys=True),
        started_at=now,
        updated_at=now,
    )
    ledger.record_upgrade(upgrade)
    marked = ledger.mark_for_replay(plan.schema_id, models, run_id=run_id)
    if marked != upgrade.planned:
        upgrade = dataclasses.replace(upgrade, planned=marked)
        ledger.record_upgrade(upgrade)
    return upgrade


def _finish(
    options: RunOptions, upgrade: SchemaUpgrade, sync: SyncResult, names: tuple[str, ...]
) -> dict[str, int]:
    """Step 5's end: done when no row of the upgrade is left to replay. Returns where its
    rows stand, by status (Ledger.replay_statuses)."""
    warehouse = open_warehouse(options)
    ledger = Ledger(
        warehouse, schema=options.state_schema, environment=environment_of(upgrade.base_url)
    )
    run_id = new_run_id()
    try:
        ledger.acquire_lock(run_id)
        try:
            with opened(dataclasses.replace(options, select=names, exclude=())) as (every, _):
                models = [m for m in every if m.schema_id == upgrade.schema_id]
            # Rows that left every model since they were marked can never be replayed; but a
            # model half-built or empty by mistake must not end its history that way.
            left = ledger.left_rows(upgrade.schema_id, models, upgrade_id=upgrade.run_id)
            if left and _strandable(left, upgrade, sync):
                ledger.strand_left_rows(upgrade.schema_id, models, upgrade_id=upgrade.run_id)
            statuses = ledger.replay_statuses(upgrade)
            remaining = {s: n for s, n in statuses.items() if s in REPLAY_OPEN}
            current = ledger.upgrade_of(upgrade.schema_id, upgrade.base_url)
            if current is None:
                raise StateError(f"the upgrade of {upgrade.schema_id} vanished from the ledger")
            if not remaining and current.phase != UpgradePhase.DONE:
                ledger.record_upgrade(current.at(UpgradePhase.DONE))
            elif remaining and current.phase != UpgradePhase.REPLAYING:
                ledger.record_upgrade(current.at(UpgradePhase.REPLAYING, message=sync.run_id))
            return statuses
        finally:
            ledger.release_lock(run_id)
    finally:
        warehouse.close()


#: Rows of an upgrade that may be given up as lost in one go when they left the model.
STRAND_FLOOR = 10


def _strandable(left: int, upgrade: SchemaUpgrade, sync: SyncResult) -> bool:
    """Whether rows that left the model may be given up: only after a replay that ran
    through (not interrupted, no model stopped or empty), and no more than 10 or half of
    the upgrade's rows (the mass-delete guard's rule)."""
    if sync.interrupted or sync.fatal or any(m.error or not m.selected for m in sync.models):
        return False
    return left <= STRAND_FLOOR or left * 2 <= upgrade.planned


def _changed(schema_id: str, current: dict[str, Any], generated: dict[str, Any]) -> str:
    drift = "; ".join(str(c) for c in diff_schemas(generated, current))
    return (
        f"interaction schema {schema_id} changed in Voyado since the upgrade started (it is "
        f"neither the definition it had nor the project's: {drift}), so nothing more was "
        "done. Check `voyado-sync schemas diff`, then run `voyado-sync schemas upgrade "
        f"{schema_id}` again."
    )
