"""``voyado-sync schemas``: list, diff, push and delete Voyado interaction schemas.

A thin click layer over :mod:`voyado_sync.schema_ops`, registered lazily by ``cli``.
Exit codes: 0 ok; 1 differences found (diff); 2 could not run or refused (nothing changed).
Deleting a schema deletes every interaction stored under it, so nothing is deleted without the
schema id typed at a prompt or passed as ``--confirm-delete SCHEMA_ID``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from voyado_sync import settings
from voyado_sync.cli import EXIT_OK, _envelope, _fail, _options, _project_options, _redacted, log
from voyado_sync.exceptions import SchemaRefused, error_kind

if TYPE_CHECKING:
    from voyado_sync.schema_ops import (
        DiffReport,
        PushPlan,
        PushResult,
        SchemaDiff,
        SchemaList,
        ShownSchema,
    )
    from voyado_sync.upgrade import UpgradePlan, UpgradeResult

F = TypeVar("F", bound=Callable[..., Any])


def _voyado_options(func: F) -> F:
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead."
    )(func)
    func = click.option(
        "--base-url", default=None, help="Voyado's base URL (overrides VOYADO_BASE_URL)."
    )(func)
    return _project_options(func)


def _state_schema(func: F) -> F:
    return click.option(
        "--state-schema",
        default=settings.DEFAULT_STATE_SCHEMA,
        show_default=True,
        help="Warehouse schema of the ledger (to count interactions sent by voyado-sync).",
    )(func)


def _cannot_run(exc: BaseException, as_json: bool) -> None:
    _fail(exc, as_json=as_json)


def _stdin_is_interactive() -> bool:
    """Whether a person can answer a prompt (tests replace this)."""
    return sys.stdin is not None and sys.stdin.isatty()


@click.group(name="schemas")
def schemas() -> None:
    """List, diff, push and delete the interaction schemas in Voyado.

    Voyado cannot update a schema: it can only be deleted and created again, and deleting it
    deletes every interaction stored under it. A changed schema is safest under a new
    schema_id (for example review-v2).
    """


# -- list -------------------------------------------------------------------------------------


@schemas.command(name="list")
@_voyado_options
def list_command(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
) -> None:
    """The schemas in Voyado, the dbt models that use each, and those no model uses."""
    from voyado_sync.schema_ops import list_project_schemas

    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
    )
    try:
        listing = list_project_schemas(options)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        _envelope(listing.as_dict(), exit_code=EXIT_OK)
        return
    _print_list(listing)


def _print_list(listing: SchemaList) -> None:
    in_voyado = [s for s in listing.schemas if s.in_voyado]
    absent = [s for s in listing.schemas if not s.in_voyado]
    click.echo(
        f"Interaction schemas in Voyado: {listing.in_voyado} of {listing.max_schemas} allowed"
    )
    width = max((len(s.schema_id) for s in listing.schemas), default=0)
    name_width = max((len(s.display_name) for s in in_voyado), default=0)
    for s in in_voyado:
        count = f"{s.property_count} propert{'y' if s.property_count == 1 else 'ies'}"
        used = (
            f"models: {', '.join(s.models)}"
            if s.models
            else "UNUSED: no dbt model uses it (`voyado-sync schemas delete` frees its slot)"
        )
        lower = f"(editor: {s.schema_id_lower})"
        click.echo(
            f"  {s.schema_id:<{width}}  {lower:<{width + 10}}  {s.display_name:<{name_width}}  "
            f"{count:<14}  {used}"
        )
    if absent:
        click.echo("Not in Voyado yet (created by `voyado-sync schemas push` or the next run):")
        for s in absent:
            lower = f"(editor: {s.schema_id_lower})"
            click.echo(
                f"  {s.schema_id:<{width}}  {lower:<{width + 10}}  models: {', '.join(s.models)}"
            )
    for warning in listing.warnings:
        click.echo(f"warning: {warning}")


# -- diff -------------------------------------------------------------------------------------


@schemas.command(name="diff")
@_voyado_options
def diff_command(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
) -> None:
    """Each model's schema generated from dbt next to Voyado's, property by property.

    Exit 0 when every schema matches, 1 when any differs or does not exist yet, 2 when it
    cannot run.
    """
    from voyado_sync.schema_ops import diff_project

    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
    )
    try:
        report = diff_project(options)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        _envelope(report.as_dict(), exit_code=report.exit_code)
    else:
        _print_report(report)
    raise SystemExit(report.exit_code)


def _print_report(report: DiffReport) -> None:
    for d in report.diffs:
        _print_diff(d)
    differing = [d for d in report.diffs if d.status != "match"]
    if differing:
        click.echo(
            f"{len(differing)} of {len(report.diffs)} model(s) differ from Voyado: "
            + ", ".join(d.model for d in differing)
        )
    else:
        click.echo(f"All {len(report.diffs)} model(s) match Voyado.")


def _describe(prop: dict[str, Any] | None, required: bool) -> str:
    if prop is None:
        return "-"
    text = str(prop.get("type"))
    if prop.get("format"):
        text += f"/{prop['format']}"
    if str(prop.get("addToSegmentation", "")).lower() == "true":
        text += ", segmentable"
    if required:
        text += ", required"
    return text


def _print_diff(d: SchemaDiff, *, advice: bool = True) -> None:
    head = {"match": "matches Voyado", "absent": "will be created", "differs": "DIFFERS"}
    click.echo(f"{d.model} -> {d.schema_id}: {head[d.status]}")
    if d.status == "absent":
        click.echo(f"  {d.advice()}")
        return
    mine = (d.generated.get("jsonSchema") or {}).get("properties") or {}
    theirs = ((d.voyado or {}).get("jsonSchema") or {}).get("properties") or {}
    my_req = set((d.generated.get("jsonSchema") or {}).get("required") or [])
    their_req = set(((d.voyado or {}).get("jsonSchema") or {}).get("required") or [])
    names = [*mine, *(n for n in theirs if n not in mine)]
    rows = [("property", "dbt (generated)", "Voyado")]
    rows += [
        (n, _describe(mine.get(n), n in my_req), _describe(theirs.get(n), n in their_req))
        for n in names
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    by_property: dict[str | None, list[str]] = {}
    for c in d.changes:
        by_property.setdefault(c.property, []).append(f"{c.kind}: {c.detail} [{c.classification}]")
    for i, row in enumerate(rows):
        line = "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True))
        changes = by_property.get(row[0], []) if i else []
        mark = "  " if i == 0 else ("! " if changes else "= ")
        click.echo(f"  {mark}{line}".rstrip())
        for text in changes:
            click.echo(f"      {text}")
    for text in by_property.get(None, []):
        click.echo(f"  ! schema: {text}")
    if d.status == "differs" and advice:
        click.echo(f"  {d.advice()}")


# -- push -------------------------------------------------------------------------------------


@schemas.command(name="push")
@_voyado_options
@_state_schema
@click.option(
    "--recreate",
    is_flag=True,
    help="Delete and re-create a changed schema, only if every change is backward compatible "
    "(no property removed, no type changed, no segmentation added). Deletes its interactions.",
)
@click.option(
    "--confirm-delete",
    "confirm_delete",
    multiple=True,
    metavar="SCHEMA_ID",
    help="Confirm deleting this schema (exactly its id) without a prompt. Repeatable.",
)
def push_command(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
    state_schema: str,
    recreate: bool,
    confirm_delete: tuple[str, ...],
) -> None:
    """Create the selected models' schemas missing in Voyado; refuse changed ones.

    A changed schema is refused with its diff and the safe way out, a new schema id. With
    --recreate, a backward compatible change is made by deleting and re-creating the schema,
    after you type the schema id at the prompt or pass --confirm-delete SCHEMA_ID. Nothing is
    changed when anything is refused, or when it would exceed Voyado's 15 schemas.
    """
    from voyado_sync.schema_ops import apply_push, plan_push

    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
        state_schema=state_schema,
    )
    try:
        plan = plan_push(options, recreate=recreate)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if not as_json:
        _print_plan(plan)
    confirmed: set[str] = set()
    if plan.applicable:
        interactive = not as_json and _stdin_is_interactive()
        targets = {s.schema_id for s in plan.to_recreate}
        for value in confirm_delete:
            if value not in targets and not as_json:
                log(
                    f"warning: --confirm-delete {value} matches no schema this push would "
                    "re-create (it must be exactly the schema id)",
                    level="warning",
                )
        for step in plan.to_recreate:
            if step.schema_id in confirm_delete or (
                interactive and _prompt_schema_id(step.schema_id)
            ):
                confirmed.add(step.schema_id)
    try:
        result = apply_push(plan, options, confirmed=confirmed)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        refused = [o.message for o in result.outcomes if o.status in ("refused", "failed")]
        error = {"message": "; ".join(refused), "kind": "SchemaRefused"} if refused else None
        doc = {"plan": plan.as_dict(), **result.as_dict(), "error": error}
        _envelope(doc, exit_code=result.exit_code)
    else:
        _print_result(result, recreate=recreate, confirm_delete=confirm_delete)
    raise SystemExit(result.exit_code)


def _prompt_schema_id(schema_id: str) -> bool:
    try:
        typed = click.prompt(
            f"Type the schema id {schema_id} to delete it and every interaction stored under "
            "it, then create it again (anything else cancels)",
            default="",
            show_default=False,
            err=True,
        )
    except click.Abort:
        return False
    return bool(typed == schema_id)


def _print_plan(plan: PushPlan) -> None:
    for step in plan.steps:
        models = ", ".join(step.models)
        if step.action == "create":
            click.echo(f"{models} -> {step.schema_id}: will be created")
        elif step.action == "unchanged":
            click.echo(f"{models} -> {step.schema_id}: matches Voyado, nothing to do")
        elif step.action == "recreate":
            _print_diff(step.diff, advice=False)
            click.echo(f"{models} -> {step.schema_id}: will be DELETED and created again")
            if step.impact:
                click.echo(f"  WARNING: {step.impact.warning()}")
        else:  # refused: the reason, printed with the result, says what to do
            _print_diff(step.diff, advice=False)
    if plan.budget_problem:
        click.echo(f"REFUSED: {plan.budget_problem}")


def _print_result(result: PushResult, *, recreate: bool, confirm_delete: tuple[str, ...]) -> None:
    refused = [o for o in result.outcomes if o.status == "refused"]
    for o in result.outcomes:
        if o.status == "refused":
            if o.schema_id:  # the budget refusal was shown with the plan
                log(f"REFUSED: {o.message}", level="error")
        elif o.status == "failed":
            log(f"FAILED: {o.message}", level="error")
        elif o.status != "unchanged":  # shown with the plan
            click.echo(o.message)
    if refused:
        if confirm_delete and not recreate:
            log("--confirm-delete only takes effect with --recreate.", level="warning")
        log("Nothing was changed in Voyado.", level="error")


# -- delete -----------------------------------------------------------------------------------


@schemas.command(name="delete")
@click.argument("schema_id")
@_voyado_options
@_state_schema
@click.option(
    "--confirm-delete",
    "confirm_delete",
    default=None,
    metavar="SCHEMA_ID",
    help="Required: the schema id again, exactly. Without it nothing is deleted.",
)
def delete_command(
    schema_id: str,
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
    state_schema: str,
    confirm_delete: str | None,
) -> None:
    """Delete SCHEMA_ID from Voyado, and with it every interaction stored under it.

    The only way voyado-sync deletes a schema outright. Needs --confirm-delete SCHEMA_ID;
    without it (or with another id) nothing is deleted and the exit code is 2.
    """
    from voyado_sync.schema_ops import delete_schema, plan_delete

    if select:
        raise click.UsageError("--select does not apply: delete takes one SCHEMA_ID")
    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
        state_schema=state_schema,
    )
    try:
        plan = plan_delete(options, schema_id)
        if not as_json and plan.exists:
            click.echo(f"WARNING: {plan.impact.warning()}")
            if plan.impact.models:
                click.echo(
                    f"  Model(s) {', '.join(plan.impact.models)} still use {schema_id}: the next "
                    "`voyado-sync run` creates it again, empty."
                )
        delete_schema(plan, options, confirm=confirm_delete)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        _envelope({"deleted": True, **plan.as_dict()}, exit_code=EXIT_OK)
    else:
        click.echo(f"Deleted interaction schema {schema_id} and every interaction stored under it.")


# -- show -------------------------------------------------------------------------------------


@schemas.command(name="show")
@click.argument("schema_id")
@_voyado_options
def show_command(
    schema_id: str,
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
) -> None:
    """SCHEMA_ID as Voyado holds it, with the names the email editor needs.

    Voyado's email editor writes a schema id in lower case (Reuse-Spring-2023 is
    reuse-spring-2023); each property is shown with that id, its name, type, whether it is
    segmentable and whether it shows on the contact card.
    """
    from voyado_sync.schema_ops import show_schema

    if select or exclude:
        raise click.UsageError("--select/--exclude do not apply: show takes one SCHEMA_ID")
    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
    )
    try:
        shown = show_schema(options, schema_id)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        _envelope(shown.as_dict(), exit_code=EXIT_OK)
        return
    _print_shown(shown)


def _print_shown(shown: ShownSchema) -> None:
    click.echo(f"Interaction schema {shown.schema_id} ({shown.display_name})")
    click.echo(f"  In the email editor: {shown.schema_id_lower}")
    if shown.models:
        click.echo(f"  Models: {', '.join(shown.models)}")
    rows = [("schema id (editor)", "property", "type", "segmentable", "contact card", "required")]
    for p in shown.properties:
        kind = p.type + (f"/{p.format}" if p.format else "")
        rows.append(
            (
                p.schema_id_lower,
                p.name,
                kind,
                "yes" if p.segmentable else "no",
                "yes" if p.show_in_contact_card else "no",
                "yes" if p.required else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())


# -- upgrade ----------------------------------------------------------------------------------


@schemas.command(name="upgrade")
@click.argument("schema_id")
@_voyado_options
@_state_schema
@click.option(
    "--confirm-delete",
    "confirm_delete",
    default=None,
    metavar="SCHEMA_ID",
    help="Confirm deleting the schema (exactly its id) without a prompt.",
)
@click.option(
    "--automations-paused",
    is_flag=True,
    help="Confirm that the automations triggered by new interactions of the schema are "
    "paused, so that contacts do not enter them again when the history is replayed.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--rate",
    type=float,
    default=settings.DEFAULT_RATE,
    show_default=True,
    help="Requests per second for the replay (Voyado's limit applies).",
)
def upgrade_command(
    schema_id: str,
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    base_url: str | None,
    as_json: bool,
    state_schema: str,
    confirm_delete: str | None,
    automations_paused: bool,
    dry_run: bool,
    rate: float,
) -> None:
    """Change SCHEMA_ID in Voyado to the project's definition, keeping its id and history.

    Checks that every interaction voyado-sync sent under it is still a row of a model using
    it, deletes the schema (and every interaction stored under it), creates it again from the
    project and replays the history with the original createdDates. Needs the schema id
    typed at a prompt or --confirm-delete SCHEMA_ID, and the automations triggered by it
    paused (a prompt or --automations-paused). Resumable: after a crash, run it again.
    Exit 0 done, 1 replay unfinished (run it again), 2 refused or could not run.
    """
    from voyado_sync.upgrade import apply_upgrade, plan_upgrade

    if select or exclude:
        raise click.UsageError(
            "--select/--exclude do not apply: upgrade takes one SCHEMA_ID and replays every "
            "model that uses it"
        )
    options = _options(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        base_url=base_url,
        state_schema=state_schema,
    )
    options = dataclasses.replace(options, rate=rate)
    try:
        settings.check_rate(rate, options.concurrency)
        plan = plan_upgrade(options, schema_id)
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if dry_run:
        if as_json:
            refusal = plan.refusal
            error = {"message": refusal, "kind": "SchemaRefused"} if refusal else None
            # What a real upgrade would report, under the same names (as run --dry-run does).
            idle = bool(refusal) or plan.up_to_date
            would = {
                "deleted_with_schema": 0 if idle else plan.deleted_with_schema,
                "replayed": 0 if idle else plan.to_replay,
                "lost": plan.lost,
                "definition": plan.generated,
            }
            _envelope(
                {"dry_run": True, **would, "plan": plan.as_dict(), "error": error},
                exit_code=2 if refusal else EXIT_OK,
            )
        else:
            _print_upgrade_plan(plan)
            if plan.refusal:
                log(f"REFUSED: {plan.refusal}", level="error")
        raise SystemExit(2 if plan.refusal else EXIT_OK)
    if not as_json:
        _print_upgrade_plan(plan)
    confirm, paused = confirm_delete, automations_paused
    # Without --json a person may be there: ask what the options do not say (a closed stdin,
    # as under a scheduler, answers no and nothing changes).
    if plan.unfinished is None and not plan.refusal and not plan.up_to_date and not as_json:
        if confirm is None and _prompt_upgrade_id(schema_id):
            confirm = schema_id
        if confirm == schema_id and not paused:
            paused = _confirm_paused(schema_id)
    try:
        result = apply_upgrade(
            plan,
            options,
            confirm=confirm,
            automations_paused=paused,
            progress=None if as_json else _upgrade_progress,
        )
    except SchemaRefused as exc:
        if as_json:
            # A refusal changed nothing: the counts say so, and what would be lost.
            _envelope(
                {
                    "deleted_with_schema": 0,
                    "replayed": 0,
                    "lost": plan.lost,
                    "definition": plan.generated,
                    "plan": plan.as_dict(),
                    "error": {"message": _redacted(str(exc)), "kind": error_kind(exc)},
                },
                exit_code=2,
            )
            raise SystemExit(2) from None
        _cannot_run(exc, as_json)
        return
    except Exception as exc:
        _cannot_run(exc, as_json)
        return
    if as_json:
        error = None
        if result.exit_code:
            error = {"message": result.message(), "kind": "UpgradeUnfinished"}
        _envelope(
            {"plan": plan.as_dict(), **result.as_dict(), "error": error}, exit_code=result.exit_code
        )
    else:
        _print_upgrade_result(result)
    raise SystemExit(result.exit_code)


def _upgrade_progress(model: str, done: int, total: int) -> None:
    if total and (done == total or done % 500 == 0):
        log(f"  replay {model}: {done}/{total}")


def _confirm_paused(schema_id: str) -> bool:
    try:
        return click.confirm(
            f"Are the automations triggered by new {schema_id} interactions paused? "
            "(replayed interactions are new to Voyado: contacts would enter them again)",
            default=False,
            err=True,
        )
    except click.Abort:
        return False


def _prompt_upgrade_id(schema_id: str) -> bool:
    try:
        typed = click.prompt(
            f"Type the schema id {schema_id} to delete it with every interaction stored under "
            "it, create it again and replay the history (anything else cancels)",
            default="",
            show_default=False,
            err=True,
        )
    except click.Abort:
        return False
    return bool(typed == schema_id)


def _print_upgrade_plan(plan: UpgradePlan) -> None:
    sid = plan.schema_id
    click.echo(f"Upgrade of interaction schema {sid} (models: {', '.join(plan.models)})")
    if plan.up_to_date:
        click.echo(f"  {plan.up_to_date_message()}")
        return
    if plan.unfinished is not None:
        click.echo(
            f"  RESUMING the upgrade started {plan.unfinished.started_at} (step reached: "
            f"{plan.unfinished.phase}); it was confirmed then."
        )
    if plan.changes:
        click.echo("  Differences (Voyado -> project):")
        for change in plan.changes:
            click.echo(f"    {change}")
    if plan.deletes and not plan.refusal:
        click.echo(
            f"  Deletes {sid} in Voyado with every interaction stored under it: "
            f"{plan.sent} sent by voyado-sync (its ledger; Voyado cannot count the rest)."
        )
    if not plan.refusal:
        minutes = plan.replay_seconds / 60
        click.echo(
            f"  Replays {plan.to_replay} interaction(s) with their original createdDate: about "
            f"{plan.replay_seconds:.0f} s ({minutes:.1f} min) at --rate {plan.rate:g}/s, plus "
            "one lookup per contact not yet cached."
        )
        click.echo(
            "  Rows of these models not yet sent are sent in the same run (while the "
            "automations are paused)."
        )


def _print_upgrade_result(result: UpgradeResult) -> None:
    if result.sync is not None:
        for m in result.sync.models:
            if m.error:
                log(f"  {m.model}: {m.error}", level="error")
    if result.done:
        click.echo(result.message())
    else:
        log(result.message(), level="error")
