"""Settlement: from what happened to a row to its ledger transition and how it counts. Pure.

Every function takes values and returns a :class:`Settled` (or None: write nothing); none
touches the warehouse or Voyado, so the whole table of outcomes is tested on plain values.
"""

from __future__ import annotations

from datetime import UTC, datetime

from voyado_sync.exceptions import FatalApiError
from voyado_sync.spec import InteractionModel
from voyado_sync.state import Delivery
from voyado_sync.sync.values import PendingRow, Prepared, Settled, WouldSend
from voyado_sync.voyado import (
    ContactAmbiguous,
    ContactInvalid,
    ContactNotFound,
    Delivered,
    Failed,
    LookupOutcome,
    Rejected,
)


def not_sendable(row: PendingRow, reason: str, *, run_id: str, now: str) -> Settled:
    """A row that failed a check before any request (NULL key, duplicates, bad payload)."""
    delivery = Delivery.of(row.ref, run_id=run_id, now=now).rejected(reason, now=now)
    return Settled(delivery, "rejected", rows=row.dup_count, grouped_reason=reason)


def unresolved(
    model: InteractionModel,
    row: PendingRow,
    identifier: str,
    outcome: LookupOutcome,
    *,
    run_id: str,
    now: str,
) -> Settled:
    """A row whose contact lookup found no single contact."""
    key = model.contact_key
    entry = Delivery.of(row.ref, run_id=run_id, now=now)
    if isinstance(outcome, ContactNotFound):
        days = model.not_found_retry_days
        age = (_parse(now) - _parse(row.ref.first_seen_at or now)).total_seconds() / 86400
        if age >= days:
            reason = (
                f"no Voyado contact has {key} {identifier!r} (ContactNotFound), "
                f"still absent after {days} days"
            )
            return Settled(
                entry.rejected(reason, now=now, http_status=404, error_code="ContactNotFound"),
                "rejected",
            )
        reason = (
            f"no Voyado contact has {key} {identifier!r} yet (ContactNotFound); "
            f"retried on later runs for {days} days"
        )
        return Settled(entry.waiting_for_contact(reason, now=now), "waiting")
    if isinstance(outcome, ContactAmbiguous):
        ids = ", ".join(outcome.contact_ids) or "Voyado did not list them"
        reason = (
            f"{len(outcome.contact_ids) or 'several'} Voyado contacts match {key} "
            f"{identifier!r} (MultipleMatches): {ids}"
        )
        return Settled(
            entry.rejected(reason, now=now, http_status=409, error_code="MultipleMatches"),
            "rejected",
        )
    if isinstance(outcome, ContactInvalid):
        reason = f"Voyado refused {key} {identifier!r} ({outcome.error_code}): {outcome.message}"
        return Settled(
            entry.rejected(reason, now=now, http_status=400, error_code=outcome.error_code),
            "rejected",
        )
    if isinstance(outcome, Failed):
        failed = entry.failed(
            outcome.reason, now=now, http_status=outcome.status, error_code=outcome.error_code
        )
    else:
        failed = entry.failed("contact lookup failed", now=now)
    return Settled(failed, "failed")


def sent_outcome(item: Prepared, outcome: object, *, run_id: str, now: str) -> Settled | None:
    """The ledger transition for the answer to one POST.

    ``outcome`` is what the sender returned: an outcome of the client, an exception it raised,
    or None (the run stopped before the request left). Returns None for an exception that is
    not Voyado's answer (a bug): the row stays in flight and the next run looks it up.
    """
    journal = Delivery.journaled(item.row.ref, item.body, run_id=run_id, now=now)
    if isinstance(outcome, FatalApiError):
        # The request was refused (401/403): nothing was stored.
        failed = journal.failed(
            str(outcome), now=now, http_status=outcome.status, error_code=outcome.error_code
        )
        return Settled(failed, "failed")
    if isinstance(outcome, BaseException):
        return None
    if outcome is None:
        return Settled(journal.not_sent(now=now), "not_sent")
    if isinstance(outcome, WouldSend):
        return Settled(journal, "sent")
    if isinstance(outcome, Delivered):
        return Settled(
            journal.sent(outcome.interaction_id, now=now), "sent", reconciled=outcome.reconciled
        )
    if isinstance(outcome, Rejected):
        reason = (
            f"Voyado answered {outcome.status}"
            + (f" {outcome.error_code}" if outcome.error_code else "")
            + f": {outcome.message}"
        )
        if contact_gone(outcome):
            reason = gone_reason(item)
        rejected = journal.rejected(
            reason, now=now, http_status=outcome.status, error_code=outcome.error_code
        )
        return Settled(rejected, "rejected", grouped_reason=reason)
    if isinstance(outcome, Failed):
        status, code = outcome.status, outcome.error_code
        if outcome.maybe_delivered:
            # Unknown whether Voyado stored it: kept in flight, with its body, and looked up
            # again after the listing lag; never resent before that.
            unknown = journal.unknown(outcome.reason, now=now, http_status=status, error_code=code)
            return Settled(unknown, "unverified")
        failed = journal.failed(outcome.reason, now=now, http_status=status, error_code=code)
        return Settled(failed, "failed")
    raise TypeError(f"not an outcome of a POST: {outcome!r}")


def recovered(row: Delivery, found: str, *, now: str, counted: bool = False) -> Settled:
    """A row whose outcome was unknown, found in Voyado: sent. ``counted``: this run sent it
    (its first outcome was unknown), so it counts as sent; a previous run's row does not."""
    return Settled(
        row.sent(found, now=now, reason="found in Voyado after an unknown outcome"),
        "sent" if counted else "uncounted",
        reconciled=True,
    )


def recovered_contact_gone(row: Delivery, *, now: str, counted: bool = False) -> Settled:
    """Left in flight, and its contact no longer exists (merged or deleted): nothing can be
    stored under it any more, so the row is sent again to whoever its identifier resolves to
    now, instead of waiting in flight forever."""
    reason = (
        f"contact {row.contact_id} no longer exists in Voyado after an unknown outcome; "
        "will be sent again"
    )
    return Settled(row.failed(reason, now=now), "failed" if counted else "uncounted")


def recovered_without_body(row: Delivery, *, now: str) -> Settled:
    reason = "left in flight without a request body; will be sent again"
    return Settled(row.failed(reason, now=now), "uncounted")


def lookup_failed_after_gone(item: Prepared, exc: BaseException) -> Failed:
    """The outcome to record when looking a merged contact up again failed."""
    return Failed(
        f"Voyado no longer knows contact {item.body['contactId']}; "
        f"looking it up again failed ({exc}); tried again next run"
    )


def contact_gone(outcome: object) -> bool:
    """Voyado answered the POST that the body's contactId names no contact (nothing stored)."""
    return (
        isinstance(outcome, Rejected)
        and outcome.status == 404
        and outcome.error_code == "ContactNotFound"
    )


def gone_reason(item: Prepared) -> str:
    contact_id = item.body["contactId"]
    if item.identifier is None:
        return (
            f"Voyado has no contact {contact_id} (404 ContactNotFound): the contactId column "
            "names a contact that does not exist, or was merged or deleted"
        )
    return (
        f"Voyado has no contact {contact_id} (404 ContactNotFound), yet looking up "
        f"{item.contact_key} {item.identifier!r} again returns that id"
    )


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
