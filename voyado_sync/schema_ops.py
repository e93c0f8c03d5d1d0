"""The interaction schema lifecycle behind ``voyado-sync schemas``: list, diff, push, delete.

Never prints. Voyado cannot update an interaction schema: it can only be deleted and created
again, and deleting it deletes every interaction stored under it, for all contacts (even if it
is created again with the same id). So this module

* deletes a schema only when the caller passes that exact schema id as confirmation;
* re-creates a changed schema only when every change is backward compatible: no property
  removed, no type changed, no segmentable property added (Voyado's rules; such changes need a
  new schema id);
* counts Voyado's 15-schema budget (schemas already there plus those it would create) before
  creating anything;
* refuses everything else with the safe way out, a new schema id such as ``review-v2``.

push and delete come in two steps: a plan, built with GET requests only, that says what would
happen and what it would destroy; then ``apply_push`` / ``delete_schema`` for a plan the user
has confirmed. A push is all or nothing: when any schema is refused, nothing is changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from voyado_sync.exceptions import ApiError, SchemaRefused, VoyadoSyncError
from voyado_sync.manifest import Manifest
from voyado_sync.project import load_manifest_of, open_warehouse, opened, select_nodes
from voyado_sync.schemas import COMPATIBLE, INCOMPATIBLE, NEW_ID, Change, diff_schemas
from voyado_sync.settings import (
    INTERACTIVE_CONCURRENCY,
    RunOptions,
    VoyadoConnection,
    connection_from_env,
)
from voyado_sync.spec import MAX_SCHEMAS, InteractionModel
from voyado_sync.state import Ledger
from voyado_sync.voyado import VoyadoClient
from voyado_sync.warehouse.base import Warehouse

__all__ = [
    "DeletePlan",
    "DeletionImpact",
    "DiffReport",
    "ListedSchema",
    "PushOutcome",
    "PushPlan",
    "PushResult",
    "PushStep",
    "SchemaDiff",
    "SchemaList",
    "SchemaRefused",
    "ShownProperty",
    "ShownSchema",
    "apply_push",
    "delete_schema",
    "diff_project",
    "list_project_schemas",
    "plan_delete",
    "plan_push",
    "show_schema",
]

T = TypeVar("T")
DiffStatus = Literal["match", "differs", "absent"]
PushAction = Literal["create", "recreate", "unchanged", "refused"]
OutcomeStatus = Literal["created", "recreated", "unchanged", "refused", "failed"]
_VERSION_SUFFIX = re.compile(r"^(?P<base>.+)-v(?P<n>\d+)$")


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedSchema:
    """One row of ``schemas list``: a schema in Voyado, or one the project would create."""

    schema_id: str
    display_name: str
    property_count: int | None
    models: tuple[str, ...]
    in_voyado: bool

    @property
    def unused(self) -> bool:
        """In Voyado, but no dbt model of the project declares it."""
        return self.in_voyado and not self.models

    @property
    def schema_id_lower(self) -> str:
        """The id as Voyado's email editor writes it (it requires lower case)."""
        return self.schema_id.lower()

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "schema_id_lower": self.schema_id_lower,
            "display_name": self.display_name,
            "property_count": self.property_count,
            "models": list(self.models),
            "in_voyado": self.in_voyado,
            "unused": self.unused,
        }


@dataclass(frozen=True)
class SchemaList:
    """What ``schemas list`` shows; ``in_voyado`` counts against Voyado's 15-schema budget."""

    schemas: tuple[ListedSchema, ...]
    in_voyado: int
    warnings: tuple[str, ...] = ()
    max_schemas: int = MAX_SCHEMAS

    def as_dict(self) -> dict[str, Any]:
        return {
            "schemas": [s.as_dict() for s in self.schemas],
            "in_voyado": self.in_voyado,
            "max_schemas": self.max_schemas,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class SchemaDiff:
    """One model's schema as generated from dbt, next to the one stored in Voyado."""

    model: str
    schema_id: str
    status: DiffStatus
    generated: dict[str, Any]
    voyado: dict[str, Any] | None
    changes: tuple[Change, ...] = ()
    new_id: str = ""
    """A schema id free in Voyado and in the project: the safe way out of a change."""

    @property
    def blocking(self) -> tuple[Change, ...]:
        """Changes that rule out deleting and re-creating the schema under the same id."""
        return tuple(c for c in self.changes if c.classification != COMPATIBLE)

    @property
    def recreatable(self) -> bool:
        """It differs, and every change is backward compatible."""
        return self.status == "differs" and not self.blocking

    def advice(self) -> str:
        """What to do about it, naming the model and the schema id."""
        if self.status == "match":
            return ""
        if self.status == "absent":
            return (
                f"will be created by `voyado-sync schemas push --select {self.model}` "
                "(or by the next `voyado-sync run`)"
            )
        safe = (
            f"Safe: set schema_id: {self.new_id} in the config.meta.voyado of model "
            f"{self.model}; a new schema is created and the interactions stored under "
            f"{self.schema_id} stay."
        )
        if self.recreatable:
            return (
                f"Voyado cannot update a schema. {safe} Or, as every change is backward "
                f"compatible: `voyado-sync schemas push --recreate --select {self.model}` "
                f"deletes {self.schema_id} with every interaction stored under it and creates "
                "it again."
            )
        return (
            f"Voyado cannot update a schema, and {self.schema_id} cannot be re-created with "
            f"this change ({'; '.join(_why(c) for c in self.blocking)}). {safe} Or revert the "
            f"change in model {self.model}'s meta.voyado."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "schema_id": self.schema_id,
            "status": "will be created" if self.status == "absent" else self.status,
            "changes": [
                {
                    "property": c.property,
                    "kind": c.kind,
                    "detail": c.detail,
                    "classification": c.classification,
                }
                for c in self.changes
            ],
            "recreatable": self.recreatable,
            "new_id": self.new_id if self.status == "differs" else None,
            "advice": self.advice(),
            "generated": self.generated,
            "voyado": self.voyado,
        }


@dataclass(frozen=True)
class DiffReport:
    """``schemas diff``: one entry per selected model."""

    diffs: tuple[SchemaDiff, ...]
    voyado_ids: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        """0 when every model matches Voyado; 1 when anything differs or is absent."""
        return 0 if all(d.status == "match" for d in self.diffs) else 1

    def as_dict(self) -> dict[str, Any]:
        return {"models": [d.as_dict() for d in self.diffs], "exit_code": self.exit_code}


@dataclass(frozen=True)
class DeletionImpact:
    """What deleting a schema destroys, as far as it can be known.

    Voyado has no count endpoint, so the only number is voyado-sync's own ledger:
    ``sent_by_sync`` rows sent under this schema id (None when the ledger could not be read,
    ``ledger_note`` says why). Others may have sent interactions too.
    """

    schema_id: str
    sent_by_sync: int | None
    ledger_note: str = ""
    models: tuple[str, ...] = ()

    def warning(self) -> str:
        text = (
            f"Deleting interaction schema {self.schema_id} deletes every interaction stored "
            "under it, for all contacts, even if it is created again; automations triggered "
            "by it fail until it exists again. "
        )
        if self.sent_by_sync is None:
            text += (
                "How many cannot be counted: Voyado has no count endpoint and voyado-sync's "
                f"ledger could not be read ({self.ledger_note})."
            )
        elif self.sent_by_sync:
            text += (
                f"At least {self.sent_by_sync} interaction(s) were sent by voyado-sync "
                "(its ledger); Voyado cannot count the rest. The ledger still records them as "
                "sent, so `voyado-sync run` will not send them again."
            )
        else:
            text += (
                "voyado-sync's ledger records none sent under this id; Voyado cannot count "
                "interactions sent by others."
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "sent_by_voyado_sync": self.sent_by_sync,
            "countable": self.sent_by_sync is not None,
            "ledger_note": self.ledger_note,
            "models": list(self.models),
            "warning": self.warning(),
        }


@dataclass(frozen=True)
class PushStep:
    """What push does for one schema id (models sharing an id share one step)."""

    schema_id: str
    models: tuple[str, ...]
    action: PushAction
    diff: SchemaDiff
    reason: str = ""
    impact: DeletionImpact | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "models": list(self.models),
            "action": self.action,
            "reason": self.reason,
            "diff": self.diff.as_dict(),
            "deletion": self.impact.as_dict() if self.impact else None,
        }


@dataclass(frozen=True)
class PushPlan:
    """What ``schemas push`` would do; built with GET requests only."""

    steps: tuple[PushStep, ...]
    voyado_ids: tuple[str, ...]
    budget_problem: str = ""

    @property
    def refused(self) -> tuple[PushStep, ...]:
        return tuple(s for s in self.steps if s.action == "refused")

    @property
    def to_recreate(self) -> tuple[PushStep, ...]:
        return tuple(s for s in self.steps if s.action == "recreate")

    @property
    def to_create(self) -> tuple[PushStep, ...]:
        return tuple(s for s in self.steps if s.action == "create")

    @property
    def applicable(self) -> bool:
        """Nothing is refused and the budget holds: only confirmations may be missing."""
        return not self.refused and not self.budget_problem

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.as_dict() for s in self.steps],
            "voyado_schemas": list(self.voyado_ids),
            "budget_problem": self.budget_problem or None,
        }


@dataclass(frozen=True)
class PushOutcome:
    """What push did to one schema id."""

    schema_id: str
    status: OutcomeStatus
    message: str


@dataclass(frozen=True)
class PushResult:
    """``schemas push``: exit 0 when everything was done, 2 when anything was refused/failed."""

    outcomes: tuple[PushOutcome, ...]

    @property
    def exit_code(self) -> int:
        return 2 if any(o.status in ("refused", "failed") for o in self.outcomes) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": [
                {"schema_id": o.schema_id, "status": o.status, "message": o.message}
                for o in self.outcomes
            ],
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class DeletePlan:
    """What ``schemas delete`` would delete."""

    schema_id: str
    exists: bool
    display_name: str
    property_count: int
    voyado_ids: tuple[str, ...]
    impact: DeletionImpact

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "exists": self.exists,
            "display_name": self.display_name,
            "property_count": self.property_count,
            "deletion": self.impact.as_dict(),
        }


# -- list -------------------------------------------------------------------------------------


def list_project_schemas(options: RunOptions) -> SchemaList:
    """Every schema in Voyado with the models that declare it, and those not created yet.

    Reads only the manifest (not the warehouse). With ``options.select``, only schemas the
    selected models declare are listed; "unused" always means no model of the project uses it.
    """
    connection = connection_from_env(options.base_url)
    manifest = load_manifest_of(options)
    usage, warnings = _usage(manifest)
    selected: set[str] | None = None
    if options.select or options.exclude:
        names = {n.name for n in select_nodes(manifest, options)}
        selected = {sid for sid, models in usage.items() if names & set(models)}

    async def fetch(client: VoyadoClient) -> list[tuple[str, str, dict[str, Any] | None]]:
        summaries = await client.list_schemas()
        bodies = await asyncio.gather(*(client.get_schema(s.id) for s in summaries))
        return [(s.id, s.display_name, b) for s, b in zip(summaries, bodies, strict=True)]

    remote = _with_client(connection, options, fetch)
    rows = [
        ListedSchema(
            schema_id=sid,
            display_name=name,
            property_count=_property_count(body),
            models=tuple(usage.get(sid, ())),
            in_voyado=True,
        )
        for sid, name, body in sorted(remote, key=lambda r: r[0].lower())
    ]
    known = {r.schema_id for r in rows}
    rows += [
        ListedSchema(sid, "", None, tuple(models), in_voyado=False)
        for sid, models in sorted(usage.items(), key=lambda kv: kv[0].lower())
        if sid not in known
    ]
    if selected is not None:
        rows = [r for r in rows if r.schema_id in selected]
    return SchemaList(schemas=tuple(rows), in_voyado=len(remote), warnings=tuple(warnings))


def _usage(manifest: Manifest) -> tuple[dict[str, list[str]], list[str]]:
    # Read schema_id from the raw block: one broken model must not hide which schemas are used.
    usage: dict[str, list[str]] = {}
    warnings: list[str] = []
    for node in manifest.voyado_models:
        raw = node.voyado
        schema_id = raw.get("schema_id") if isinstance(raw, Mapping) else None
        if isinstance(schema_id, str) and schema_id:
            usage.setdefault(schema_id, []).append(node.name)
        else:
            warnings.append(
                f"model {node.name}: config.meta.voyado has no schema_id, so the schema it uses "
                "is unknown; run `voyado-sync validate`"
            )
    return usage, warnings


def _property_count(body: Mapping[str, Any] | None) -> int | None:
    if body is None:
        return None
    props = (body.get("jsonSchema") or {}).get("properties")
    return len(props) if isinstance(props, Mapping) else 0


# -- diff -------------------------------------------------------------------------------------


def diff_project(options: RunOptions) -> DiffReport:
    """Compare every selected model's generated schema with Voyado's. GET requests only."""
    connection = connection_from_env(options.base_url)
    with opened(options) as (models, _):
        return _diff(connection, options, models)


def _diff(
    connection: VoyadoConnection, options: RunOptions, models: list[InteractionModel]
) -> DiffReport:
    ids = list(dict.fromkeys(m.schema_id for m in models))

    async def fetch(client: VoyadoClient) -> tuple[list[str], list[dict[str, Any] | None]]:
        summaries = await client.list_schemas()
        bodies = await asyncio.gather(*(client.get_schema(i) for i in ids))
        return [s.id for s in summaries], list(bodies)

    voyado_ids, bodies = _with_client(connection, options, fetch)
    existing = dict(zip(ids, bodies, strict=True))
    taken = {*voyado_ids, *ids}
    diffs = []
    for model in models:
        generated = model.schema_body()
        body = existing[model.schema_id]
        if body is None:
            diffs.append(SchemaDiff(model.model, model.schema_id, "absent", generated, None))
            continue
        changes = tuple(diff_schemas(generated, body))
        diffs.append(
            SchemaDiff(
                model.model,
                model.schema_id,
                "differs" if changes else "match",
                generated,
                body,
                changes,
                new_id=_free_id(model.schema_id, taken) if changes else "",
            )
        )
    return DiffReport(diffs=tuple(diffs), voyado_ids=tuple(voyado_ids))


def _free_id(schema_id: str, taken: Collection[str]) -> str:
    match = _VERSION_SUFFIX.match(schema_id)
    base, n = (match["base"], int(match["n"]) + 1) if match else (schema_id, 2)
    lowered = {t.lower() for t in taken}
    while f"{base}-v{n}".lower() in lowered:
        n += 1
    return f"{base}-v{n}"


def _why(change: Change) -> str:
    where = f"property {change.property}" if change.property else "the schema"
    if change.classification == NEW_ID:
        return f"{where} becomes segmentable, which needs a new schema id"
    if change.classification == INCOMPATIBLE and change.kind == "removed":
        return f"{where} was removed, and a re-created schema must keep every property"
    if change.classification == INCOMPATIBLE:
        return f"{where}: {change.kind} ({change.detail}), which stored interactions do not fit"
    return f"{where}: {change.kind}"


# -- push -------------------------------------------------------------------------------------


def plan_push(options: RunOptions, *, recreate: bool = False) -> PushPlan:
    """What push would do for each selected schema id, and whether it is allowed.

    A missing schema is created; a matching one left alone; a changed one refused, unless
    ``recreate`` is set and every change is backward compatible (then it is to be deleted and
    created again, which needs confirmation: see :func:`apply_push`). The 15-schema budget
    counts every schema already in Voyado plus those the push would create.
    """
    connection = connection_from_env(options.base_url)
    with opened(options) as (models, warehouse):
        report = _diff(connection, options, models)
        by_id: dict[str, list[SchemaDiff]] = {}
        for d in report.diffs:
            by_id.setdefault(d.schema_id, []).append(d)
        steps = []
        for schema_id, diffs in by_id.items():
            first = diffs[0]
            names = tuple(d.model for d in diffs)
            if first.status == "absent":
                steps.append(PushStep(schema_id, names, "create", first))
            elif first.status == "match":
                steps.append(PushStep(schema_id, names, "unchanged", first))
            elif not recreate:
                steps.append(
                    PushStep(
                        schema_id,
                        names,
                        "refused",
                        first,
                        reason=(
                            f"interaction schema {schema_id} in Voyado differs from model "
                            f"{first.model}'s meta.voyado. {first.advice()}"
                        ),
                    )
                )
            elif first.blocking:
                steps.append(
                    PushStep(
                        schema_id,
                        names,
                        "refused",
                        first,
                        reason=f"--recreate refused for model {first.model}: {first.advice()}",
                    )
                )
            else:
                impact = _impact(warehouse, options.state_schema, schema_id, names)
                steps.append(PushStep(schema_id, names, "recreate", first, impact=impact))
    plan_steps = tuple(steps)
    creating = [s.schema_id for s in plan_steps if s.action == "create"]
    budget = ""
    if len(report.voyado_ids) + len(creating) > MAX_SCHEMAS:
        existing = ", ".join(report.voyado_ids) or "none"
        budget = (
            f"Voyado allows at most {MAX_SCHEMAS} interaction schemas per environment: "
            f"{len(report.voyado_ids)} exist ({existing}) and this push would create "
            f"{len(creating)} more ({', '.join(creating)}). Delete a schema no model uses "
            "(see `voyado-sync schemas list`) with `voyado-sync schemas delete`, or point the "
            "model at an existing schema id."
        )
    return PushPlan(steps=plan_steps, voyado_ids=report.voyado_ids, budget_problem=budget)


def apply_push(plan: PushPlan, options: RunOptions, *, confirmed: Collection[str]) -> PushResult:
    """Carry out a plan. ``confirmed``: schema ids the user confirmed deleting, exactly.

    All or nothing up front: when the plan has a refusal, breaks the budget or a re-created
    schema is not confirmed, nothing is sent. Each schema is read again just before it is
    touched, so a schema changed in Voyado since the plan is refused rather than deleted.
    """
    refusals: list[PushOutcome] = []
    if plan.budget_problem:
        refusals.append(PushOutcome("", "refused", plan.budget_problem))
    refusals += [PushOutcome(s.schema_id, "refused", s.reason) for s in plan.refused]
    refusals += [
        PushOutcome(
            s.schema_id,
            "refused",
            f"deleting interaction schema {s.schema_id} was not confirmed: type the schema id "
            f"at the prompt or pass --confirm-delete {s.schema_id}",
        )
        for s in plan.to_recreate
        if s.schema_id not in confirmed
    ]
    if refusals:
        return PushResult(tuple(refusals))
    connection = connection_from_env(options.base_url)

    async def work(client: VoyadoClient) -> list[PushOutcome]:
        outcomes = []
        for step in plan.steps:
            if step.action == "unchanged":
                outcomes.append(
                    PushOutcome(
                        step.schema_id,
                        "unchanged",
                        f"interaction schema {step.schema_id} matches the models, nothing to do",
                    )
                )
            elif step.action in ("create", "recreate"):
                outcomes.append(await _apply_step(client, step))
        return outcomes

    return PushResult(tuple(_with_client(connection, options, work)))


async def _apply_step(client: VoyadoClient, step: PushStep) -> PushOutcome:
    sid = step.schema_id
    generated = step.diff.generated
    try:
        current = await client.get_schema(sid)
        if current is not None and not diff_schemas(generated, current):
            return PushOutcome(sid, "unchanged", f"interaction schema {sid} already matches")
        if step.action == "create":
            if current is not None:
                return PushOutcome(
                    sid,
                    "refused",
                    f"interaction schema {sid} appeared in Voyado since it was compared and "
                    "differs; run `voyado-sync schemas diff` again",
                )
            await client.create_schema(generated)
            return PushOutcome(sid, "created", f"created interaction schema {sid}")
        if current is None or step.diff.voyado is None or diff_schemas(step.diff.voyado, current):
            return PushOutcome(
                sid,
                "refused",
                f"interaction schema {sid} changed in Voyado since it was compared, so it was "
                "not deleted; run `voyado-sync schemas diff` again",
            )
        await client.delete_schema(sid)
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        return PushOutcome(sid, "failed", f"could not push interaction schema {sid}: {exc}")
    try:
        await client.create_schema(generated)
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        return PushOutcome(
            sid,
            "failed",
            f"interaction schema {sid} was deleted but could not be created again: {exc}. "
            "Run `voyado-sync schemas push` again to create it.",
        )
    return PushOutcome(
        sid, "recreated", f"deleted and re-created interaction schema {sid} (now matches)"
    )


# -- delete -----------------------------------------------------------------------------------


def plan_delete(options: RunOptions, schema_id: str) -> DeletePlan:
    """Whether ``schema_id`` exists, and what deleting it destroys. GET requests only.

    The dbt project is optional here: without a manifest the models using the schema are
    unknown, and without a readable ledger the number of interactions is too.
    """
    connection = connection_from_env(options.base_url)

    async def fetch(client: VoyadoClient) -> tuple[list[str], dict[str, Any] | None]:
        summaries = await client.list_schemas()
        return [s.id for s in summaries], await client.get_schema(schema_id)

    voyado_ids, body = _with_client(connection, options, fetch)
    models: tuple[str, ...] = ()
    try:
        usage, _ = _usage(load_manifest_of(options))
        models = tuple(usage.get(schema_id, ()))
    except VoyadoSyncError:
        pass
    try:
        warehouse = open_warehouse(options)
    except VoyadoSyncError as exc:
        impact = DeletionImpact(schema_id, None, _first_line(exc), models)
    else:
        try:
            impact = _impact(warehouse, options.state_schema, schema_id, models)
        finally:
            warehouse.close()
    return DeletePlan(
        schema_id=schema_id,
        exists=body is not None,
        display_name=str((body or {}).get("displayName") or ""),
        property_count=_property_count(body) or 0,
        voyado_ids=tuple(voyado_ids),
        impact=impact,
    )


def delete_schema(plan: DeletePlan, options: RunOptions, *, confirm: str | None) -> None:
    """Delete the schema of ``plan``, and with it every interaction stored under it.

    ``confirm`` must equal the schema id exactly; otherwise SchemaRefused, nothing deleted.
    """
    if confirm != plan.schema_id:
        given = "no --confirm-delete" if confirm is None else f"--confirm-delete {confirm!r}"
        raise SchemaRefused(
            f"refused to delete interaction schema {plan.schema_id}: {given} given; pass "
            f"--confirm-delete {plan.schema_id} (exactly the schema id) to delete it. Nothing "
            "was deleted."
        )
    if not plan.exists:
        known = ", ".join(plan.voyado_ids) or "none"
        raise SchemaRefused(
            f"interaction schema {plan.schema_id} does not exist in Voyado (schemas there: "
            f"{known}); nothing was deleted"
        )
    connection = connection_from_env(options.base_url)

    async def work(client: VoyadoClient) -> None:
        await client.delete_schema(plan.schema_id)

    _with_client(connection, options, work)


# -- show -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShownProperty:
    """One property of a schema in Voyado, with the names the email editor needs."""

    schema_id_lower: str
    name: str
    type: str
    format: str | None
    display_name: str
    segmentable: bool
    show_in_contact_card: bool
    sort_order: int | None
    required: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ShownSchema:
    """``schemas show``: a schema as Voyado holds it."""

    schema_id: str
    display_name: str
    properties: tuple[ShownProperty, ...]
    models: tuple[str, ...]
    body: dict[str, Any]

    @property
    def schema_id_lower(self) -> str:
        """Voyado's email editor requires the schema id in lower case."""
        return self.schema_id.lower()

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_id": self.schema_id,
            "schema_id_lower": self.schema_id_lower,
            "display_name": self.display_name,
            "models": list(self.models),
            "properties": [p.as_dict() for p in self.properties],
            "voyado": self.body,
        }


def show_schema(options: RunOptions, schema_id: str) -> ShownSchema:
    """The schema ``schema_id`` as Voyado holds it. GET requests only; the dbt project is
    optional (it only names the models that use the schema)."""
    connection = connection_from_env(options.base_url)

    async def fetch(client: VoyadoClient) -> tuple[list[str], dict[str, Any] | None]:
        body = await client.get_schema(schema_id)
        if body is not None:
            return [], body
        return [s.id for s in await client.list_schemas()], None

    ids, body = _with_client(connection, options, fetch)
    if body is None:
        raise SchemaRefused(
            f"interaction schema {schema_id} does not exist in Voyado (schemas there: "
            f"{', '.join(ids) or 'none'}); schema ids are case-sensitive here, though the email "
            "editor writes them in lower case"
        )
    models: tuple[str, ...] = ()
    try:
        usage, _ = _usage(load_manifest_of(options))
        models = tuple(usage.get(schema_id, ()))
    except VoyadoSyncError:
        pass
    json_schema = body.get("jsonSchema") or {}
    required = set(json_schema.get("required") or [])
    props = json_schema.get("properties") or {}
    lower = schema_id.lower()

    def flag(value: Any, default: bool) -> bool:
        return default if value is None else str(value).strip().lower() == "true"

    shown = []
    for name, prop in props.items() if isinstance(props, Mapping) else ():
        prop = prop if isinstance(prop, Mapping) else {}
        order = prop.get("sortOrder")
        shown.append(
            ShownProperty(
                schema_id_lower=lower,
                name=str(name),
                type=str(prop.get("type") or ""),
                format=str(prop["format"]) if prop.get("format") else None,
                display_name=str(prop.get("displayName") or name),
                segmentable=flag(prop.get("addToSegmentation"), False),
                show_in_contact_card=flag(prop.get("showInContactCard"), True),
                sort_order=int(order)
                if isinstance(order, int | str) and str(order).isdigit()
                else None,
                required=name in required,
            )
        )
    return ShownSchema(
        schema_id=str(body.get("id") or schema_id),
        display_name=str(body.get("displayName") or ""),
        properties=tuple(shown),
        models=models,
        body=body,
    )


# -- shared -----------------------------------------------------------------------------------


def _impact(
    warehouse: Warehouse, state_schema: str, schema_id: str, models: Iterable[str]
) -> DeletionImpact:
    try:
        sent = Ledger(warehouse, schema=state_schema).sent_count(schema_id)
    except VoyadoSyncError as exc:
        return DeletionImpact(schema_id, None, _first_line(exc), tuple(models))
    return DeletionImpact(schema_id, sent, "", tuple(models))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _with_client(
    connection: VoyadoConnection,
    options: RunOptions,
    work: Callable[[VoyadoClient], Awaitable[T]],
) -> T:
    async def main() -> T:
        client = VoyadoClient(
            base_url=connection.base_url,
            api_key=connection.api_key.get_secret_value(),
            rate=options.rate,
            concurrency=min(
                options.concurrency or INTERACTIVE_CONCURRENCY, INTERACTIVE_CONCURRENCY
            ),
            timeout=options.timeout,
            retry=options.retry_policy(interactive=True),
        )
        async with client:
            return await work(client)

    return asyncio.run(main())
