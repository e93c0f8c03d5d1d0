"""Contact resolution on plain values: a fake cache and a fake Voyado, no warehouse, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from voyado_sync.sync.contacts import ContactResolver, OfflineResolver
from voyado_sync.voyado import ContactFound, ContactNotFound, Failed, LookupOutcome


class FakeLedger:
    def __init__(self, cached: dict[str, str] | None = None) -> None:
        self.cache = dict(cached or {})

    def cached_contacts(
        self, key: str, values: Sequence[str], since: str | None = None
    ) -> dict[str, str]:
        return {v: self.cache[v] for v in values if v in self.cache}

    def cache_contacts(self, key: str, resolved: dict[str, str]) -> None:
        self.cache.update(resolved)

    def forget_contacts(self, key: str, values: Sequence[str]) -> None:
        for v in values:
            self.cache.pop(v, None)


class FakeVoyado:
    def __init__(
        self, answers: dict[str, LookupOutcome], changed: dict[str, set[str]] | None = None
    ) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.changed = changed
        self.changes_asked = 0

    async def contact_changes(self, change_type: str, since: str, until: str) -> set[str] | None:
        self.changes_asked += 1
        return None if self.changed is None else self.changed.get(change_type, set())

    async def lookup_contact(self, key: str, value: str) -> LookupOutcome:
        self.asked.append(value)
        return self.answers[value]


async def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _resolver(ledger: FakeLedger, voyado: FakeVoyado) -> ContactResolver:
    return ContactResolver(voyado, ledger, direct, 4)  # type: ignore[arg-type]


def test_cached_ids_cost_no_request_and_found_ones_are_cached() -> None:
    ledger = FakeLedger({"a@x.se": "c-a"})
    voyado = FakeVoyado({"b@x.se": ContactFound("c-b")})
    resolution = asyncio.run(_resolver(ledger, voyado).resolve("email", ["a@x.se", "b@x.se"]))

    assert resolution.outcomes == {"a@x.se": ContactFound("c-a"), "b@x.se": ContactFound("c-b")}
    assert (resolution.looked_up, resolution.cached) == (1, 1)
    assert voyado.asked == ["b@x.se"]
    assert ledger.cache == {"a@x.se": "c-a", "b@x.se": "c-b"}


def test_an_identifier_without_a_contact_is_asked_once_per_run_but_a_failure_again() -> None:
    voyado = FakeVoyado({"gone@x.se": ContactNotFound("no"), "err@x.se": Failed("503")})
    resolver = _resolver(FakeLedger(), voyado)

    async def pages() -> None:
        for _ in range(3):
            await resolver.resolve("email", ["gone@x.se", "err@x.se"])

    asyncio.run(pages())
    assert voyado.asked.count("gone@x.se") == 1
    assert voyado.asked.count("err@x.se") == 3  # transient: worth asking on the next page


def test_reresolving_forgets_the_stale_id_and_never_caches_it_again() -> None:
    ledger = FakeLedger({"m@x.se": "old", "n@x.se": "old-n"})
    voyado = FakeVoyado({"m@x.se": ContactFound("new"), "n@x.se": ContactFound("OLD-N")})
    resolver = _resolver(ledger, voyado)
    answers = asyncio.run(
        resolver.reresolve(
            "email", ["m@x.se", "n@x.se"], stale={"m@x.se": {"old"}, "n@x.se": {"old-n"}}
        )
    )

    assert answers == {"m@x.se": ContactFound("new"), "n@x.se": ContactFound("OLD-N")}
    assert ledger.cache == {"m@x.se": "new"}  # the same id again is not worth caching
    assert resolver.already_reresolved("email", "m@x.se") == ContactFound("new")


def test_the_dry_run_resolver_asks_nobody_and_counts_each_identifier_once() -> None:
    resolver = OfflineResolver(FakeLedger({"a@x.se": "c-a"}), direct, True)  # type: ignore[arg-type]

    async def pages() -> list[Any]:
        return [
            await resolver.resolve("email", ["a@x.se", "b@x.se"]),
            await resolver.resolve("email", ["b@x.se", "c@x.se"]),
        ]

    first, second = asyncio.run(pages())
    assert first.outcomes["b@x.se"] == ContactFound("<looked up by email=b@x.se>")
    assert (first.looked_up, first.cached, second.looked_up, second.cached) == (1, 1, 1, 0)


def test_a_cached_id_of_a_contact_voyado_reports_changed_is_looked_up_again() -> None:
    ledger = FakeLedger({"moved@x.se": "c-old", "same@x.se": "c-same"})
    voyado = FakeVoyado(
        {"moved@x.se": ContactFound("c-new")}, changed={"Updated": {"c-old"}, "Deleted": set()}
    )
    resolver = _resolver(ledger, voyado)

    first = asyncio.run(resolver.resolve("email", ["moved@x.se", "same@x.se"]))
    asyncio.run(resolver.resolve("email", ["same@x.se"]))

    assert first.outcomes["moved@x.se"] == ContactFound("c-new")
    assert first.outcomes["same@x.se"] == ContactFound("c-same")
    assert voyado.asked == ["moved@x.se"]
    assert voyado.changes_asked == 2  # Updated and Deleted, once per run
    assert ledger.cache["moved@x.se"] == "c-new"


def test_a_tenant_without_the_changes_endpoint_falls_back_to_the_cache_lifetime() -> None:
    ledger = FakeLedger({"a@x.se": "c-a"})
    voyado = FakeVoyado({}, changed=None)

    resolution = asyncio.run(_resolver(ledger, voyado).resolve("email", ["a@x.se"]))

    assert resolution.outcomes == {"a@x.se": ContactFound("c-a")}
    assert voyado.asked == []


def test_a_cache_lifetime_of_zero_looks_every_identifier_up() -> None:
    ledger = FakeLedger({"a@x.se": "c-a"})
    voyado = FakeVoyado({"a@x.se": ContactFound("c-a2")})
    resolver = ContactResolver(voyado, ledger, direct, 4, max_age_days=0)  # type: ignore[arg-type]

    resolution = asyncio.run(resolver.resolve("email", ["a@x.se"]))

    assert resolution.outcomes == {"a@x.se": ContactFound("c-a2")}
    assert voyado.asked == ["a@x.se"]
