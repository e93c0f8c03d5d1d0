"""The values the stages hand each other: a pending row, a checked row, a prepared request,
and a settled row. Plain data, no behaviour beyond naming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from voyado_sync.contacts import Normalised
from voyado_sync.state import Delivery, RowRef


@dataclass(frozen=True)
class PendingRow:
    """One model row the diff found not yet delivered (the first of duplicates of its key)."""

    ref: RowRef
    dup_count: int
    prev_status: str | None
    values: dict[str, Any]

    @property
    def display(self) -> str:
        return self.ref.row_key_display


@dataclass(frozen=True)
class Checked:
    """A row that passed every check that needs no Voyado: its payload, createdDate (None:
    the time of sending) and contact identifier."""

    row: PendingRow
    payload: dict[str, Any]
    created: str | None
    contact: Normalised


@dataclass(frozen=True)
class Prepared:
    """One interaction ready to POST."""

    row: PendingRow
    body: dict[str, Any]
    #: The normalised identifier the contact id was looked up by; None for contact.key contactId.
    identifier: str | None = None
    #: The model's contact key (email, mobilePhone, ...), for messages.
    contact_key: str = "contactId"

    @property
    def fingerprint(self) -> str:
        return json.dumps(self.body, sort_keys=True, default=str)


#: How a settled row counts in the model's result ("uncounted": a ledger update only).
Tally = Literal["sent", "rejected", "failed", "waiting", "not_sent", "unverified", "uncounted"]


@dataclass(frozen=True)
class Settled:
    """A row's outcome for this run: the ledger row to write, and how it counts."""

    delivery: Delivery
    tally: Tally
    #: Model rows it stands for (duplicates of one key count each).
    rows: int = 1
    #: A rejection reason to group in the summary.
    grouped_reason: str | None = None
    #: Found in Voyado after an unknown outcome.
    reconciled: bool = False


@dataclass(frozen=True)
class WouldSend:
    """The dry run's sender: the request a real run would have sent."""

    body: dict[str, Any]


#: What a sender returns: the client's outcome, an exception it raised, None (not sent: the run
#: was stopped first), or WouldSend in a dry run.
SendResult = object
