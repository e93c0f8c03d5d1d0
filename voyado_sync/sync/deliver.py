"""Delivery: one POST per prepared row, through a sender.

A real run's :class:`VoyadoSender` posts through the client (paced, retried, reconciled); the
dry run's :class:`DrySender` sends nothing and keeps a few samples of what it would have sent.
Everything else about a dry run is the same stages as a real one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from voyado_sync.exceptions import ApiError, FatalApiError
from voyado_sync.sync.lifecycle import Stop
from voyado_sync.sync.values import Prepared, WouldSend
from voyado_sync.voyado import Delivered, DeliveryOutcome, VoyadoClient
from voyado_sync.voyado.reconcile import echo_problems

#: How many times the echo self-check is tried (a GET that fails is tried on a later row).
CALIBRATION_TRIES = 3


@dataclass
class Calibration:
    """Whether reconciliation can be trusted against this Voyado.

    After the first interaction Voyado accepts, its own echo of it (``GET
    /api/v3/interactions/{id}``) is compared with the body sent. When the matcher would not
    recognise the echo (dates to the second, trimmed strings, numbers through a double...), a
    row whose outcome is unknown could never be found again, and a listing that does not show
    it proves nothing: such rows then stay in flight (unverified) and are never resent.
    """

    trusted: bool = True
    checked: bool = False
    tries: int = 0
    problems: list[str] = field(default_factory=list)

    async def check(self, client: VoyadoClient, body: dict[str, Any], interaction_id: str) -> None:
        if self.checked or self.tries >= CALIBRATION_TRIES:
            return
        self.tries += 1
        try:
            echoed = await client.get_interaction(interaction_id)
        except FatalApiError:
            raise
        except ApiError:
            return  # no conclusion: the next delivered row tries again
        if echoed is None:
            return
        self.checked = True
        self.problems = echo_problems(body, echoed)
        self.trusted = not self.problems

    @property
    def warning(self) -> str | None:
        if self.trusted:
            return None
        return (
            "Voyado echoes interactions differently from what was sent ("
            + "; ".join(self.problems[:3])
            + "), so a row whose outcome is unknown cannot be recognised in its listing: such "
            "rows are left in flight (unverified) and never resent. Check them in Voyado "
            "before resending (voyado-sync rejected lists them)."
        )


class Sender(Protocol):
    async def send(self, item: Prepared) -> DeliveryOutcome | WouldSend | None:
        """The outcome of sending ``item``; None when the run stopped before it left."""
        ...


@dataclass
class VoyadoSender:
    client: VoyadoClient
    stop: Stop
    concurrency: int
    #: Voyado ids the ledger attributes to rows: reconciliation never matches one of them.
    claimed: set[str]
    calibration: Calibration = field(default_factory=Calibration)
    _gate: asyncio.Semaphore = field(init=False)
    _body_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._gate = asyncio.Semaphore(self.concurrency)

    async def send(self, item: Prepared) -> DeliveryOutcome | None:
        # Two rows with the same body are never in flight together: otherwise reconciling one
        # after an unknown outcome could claim the interaction the other just created.
        fingerprint = item.fingerprint
        same_body = self._body_locks.setdefault(fingerprint, asyncio.Lock())
        try:
            async with same_body, self._gate:
                if self.stop.is_set:
                    return None  # journaled but never sent: not_sent, sent next run
                # An unknown outcome that the listing does not show is not resent at once:
                # Voyado may list a new interaction seconds late. It comes back unverified and
                # is looked up again after the listing lag (pipeline's second look).
                outcome = await self.client.deliver_interaction(
                    item.body, claimed=self.claimed, resend_unmatched=False
                )
                if isinstance(outcome, Delivered) and not outcome.reconciled:
                    await self.calibration.check(self.client, item.body, outcome.interaction_id)
                return outcome
        finally:
            if not same_body.locked() and self._body_locks.get(fingerprint) is same_body:
                del self._body_locks[fingerprint]

    async def look(self, item: Prepared) -> str | None:
        """The id of this row's interaction if Voyado lists it (never a claimed one).

        Raises ContactGone, ListingUnavailable, ClientStopped, FatalApiError as the client does.
        """
        async with self._gate:
            return await self.client.find_delivered(item.body, claimed=self.claimed)


@dataclass
class DrySender:
    """Sends nothing; keeps the first ``keep`` bodies as samples."""

    keep: int = 3
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, item: Prepared) -> WouldSend:
        if len(self.samples) < self.keep:
            self.samples.append({"row_key": item.row.display, "body": item.body})
        return WouldSend(item.body)
