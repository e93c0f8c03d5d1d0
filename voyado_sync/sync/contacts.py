"""Contact resolution: each distinct identifier of a page to a Voyado contactId.

From the ledger's cache, from an earlier page of this run, or from one lookup. An identifier
that found no single contact is asked once per run, however many pages hold it (not found,
ambiguous or invalid will not change within minutes); later runs ask again. The dry run's
resolver makes no request: it reads the cache and says what a run would look up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from voyado_sync.state import Ledger
from voyado_sync.sync.lifecycle import Db
from voyado_sync.voyado import ContactFound, Failed, LookupOutcome, VoyadoClient


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Resolution:
    outcomes: dict[str, LookupOutcome]
    #: Requests made, and identifiers answered from the cache.
    looked_up: int = 0
    cached: int = 0


class Resolver(Protocol):
    async def resolve(self, key: str, identifiers: Sequence[str]) -> Resolution: ...


@dataclass
class ContactResolver:
    """Resolves identifiers through the cache and Voyado, and remembers failures per run."""

    client: VoyadoClient
    ledger: Ledger
    db: Db
    concurrency: int
    _not_resolved: dict[tuple[str, str], LookupOutcome] = field(default_factory=dict)
    _reresolved: dict[tuple[str, str], LookupOutcome] = field(default_factory=dict)

    #: Days a cached id is trusted (settings.contact_cache_days).
    max_age_days: float = 7.0
    #: Contact ids Voyado reports updated or deleted within the cache's lifetime (None: not
    #: asked yet; empty when the tenant does not answer GET /api/v3/contacts/changes).
    _changed: set[str] | None = None

    async def _recently_changed(self) -> set[str]:
        """Contacts changed since the oldest entry the cache may still use, asked once per run:
        an identifier cached for one of them is looked up again (an email that moved to
        another contact, a contact deleted or merged)."""
        if self._changed is None:
            now = datetime.now(UTC)
            since, until = _iso(now - timedelta(days=self.max_age_days)), _iso(now)
            changed: set[str] = set()
            for change in ("Updated", "Deleted"):
                ids = await self.client.contact_changes(change, since, until)
                changed |= ids or set()
            self._changed = changed
        return self._changed

    async def resolve(self, key: str, identifiers: Sequence[str]) -> Resolution:
        cached: dict[str, str] = {}
        if self.max_age_days > 0 and identifiers:
            since = _iso(datetime.now(UTC) - timedelta(days=self.max_age_days))
            cached = await self.db(self.ledger.cached_contacts, key, list(identifiers), since=since)
            if cached:
                changed = await self._recently_changed()
                cached = {i: c for i, c in cached.items() if c.lower() not in changed}
        out: dict[str, LookupOutcome] = {i: ContactFound(c) for i, c in cached.items()}
        missing = []
        for identifier in identifiers:
            if identifier in out:
                continue
            earlier = self._not_resolved.get((key, identifier))
            if earlier is not None:
                out[identifier] = earlier
            else:
                missing.append(identifier)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(identifier: str) -> tuple[str, LookupOutcome]:
            async with gate:
                return identifier, await self.client.lookup_contact(key, identifier)

        found: dict[str, str] = {}
        for identifier, outcome in await asyncio.gather(*(one(i) for i in missing)):
            out[identifier] = outcome
            if isinstance(outcome, ContactFound):
                found[identifier] = outcome.contact_id
            elif not isinstance(outcome, Failed):
                self._not_resolved[(key, identifier)] = outcome
        await self.db(self.ledger.cache_contacts, key, found)
        return Resolution(out, looked_up=len(missing), cached=len(cached))

    def already_reresolved(self, key: str, identifier: str) -> LookupOutcome | None:
        return self._reresolved.get((key, identifier))

    async def reresolve(
        self, key: str, identifiers: Sequence[str], *, stale: dict[str, set[str]]
    ) -> dict[str, LookupOutcome | BaseException]:
        """Forget the cached ids of ``identifiers`` (Voyado no longer knows them) and look
        each up again, once per run. A lookup that returns one of the ``stale`` ids again is
        not cached. Exceptions are returned, not raised."""
        await self.db(self.ledger.forget_contacts, key, list(identifiers))
        answers = await asyncio.gather(
            *(self.client.lookup_contact(key, i) for i in identifiers), return_exceptions=True
        )
        out: dict[str, LookupOutcome | BaseException] = {}
        found: dict[str, str] = {}
        for identifier, answer in zip(identifiers, answers, strict=True):
            out[identifier] = answer
            if isinstance(answer, BaseException):
                continue
            self._reresolved[(key, identifier)] = answer
            if isinstance(answer, ContactFound) and answer.contact_id.lower() not in stale.get(
                identifier, set()
            ):
                found[identifier] = answer.contact_id
        await self.db(self.ledger.cache_contacts, key, found)
        return out


@dataclass
class OfflineResolver:
    """The dry run's resolver: no request; every identifier stands for the lookup a run would
    make, counted once per run against the cache (when the ledger exists)."""

    ledger: Ledger
    db: Db
    ledger_exists: bool
    _seen: set[str] = field(default_factory=set)

    async def resolve(self, key: str, identifiers: Sequence[str]) -> Resolution:
        new = [i for i in identifiers if i not in self._seen]
        self._seen.update(new)
        cached: dict[str, str] = {}
        if self.ledger_exists and new:
            cached = await self.db(self.ledger.cached_contacts, key, new)
        outcomes: dict[str, LookupOutcome] = {
            i: ContactFound(f"<looked up by {key}={i}>") for i in identifiers
        }
        return Resolution(outcomes, looked_up=len(new) - len(cached), cached=len(cached))
