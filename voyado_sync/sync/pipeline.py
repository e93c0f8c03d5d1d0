"""One model's sync: look up rows left in flight, stage, then page -> prepare -> resolve ->
journal -> deliver -> settle, with one page in flight while the next is prepared so the
request pipeline never drains at a page boundary; last, look again for rows whose outcome
was unknown (verify.py).

The same pipeline runs a dry run: a :class:`Plan` with the dry run's stager, resolver and
sender, and no ledger writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voyado_sync.diff import REPLACED, VANISHED
from voyado_sync.exceptions import FatalApiError, RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.spec import FirstRun, InteractionModel, parse_first_run
from voyado_sync.state import (
    FIRST_SYNC_COMPLETED,
    FIRST_SYNC_STARTED,
    Delivery,
    History,
    Ledger,
    utc_now,
)
from voyado_sync.sync import first_run, guards, merged, mirror, prepare, settle, stage, verify
from voyado_sync.sync.contacts import ContactResolver, Resolver
from voyado_sync.sync.deliver import Sender, VoyadoSender
from voyado_sync.sync.lifecycle import Db, Stop
from voyado_sync.sync.result import ModelResult, ProgressCallback
from voyado_sync.sync.values import Checked, PendingRow, Prepared, Settled
from voyado_sync.voyado import ContactFound

Journal = Callable[[list[Delivery]], Awaitable[None]]


@dataclass
class Plan:
    """What one model's pipeline runs with: real parts for a run, inert ones for a dry run."""

    ledger: Ledger
    db: Db
    stop: Stop
    run_id: str
    resolver: Resolver
    sender: Sender
    page_size: int
    retry_rejected: bool
    dry_run: bool
    clock: Callable[[], str]
    progress: ProgressCallback | None = None
    #: Whether the ledger exists (a dry run reads a stand-in for a missing one).
    ledger_exists: bool = True
    #: Seconds Voyado may take to list what it stored (settings.DEFAULT_LISTING_LAG).
    lag: float = 10.0
    #: A schema upgrade's replay (upgrade.py): rows the ledger holds a createdDate for are
    #: sent with it, their original, instead of a new journal time.
    keep_created_dates: bool = False
    #: This model's rows whose outcome is unknown, looked up again at the end.
    unknown: list[verify.Unknown] = field(default_factory=list)
    #: ``--first-run``: the first-sync policy over the models' own.
    first_run: FirstRun | None = None
    allow_mass_send: frozenset[str] = frozenset()
    allow_mass_delete: frozenset[str] = frozenset()
    #: Deletes mirror models' interactions (None in a dry run).
    deleter: mirror.Deleter | None = None

    async def write(self, deliveries: list[Delivery]) -> None:
        if deliveries and not self.dry_run:
            await self.db(self.ledger.write, deliveries)

    async def write_settled(self, settled: list[Settled], res: ModelResult) -> None:
        await self.write([s.delivery for s in settled])
        for s in settled:
            res.add(s)


async def sync_model(plan: Plan, model: InteractionModel, res: ModelResult) -> None:
    """Send the model's pending rows; ``res`` receives every count."""
    if plan.dry_run:
        staged = await plan.db(
            stage.preview,
            plan.ledger,
            model,
            retry_rejected=plan.retry_rejected,
            ledger_exists=plan.ledger_exists,
        )
        await _sync_staged(plan, model, res, staged)
        return
    sender = plan.sender
    assert isinstance(sender, VoyadoSender)
    plan.unknown = []
    await _first_look(plan, sender, model, res)
    if model.mirror and plan.deleter is not None:
        await plan.deleter.recover(model, res)
    try:
        staged = await plan.db(stage.stage, plan.ledger, model, retry_rejected=plan.retry_rejected)
        await _sync_staged(plan, model, res, staged)
    finally:
        await plan.db(stage.unstage, plan.ledger, model)
    await verify.look_again(
        plan.unknown,
        sender=sender,
        lag=plan.lag,
        stop=plan.stop,
        write=lambda settled: plan.write_settled(settled, res),
        run_id=plan.run_id,
        known=lambda: plan.db(plan.ledger.a_sent_interaction, model.schema_id),
    )
    res.unverified = await plan.db(plan.ledger.count_in_flight, model.model, model.schema_id)


async def _sync_staged(
    plan: Plan, model: InteractionModel, res: ModelResult, staged: stage.Staged
) -> None:
    """The guards, then delivery; a first sync is recorded started before anything is
    sent and completed once the run went through every row."""
    res.selected = staged.selected
    res.already_sent = staged.already_sent
    exists = plan.ledger_exists
    # Candidates not staged are rows rejected earlier and rows still in flight (unverified,
    # looked up rather than sent): only the former were rejected.
    held = await plan.db(plan.ledger.count_in_flight, model.model, model.schema_id) if exists else 0
    res.previously_rejected = max(0, staged.previously_rejected - held)
    history = await plan.db(plan.ledger.history, model.model, model.schema_id)
    deletes: list[mirror.Planned] = []
    live = 0
    if model.mirror:
        deletes = await plan.db(mirror.planned, plan.ledger, model, exists=exists)
        live = await plan.db(mirror.live, plan.ledger, model, exists=exists)
    first = _first_sync(plan, history, staged)
    if history.first_sync and not first:
        # The guards decide on the same answer: past its first sync (renamed, replaying).
        history = dataclasses.replace(history, completed=True)
        if not plan.keep_created_dates:
            await _record_first_sync(plan, model, FIRST_SYNC_COMPLETED, None)
    policy = _policy(plan, model, history) if first else None
    refused = _unusable(model, policy)
    stopped = refused or _guard(plan, model, history, staged, policy, deletes, live)
    if stopped is not None:
        res.stopped_by_guard = stopped.guard or None
        res.error = ("a real run would stop here: " if plan.dry_run else "") + stopped.message
        res.not_sent = staged.rows
        return
    if first:
        # Before anything is sent: a rerun after a crash is this first sync again, under
        # the same policy (--first-run is not repeated by a scheduler's retry).
        await _record_first_sync(plan, model, FIRST_SYNC_STARTED, policy)
    resumed = first and policy is not None and str(policy) == history.started_with
    await _deliver_staged(plan, model, res, staged, policy, deletes, resumed=resumed)
    # A model that came back empty has not had its first sync: its rows are still to come.
    if first and not plan.stop.is_set and staged.selected:
        await _record_first_sync(plan, model, FIRST_SYNC_COMPLETED, policy)


async def _record_first_sync(
    plan: Plan, model: InteractionModel, state: str, policy: FirstRun | None
) -> None:
    """Journal the model's first sync ``state`` (nothing in a dry run)."""
    if not plan.dry_run:
        await plan.db(
            plan.ledger.record_first_sync,
            model.model,
            model.schema_id,
            state=state,
            policy=str(policy or ""),
            run_id=plan.run_id,
        )


def _first_sync(plan: Plan, history: History, staged: stage.Staged) -> bool:
    """Whether this run is (part of) the model's first sync for its schema_id. Not during a
    schema upgrade's replay (its rows were sent before), nor for a model none of whose
    first syncs was ever started but most of whose rows the ledger already holds: a renamed
    model (its rows are its schema's and keys', whatever the model is called). A model new
    to a shared schema with a few keys another model sent is at its first sync."""
    if plan.keep_created_dates or not history.first_sync:
        return False
    never_started = history.completed is not None and history.started_with is None
    renamed = never_started and staged.already_sent and staged.already_sent * 2 >= staged.selected
    return not renamed


def _policy(plan: Plan, model: InteractionModel, history: History) -> FirstRun | None:
    """A first sync's policy: --first-run, else the YAML's, else the one an interrupted
    first sync started with."""
    chosen = plan.first_run or model.first_run
    if chosen is None and history.started_with:
        chosen = parse_first_run(history.started_with)
    return chosen


def _unusable(model: InteractionModel, policy: FirstRun | None) -> guards.Stopped | None:
    """``since`` on a model without created_date (from --first-run; the YAML cannot say it):
    every row's createdDate would be the moment it is sent, so nothing would be older than
    the date and every row would be sent, unguarded."""
    if policy is None or policy.policy != "since" or model.created_date_column:
        return None
    return guards.Stopped(
        "",
        f"--first-run {policy} cannot apply to {model.model}: it has no created_date "
        "(config.meta.voyado.created_date), so every row's createdDate would be the time it "
        "is sent and no row would be older than the date: all of them would be sent. Nothing "
        f"was sent for it. Select the models that have created_date (-s), or choose backfill "
        f"or baseline for {model.model}.",
    )


async def _deliver_staged(
    plan: Plan,
    model: InteractionModel,
    res: ModelResult,
    staged: stage.Staged,
    policy: FirstRun | None,
    deletes: list[mirror.Planned],
    *,
    resumed: bool = False,
) -> None:
    """A mirror model's deletes, then the first run's baseline, then sending. ``resumed``:
    the first sync goes on under the policy it started with."""
    skip: set[str] = set()
    if deletes:
        if plan.dry_run:
            res.deleted = sum(1 for p in deletes if p.kind == VANISHED)
            res.replaced = sum(1 for p in deletes if p.kind == REPLACED)
            for kind in ("deleted", "replaced"):
                found = mirror.samples(deletes, VANISHED if kind == "deleted" else REPLACED)
                if found:
                    res.would[kind] = found
        elif plan.deleter is not None:
            skip |= await plan.deleter.delete(deletes, res)
    if policy is not None and policy.policy != "backfill" and not plan.stop.is_set:
        keys, rows, samples = await first_run.baseline(
            db=plan.db,
            ledger=plan.ledger,
            model=model,
            staged=staged,
            policy=policy,
            run_id=plan.run_id,
            page_size=plan.page_size,
            write=not plan.dry_run,
            resumed=resumed,
        )
        res.baselined = rows
        if samples and plan.dry_run:
            res.would["baselined"] = samples
        skip |= keys
        if policy.policy == "baseline":
            return
    await _send_pending(plan, model, res, staged, skip)


def _guard(
    plan: Plan,
    model: InteractionModel,
    history: History,
    staged: stage.Staged,
    policy: FirstRun | None,
    deletes: list[mirror.Planned],
    live: int,
) -> guards.Stopped | None:
    return (
        guards.first_run(model, history, rows=staged.rows, choice=policy)
        or guards.mass_send(
            model,
            history,
            rows=staged.new_keys,
            selected=staged.selected,
            allowed=model.model in plan.allow_mass_send,
        )
        or guards.mass_delete(
            model,
            deletes=sum(1 for p in deletes if p.request),
            live=live,
            allowed=model.model in plan.allow_mass_delete,
        )
    )


async def _first_look(
    plan: Plan, sender: VoyadoSender, model: InteractionModel, res: ModelResult
) -> None:
    """Rows a previous run left in flight: found in Voyado, sent; absent, looked up again at
    the end (and resent); the listing cannot say, left in flight."""
    rows = await plan.db(plan.ledger.in_flight, model.model, model.schema_id)
    if not rows:
        return
    contacts = sorted({r.contact_id for r in rows if r.contact_id})
    sender.claimed |= await plan.db(plan.ledger.sent_ids, model.schema_id, contacts)
    unknowns: list[verify.Unknown] = []
    settled: list[Settled] = []
    for row in rows:
        one = verify.from_ledger(row, contact_key=model.contact_key)
        if isinstance(one, verify.Unknown):
            unknowns.append(one)
        else:
            settled.append(one)
    found, still = await verify.first_look(unknowns, sender=sender, lag=plan.lag)
    await plan.write_settled(settled + found, res)
    plan.unknown.extend(still)


async def _send_pending(
    plan: Plan,
    model: InteractionModel,
    res: ModelResult,
    staged: stage.Staged,
    skip: set[str] | None = None,
) -> None:
    """Send the pending rows but those in ``skip`` (baselined, or replaced rows whose old
    interaction is not deleted yet)."""
    builder = PayloadBuilder(model)
    handled_before = _handled(res)
    _report(plan, model, 0, staged.keys)
    outstanding: list[tuple[list[Prepared], list[asyncio.Task[object]]]] = []
    after = 0
    done = 0
    skipped = 0
    try:
        while not plan.stop.is_set:
            page = await plan.db(
                stage.page, plan.ledger, model, staged, after=after, size=plan.page_size
            )
            if not page:
                break
            after = page[-1][0]
            rows = [r for _, r in page]
            if skip:
                kept = [r for r in rows if r.ref.row_key not in skip]
                skipped += sum(r.dup_count for r in rows) - sum(r.dup_count for r in kept)
                rows = kept
            prepared, settled = await _prepare_page(plan, builder, model, rows, res)
            if isinstance(plan.sender, VoyadoSender) and prepared:
                # Reconciliation never takes an interaction the ledger attributes to another
                # row (an earlier run's identical body for the same contact).
                contacts = sorted({str(p.body["contactId"]) for p in prepared})
                plan.sender.claimed |= await plan.db(
                    plan.ledger.sent_ids, model.schema_id, contacts
                )
            # The journal is committed before any of these requests leaves.
            now = utc_now()
            journal = [
                Delivery.journaled(p.row.ref, p.body, run_id=plan.run_id, now=now) for p in prepared
            ]
            await plan.write([s.delivery for s in settled] + journal)
            for s in settled:
                res.add(s)
            done += len(settled)
            tasks: list[asyncio.Task[object]] = [
                asyncio.create_task(plan.sender.send(p)) for p in prepared
            ]
            outstanding.append((prepared, tasks))
            # Two pages in flight while the next is read: one slow answer late in a page
            # (a 2 s tail at 500 ms latency) then does not stall sending (bench: 91.7% -> 99%
            # of --rate 150).
            if len(outstanding) > 2:
                done += await _settle_page(plan, model, res, *outstanding.pop(0))
                _report(plan, model, done, staged.keys)
                if not plan.dry_run:
                    await plan.db(plan.ledger.heartbeat, plan.run_id)
    finally:
        # Whatever happened, every request that left gets its answer recorded.
        errors: list[BaseException] = []
        while outstanding:
            try:
                done += await _settle_page(plan, model, res, *outstanding.pop(0))
            except BaseException as exc:  # settle the rest before raising
                plan.stop.set()
                errors.append(exc)
        _report(plan, model, done, staged.keys)
        # Every pending row is accounted for: what the run did not reach is not sent, like
        # the rows it journaled and never sent.
        res.not_sent = max(0, staged.rows - skipped - (_handled(res) - handled_before))
        if errors:
            raise errors[0]


async def _prepare_page(
    plan: Plan,
    builder: PayloadBuilder,
    model: InteractionModel,
    rows: list[PendingRow],
    res: ModelResult,
) -> tuple[list[Prepared], list[Settled]]:
    """Check rows and resolve contacts: (rows to send, rows settled without sending)."""
    now = utc_now()
    settled: list[Settled] = []
    ready: list[Checked] = []
    for row in rows:
        try:
            checked = prepare.check(builder, model, row)
        except RowRejected as exc:
            settled.append(settle.not_sendable(row, exc.reason, run_id=plan.run_id, now=now))
            continue
        res.count_normalised(checked.contact.changed)
        ready.append(checked)

    contact_ids: dict[str, str] = {}
    if model.contact_key == "contactId":
        contact_ids = {c.contact.value: c.contact.value for c in ready}
    else:
        resolution = await plan.resolver.resolve(
            model.contact_key, sorted({c.contact.value for c in ready})
        )
        res.lookups += resolution.looked_up
        res.lookups_cached += resolution.cached
        still: list[Checked] = []
        for checked in ready:
            identifier = checked.contact.value
            outcome = resolution.outcomes[identifier]
            if isinstance(outcome, ContactFound):
                contact_ids[identifier] = outcome.contact_id
                still.append(checked)
            else:
                settled.append(
                    settle.unresolved(
                        model, checked.row, identifier, outcome, run_id=plan.run_id, now=now
                    )
                )
        ready = still
    if plan.keep_created_dates and ready:
        recorded = await plan.db(
            plan.ledger.recorded_created_dates,
            model.model,
            model.schema_id,
            [c.row.ref.row_key for c in ready if c.row.prev_status is not None],
        )
        ready = [
            dataclasses.replace(c, created=recorded.get(c.row.ref.row_key, c.created))
            for c in ready
        ]
    prepared = [
        prepare.prepared(
            model,
            c,
            contact_id=contact_ids[c.contact.value],
            created_date=c.created or plan.clock(),
        )
        for c in ready
    ]
    return prepared, settled


async def _settle_page(
    plan: Plan,
    model: InteractionModel,
    res: ModelResult,
    prepared: list[Prepared],
    tasks: list[asyncio.Task[object]],
) -> int:
    """Wait for a page's requests and write their outcomes; 401/403 stops the run."""
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    pairs: list[tuple[Prepared, object]] = list(zip(prepared, outcomes, strict=True))
    fatal: BaseException | None = None
    settled: list[Settled] = []
    if isinstance(plan.resolver, ContactResolver):
        try:
            followed = await merged.follow(
                pairs,
                model=model,
                resolver=plan.resolver,
                sender=plan.sender,
                journal=plan.write,
                stop=plan.stop,
                run_id=plan.run_id,
            )
            pairs, settled, fatal = followed.pairs, followed.settled, followed.fatal
            res.invalidated += followed.invalidated
            res.lookups += followed.looked_up
        except Exception as exc:  # e.g. the warehouse: nothing was sent again, so retry later
            fatal = exc
            plan.stop.set()
            pairs = [
                (item, settle.lookup_failed_after_gone(item, exc))
                if item.identifier is not None and settle.contact_gone(outcome)
                else (item, outcome)
                for item, outcome in pairs
            ]
    now = utc_now()
    for item, outcome in pairs:
        if isinstance(outcome, FatalApiError):
            fatal = fatal or outcome
            plan.stop.set()
        elif isinstance(outcome, BaseException):
            fatal = fatal or outcome  # a bug: the row stays in flight, reconciled next run
        one = settle.sent_outcome(item, outcome, run_id=plan.run_id, now=now)
        if one is not None:
            settled.append(one)
            if one.tally == "unverified":
                plan.unknown.append(verify.Unknown(item, one.delivery, time.monotonic(), True))
    for s in settled:
        res.add(s)
    await plan.write([s.delivery for s in settled])
    if fatal is not None:
        raise fatal
    return len(prepared)


def _handled(res: ModelResult) -> int:
    return res.sent + res.rejected + res.failed + res.waiting


def _report(plan: Plan, model: InteractionModel, done: int, total: int) -> None:
    if plan.progress is not None and not plan.dry_run:
        plan.progress(model.model, done, total)
