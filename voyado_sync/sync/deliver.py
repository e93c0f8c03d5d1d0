"""Delivery: one POST per prepared row, through a sender.

A real run's :class:`VoyadoSender` posts through the client (paced, retried, reconciled); the
dry run's :class:`DrySender` sends nothing and keeps a few samples of what it would have sent.
Everything else about a dry run is the same stages as a real one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from voyado_sync.sync.lifecycle import Stop
from voyado_sync.sync.values import Prepared, WouldSend
from voyado_sync.voyado import DeliveryOutcome, VoyadoClient


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
                    return None  # journaled but never sent: recorded as failed, sent next run
                return await self.client.deliver_interaction(item.body, claimed=self.claimed)
        finally:
            if not same_body.locked() and self._body_locks.get(fingerprint) is same_body:
                del self._body_locks[fingerprint]


@dataclass
class DrySender:
    """Sends nothing; keeps the first ``keep`` bodies as samples."""

    keep: int = 3
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, item: Prepared) -> WouldSend:
        if len(self.samples) < self.keep:
            self.samples.append({"row_key": item.row.display, "body": item.body})
        return WouldSend(item.body)
