"""The guards: stop a model before anything is sent (or deleted) when a run would set off
far more of Voyado's automations than a run usually does. Pure.

Voyado starts automations ("New interaction", "New specific interaction") when an
interaction arrives and has no flag to suppress them for old events, so sending a model's
whole history puts every contact in it into live email or SMS flows. Each guard is decided on
the counts of the staged diff, before anything is journaled:

* ``first_run``: a model's first sync for its ``schema_id`` without a ``first_run`` choice
  that would send more than :data:`FIRST_RUN_LIMIT` rows, or whose model already has rows
  sent under another ``schema_id`` (a renamed schema would send its whole history again).
* ``mass_send``: a later run that would send more than half of a model's rows when at least
  :data:`MASS_SEND_FLOOR` were sent before (a redefined ``unique_key``, a rebuilt table with
  new keys), unless ``--allow-mass-send MODEL``.
* ``mass_delete``: a mirror run that would delete more than half of a model's live
  interactions, and more than :data:`MASS_DELETE_FLOOR`, unless ``--allow-mass-delete MODEL``.

A stopped model is reported with ``stopped_by_guard`` and its message in ``error`` (exit 2 at
the end of the run); the other models carry on.
"""

from __future__ import annotations

from dataclasses import dataclass

from voyado_sync.spec import InteractionModel
from voyado_sync.state import History

FIRST_RUN_LIMIT = 1000
MASS_SEND_FLOOR = 1000
MASS_DELETE_FLOOR = 10

_AUTOMATIONS = (
    "Voyado starts the automations triggered by this interaction type (New interaction, New "
    "specific interaction) for every interaction that arrives, old or not, so each of these "
    "rows may send an email or SMS to a real contact"
)


@dataclass(frozen=True)
class Stopped:
    """A guard's verdict: which guard, and the message that names the way out."""

    guard: str
    message: str


def first_run(
    model: InteractionModel, history: History, *, rows: int, choice: object | None
) -> Stopped | None:
    """The first-run guard: None when the first sync may go ahead as a backfill."""
    if not history.first_sync or choice is not None:
        return None
    if rows <= FIRST_RUN_LIMIT and not history.other_schemas_sent:
        return None
    why = f"would send {rows} rows"
    if history.other_schemas_sent:
        why += (
            f", and the model already has {history.other_schemas_sent} rows sent under another "
            f"schema_id that would be sent again under {model.schema_id}"
        )
    return Stopped(
        "first_run",
        f"first-run guard: {model.model} has never been synced to schema {model.schema_id}; "
        f"its first sync {why}. {_AUTOMATIONS}. Nothing was sent for it. Choose what its "
        "first sync sends in config.meta.voyado.first_run (or for this run with --first-run): "
        "backfill (send every row; pause the automations triggered by "
        f"{model.schema_id} in Voyado first), baseline (send nothing now and record every "
        "current row as already there; later runs send only new rows) or {since: DATE} "
        "(send rows created on or after DATE, record the older ones; needs created_date).",
    )


def mass_send(
    model: InteractionModel,
    history: History,
    *,
    rows: int,
    selected: int,
    allowed: bool,
) -> Stopped | None:
    """The mass-send guard: None unless a later run would resend most of a known model."""
    if history.first_sync or allowed or history.sent < MASS_SEND_FLOOR:
        return None
    if rows * 2 <= selected:
        return None
    return Stopped(
        "mass_send",
        f"mass-send guard: {model.model} would send {rows} of its {selected} rows to schema "
        f"{model.schema_id}, though {history.sent} of its rows were sent before: a redefined "
        "unique_key or a rebuilt table with new keys makes old rows look new. "
        f"{_AUTOMATIONS}. Nothing was sent for it. If these rows are really new, run again "
        f"with --allow-mass-send {model.model}.",
    )


def mass_delete(
    model: InteractionModel, *, deletes: int, live: int, allowed: bool
) -> Stopped | None:
    """The mass-delete guard of a mirror model: None unless most of it would be deleted."""
    if allowed or deletes <= MASS_DELETE_FLOOR or deletes * 2 <= live:
        return None
    return Stopped(
        "mass_delete",
        f"mass-delete guard: {model.model} (mode: mirror) would delete {deletes} of its {live} "
        f"interactions in Voyado (schema {model.schema_id}), more than half: a model that "
        "came back empty or half-built by mistake would wipe contacts' history. Nothing was "
        "deleted or sent for it. If the rows really left the model, run again with "
        f"--allow-mass-delete {model.model}.",
    )
