"""Merged or deleted contacts: rows whose POST got 404 ContactNotFound for a looked-up id.

The cached id is stale: Voyado merged or deleted that contact. Forget it, look the identifier
up again once per run, and send again to a different id. A 404 means Voyado stored nothing, so
sending again is safe; the new body is journaled in flight before it leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from voyado_sync.exceptions import FatalApiError
from voyado_sync.spec import InteractionModel
from voyado_sync.state import Delivery, utc_now
from voyado_sync.sync import settle
from voyado_sync.sync.contacts import ContactResolver
from voyado_sync.sync.deliver import Sender
from voyado_sync.sync.lifecycle import Stop
from voyado_sync.sync.values import Prepared, Settled
from voyado_sync.voyado import ContactFound, Failed, LookupOutcome

Pair = tuple[Prepared, object]


@dataclass
class Followed:
    #: The page's (row, outcome) pairs to settle as usual, resent rows with their new outcome.
    pairs: list[Pair]
    #: Rows settled here (their identifier no longer resolves to any contact).
    settled: list[Settled]
    fatal: BaseException | None = None
    invalidated: int = 0
    looked_up: int = 0


async def follow(
    pairs: Sequence[Pair],
    *,
    model: InteractionModel,
    resolver: ContactResolver,
    sender: Sender,
    journal: Callable[[list[Delivery]], Awaitable[None]],
    stop: Stop,
    run_id: str,
) -> Followed:
    stale = [
        (n, item)
        for n, (item, outcome) in enumerate(pairs)
        if item.identifier is not None and settle.contact_gone(outcome)
    ]
    if not stale:
        return Followed(list(pairs), [])
    key = model.contact_key
    gone: dict[str, set[str]] = {}
    for _, item in stale:
        assert item.identifier is not None
        gone.setdefault(item.identifier, set()).add(str(item.body["contactId"]).lower())
    fresh = sorted(i for i in gone if resolver.already_reresolved(key, i) is None)
    result = Followed([], [], invalidated=len(fresh), looked_up=len(fresh))
    answers: dict[str, LookupOutcome] = {}
    if fresh:
        for identifier, answer in (await resolver.reresolve(key, fresh, stale=gone)).items():
            if isinstance(answer, BaseException):
                if isinstance(answer, FatalApiError):
                    stop.set()
                result.fatal = result.fatal or answer
                answers[identifier] = Failed(f"looking the contact up again failed: {answer}")
            else:
                answers[identifier] = answer

    now = utc_now()
    out: list[Pair | None] = list(pairs)
    resend: list[tuple[int, Prepared]] = []
    for n, item in stale:
        assert item.identifier is not None
        now_known = answers.get(item.identifier) or resolver.already_reresolved(
            key, item.identifier
        )
        assert now_known is not None
        if isinstance(now_known, ContactFound):
            if now_known.contact_id.lower() != str(item.body["contactId"]).lower():
                body = {**item.body, "contactId": now_known.contact_id}
                resend.append((n, dataclasses.replace(item, body=body)))
            # The same id again: left as the rejection it is, with the reason settle gives.
            continue
        result.settled.append(
            settle.unresolved(model, item.row, item.identifier, now_known, run_id=run_id, now=now)
        )
        out[n] = None
    if resend:
        # Journal first, then send: a crash in between leaves the new body in flight.
        await journal(
            [Delivery.journaled(p.row.ref, p.body, run_id=run_id, now=now) for _, p in resend]
        )
        sent = await asyncio.gather(*(sender.send(p) for _, p in resend), return_exceptions=True)
        for (n, item), outcome in zip(resend, sent, strict=True):
            out[n] = (item, outcome)
    result.pairs = [pair for pair in out if pair is not None]
    return result
