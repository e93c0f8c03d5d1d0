"""Verification: rows whose outcome is unknown are looked up in Voyado, never resent blindly.

An unknown outcome (5xx, timeout, dropped connection, a 2xx that is not Voyado's answer) is
checked by the client at once; if the listing does not show the row, the row stays in flight.
Voyado may list a new interaction seconds late, so it is looked up again once the listing lag
has passed since the unknown outcome: found, it is sent; still absent, and the matcher proven
against this Voyado (deliver.Calibration), its exact journaled body is sent again; the listing
cannot be read, or the matcher is unproven or disproven, it stays in flight (unverified) for a
later run. A bounded number of rounds.

Rows a previous run left in flight get the same treatment, starting with a first look before
the model's diff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from voyado_sync.exceptions import ApiError, ContactGone, FatalApiError
from voyado_sync.state import Delivery, RowRef, utc_now
from voyado_sync.sync import settle
from voyado_sync.sync.deliver import VoyadoSender
from voyado_sync.sync.lifecycle import Stop, sleep_unless
from voyado_sync.sync.values import PendingRow, Prepared, Settled

#: Rounds of "look again, then resend what is still absent" per model and run.
MAX_ROUNDS = 5


@dataclass
class Unknown:
    """A row in flight whose outcome is not known."""

    item: Prepared
    row: Delivery
    #: When its outcome became unknown (time.monotonic()).
    since: float
    #: Sent by this run (it counts as sent once found or resent).
    counted: bool
    #: Looked up at least the listing lag after its outcome became unknown, and not listed.
    absent: bool = False


def from_ledger(row: Delivery, *, contact_key: str) -> Unknown | Settled:
    """A row a previous run left in flight, ready to be looked up (or failed: no body)."""
    body = row.body()
    now = utc_now()
    if body is None:
        return settle.recovered_without_body(row, now=now)
    ref = RowRef(
        model=row.model,
        schema_id=row.schema_id,
        row_key=row.row_key,
        row_key_display=row.row_key_display,
        content_hash=row.content_hash,
        first_seen_at=row.first_seen_at,
        relation=row.relation,
    )
    item = Prepared(PendingRow(ref, 1, row.status, {}), body, None, contact_key)
    return Unknown(item, row, since=time.monotonic() - _age(row.updated_at), counted=False)


async def first_look(
    unknowns: Sequence[Unknown], *, sender: VoyadoSender, lag: float
) -> tuple[list[Settled], list[Unknown]]:
    """Look each row up once, now: (rows settled, rows still unknown). A row not listed
    although its outcome became unknown longer than the lag ago is marked absent."""
    settled: list[Settled] = []
    still: list[Unknown] = []
    started = time.monotonic()
    looks = await asyncio.gather(*(_look(sender, u) for u in unknowns))
    for unknown, (outcome, found) in zip(unknowns, looks, strict=True):
        if outcome is not None:
            settled.append(outcome)
        elif found == "absent":
            unknown.absent = started - unknown.since >= lag
            still.append(unknown)
    return settled, still


#: Where the ledger holds an interaction of a schema as sent: (contact id, schema id, id).
Known = Callable[[], Awaitable[tuple[str, str, str] | None]]


async def look_again(
    unknowns: list[Unknown],
    *,
    sender: VoyadoSender,
    lag: float,
    stop: Stop,
    write: Callable[[list[Settled]], Awaitable[None]],
    run_id: str,
    known: Known | None = None,
) -> None:
    """Rounds of: wait out the listing lag, look, resend what is still absent. Every round's
    outcomes are written before the next round starts.

    Absent rows are resent only once the matcher is proven against this Voyado
    (``Calibration``); never once it is disproven. When this run has nothing Voyado accepted
    to prove it with, one absent row is resent first, as the probe."""
    calibration = sender.calibration
    rounds = 0
    while unknowns and rounds < MAX_ROUNDS and not stop.is_set:
        rounds += 1
        absent = [u for u in unknowns if u.absent]
        pending = [u for u in unknowns if not u.absent]
        if pending:
            latest = max(u.since for u in pending)
            if not await sleep_unless(stop, latest + lag - time.monotonic()):
                return
            looks = await asyncio.gather(*(_look(sender, u) for u in pending))
            settled: list[Settled] = []
            for unknown, (outcome, found) in zip(pending, looks, strict=True):
                if outcome is not None:
                    settled.append(outcome)
                elif found == "absent":
                    unknown.absent = True
                    absent.append(unknown)
            await write(settled)
        if stop.is_set or not absent:
            return
        if not calibration.trusted:
            ledger_row = None
            if calibration.sample is None and known is not None:
                ledger_row = await known()
            await calibration.check_listing(sender.client, lag=lag, stop=stop, known=ledger_row)
            if stop.is_set:
                return
        if calibration.problems:
            return  # "not listed" proves nothing against this Voyado: never resend
        if calibration.trusted:
            send, held = absent, []
        elif calibration.sample is None and rounds < MAX_ROUNDS:
            send, held = absent[:1], absent[1:]  # the probe: its acceptance proves the rest
        else:
            calibration.held_unproven += len(absent)
            return
        # Absent after the lag: Voyado did not store it. Send the same body again; the ledger
        # already holds it in flight, so a crash now is looked up by the next run.
        outcomes = await asyncio.gather(
            *(sender.send(u.item) for u in send), return_exceptions=True
        )
        resent: list[Settled] = []
        unknowns = list(held)
        for unknown, answer in zip(send, outcomes, strict=True):
            if isinstance(answer, FatalApiError):
                raise answer
            one = settle.sent_outcome(unknown.item, answer, run_id=run_id, now=utc_now())
            if one is None:
                continue  # a bug, not Voyado's answer: stays in flight for the next run
            resent.append(one)
            if one.tally == "unverified":
                unknowns.append(Unknown(unknown.item, one.delivery, time.monotonic(), True))
        await write(resent)
    if unknowns and not stop.is_set and not calibration.trusted and not calibration.problems:
        calibration.held_unproven += sum(1 for u in unknowns if u.absent)


async def _look(sender: VoyadoSender, unknown: Unknown) -> tuple[Settled | None, str]:
    """(settled, "") when it could be decided; (None, "absent") when not listed; (None,
    "unknown") when the listing cannot say."""
    now = utc_now()
    try:
        found = await sender.look(unknown.item)
    except FatalApiError:
        raise
    except ContactGone:
        return settle.recovered_contact_gone(unknown.row, now=now, counted=unknown.counted), ""
    except ApiError:
        return None, "unknown"  # the listing cannot say: stays in flight, never resent
    if found:
        sender.calibration.listed()
        return settle.recovered(unknown.row, found, now=now, counted=unknown.counted), ""
    return None, "absent"


def _age(stamp: str) -> float:
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - then).total_seconds())
