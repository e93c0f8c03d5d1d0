"""Delivery: one POST per prepared row, through a sender.

A real run's :class:`VoyadoSender` posts through the client (paced, retried, reconciled); the
dry run's :class:`DrySender` sends nothing and keeps a few samples of what it would have sent.
Everything else about a dry run is the same stages as a real one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from voyado_sync.exceptions import ApiError, FatalApiError
from voyado_sync.sync.lifecycle import Stop, sleep_unless
from voyado_sync.sync.values import Prepared, WouldSend
from voyado_sync.voyado import Delivered, DeliveryOutcome, VoyadoClient
from voyado_sync.voyado.reconcile import echo_problems

#: How many times each self-check is tried (a request that fails is tried again later).
CALIBRATION_TRIES = 3


@dataclass
class Calibration:
    """Whether "not in Voyado's listing" can be believed against this Voyado.

    A row whose outcome is unknown and that the listing does not show is resent only once the
    matcher is proven against this Voyado; until then (and for good once disproven) such rows
    stay in flight (unverified), never resent. Two checks:

    * the echo: after the first interaction Voyado accepts, its own view of it (``GET
      /api/v3/interactions/{id}``) is compared with the body sent. A matcher that would not
      recognise it (dates to the second, trimmed strings, numbers through a double...) could
      never find a stored row again;
    * the listing: once the listing lag has passed, the contact's listing must show that
      interaction, in a form the matcher recognises. A listing that always answers an empty
      list, or one page, or lags more than the lag, fails here. A row reconciled from the
      listing proves the same. When this run accepted nothing yet, the ledger's oldest sent
      interaction of the schema must at least be listed, and one absent row is resent as a
      probe (a fresh acceptance to check against) before any other.
    """

    problems: list[str] = field(default_factory=list)
    #: The listing was seen to show an accepted interaction in a form the matcher recognises.
    listing_checked: bool = False
    #: The first interaction accepted by this run: (body, id, time.monotonic() of the answer).
    sample: tuple[dict[str, Any], str, float] | None = None
    echo_tries: int = 0
    listing_tries: int = 0
    #: Rows left in flight because the matcher could not be proven (not disproven).
    held_unproven: int = 0

    @property
    def trusted(self) -> bool:
        return self.listing_checked and not self.problems

    def accepted(self, body: dict[str, Any], interaction_id: str) -> None:
        if self.sample is None:
            self.sample = (body, interaction_id, time.monotonic())

    def listed(self) -> None:
        """A row whose outcome was unknown was found in the listing: it shows what it stored."""
        self.listing_checked = True

    async def check_echo(self, client: VoyadoClient) -> None:
        if self.sample is None or self.echo_tries >= CALIBRATION_TRIES:
            return
        self.echo_tries += 1
        body, interaction_id, _ = self.sample
        try:
            echoed = await client.get_interaction(interaction_id)
        except FatalApiError:
            raise
        except ApiError:
            return  # no conclusion: the next delivered row tries again
        if echoed is None:
            return
        self.echo_tries = CALIBRATION_TRIES  # done
        self.problems.extend(echo_problems(body, echoed))

    async def check_listing(
        self,
        client: VoyadoClient,
        *,
        lag: float,
        stop: Stop,
        known: tuple[str, str, str] | None = None,
    ) -> None:
        """Prove (or disprove) the listing with this run's first accepted interaction, once
        the lag has passed since it was accepted; lacking one, with ``known`` (contact id,
        schema id, interaction id of a row the ledger holds as sent), which can only
        disprove: it shows the listing lists, not that the matcher reads it."""
        if self.listing_checked or self.problems or self.listing_tries >= CALIBRATION_TRIES:
            return
        if self.sample is not None:
            body, interaction_id, at = self.sample
            contact, schema = str(body["contactId"]), str(body["schemaId"])
            if not await sleep_unless(stop, at + lag - time.monotonic()):
                return
        elif known is not None:
            body = None
            contact, schema, interaction_id = known
        else:
            return
        self.listing_tries += 1
        try:
            listing = await client.list_interactions(contact, schema)
        except FatalApiError:
            raise
        except ApiError:
            return  # no conclusion (a contact gone, a listing down): tried again later
        shown = [i for i in listing if str(i.get("id", "")).strip() == interaction_id]
        if not shown:
            self.problems.append(
                f"its listing of the contact's {schema} interactions did not show interaction "
                f"{interaction_id}, which it had accepted"
                + (f" more than {lag:g} s earlier" if body is not None else " on an earlier run")
            )
        elif body is not None:
            self.problems.extend(f"in its listing, {p}" for p in echo_problems(body, shown[0]))
            self.listing_checked = not self.problems

    @property
    def warning(self) -> str | None:
        if self.problems:
            return (
                "Voyado echoes interactions differently from what was sent ("
                + "; ".join(self.problems[:3])
                + "), so a row whose outcome is unknown cannot be recognised in its listing: "
                "such rows are left in flight (unverified) and never resent. Check them in "
                "Voyado before resending (voyado-sync rejected lists them)."
            )
        if self.held_unproven:
            return (
                f"{self.held_unproven} row(s) whose outcome is unknown were not resent: this "
                "run could not check that Voyado's listing shows what it stores (no "
                "interaction it accepted could be looked up), so their absence from it proves "
                "nothing yet. They stay in flight (unverified) and are looked up again by the "
                "next run."
            )
        return None


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
                if isinstance(outcome, Delivered):
                    if outcome.reconciled:
                        self.calibration.listed()
                    else:
                        self.calibration.accepted(item.body, outcome.interaction_id)
                        await self.calibration.check_echo(self.client)
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
