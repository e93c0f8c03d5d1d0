"""Recovery: rows a previous run left in flight (its process died, or Voyado's answer never
came) are looked up in Voyado before anything is sent. Found: sent. Absent: failed, so the
diff picks them up and this run sends them again. No answer: left in flight, never resent
without knowing."""

from __future__ import annotations

from collections.abc import Sequence

from voyado_sync.exceptions import ApiError, FatalApiError
from voyado_sync.state import Delivery
from voyado_sync.sync import settle
from voyado_sync.sync.values import Settled
from voyado_sync.voyado import VoyadoClient


async def recover(
    client: VoyadoClient, rows: Sequence[Delivery], *, claimed: set[str], now: str
) -> list[Settled]:
    """The new state of each in-flight row that could be checked.

    ``claimed`` holds the Voyado ids the ledger already attributes to sent rows: a match is
    never one of them. Raises FatalApiError (401/403).
    """
    out: list[Settled] = []
    for row in rows:
        body = row.body()
        if body is None:
            out.append(settle.recovered_without_body(row, now=now))
            continue
        try:
            found = await client.find_delivered(body, claimed=claimed)
        except FatalApiError:
            raise
        except ApiError as exc:
            if exc.status == 404:
                out.append(settle.recovered_contact_gone(row, now=now))
            continue  # otherwise leave it in flight: never resend without knowing
        out.append(settle.recovered(row, found, now=now))
    return out
