"""The emulated Engage tenant: schemas, interactions, contacts and what happened to them.

:class:`Emulator` is plain synchronous state behind one lock. The HTTP layer (``app``) calls
it from the server's event loop; tests and the command read it from other threads.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from voyado_sync.emulator.config import (
    Contact,
    EmulatorConfig,
    check_runtime_changes,
)
from voyado_sync.emulator.contacts import ContactBook
from voyado_sync.emulator.schemas import (
    MAX_SCHEMAS,
    InteractionSchema,
    SchemaRuleError,
    check_payload,
    normalise_date_time,
    now_iso,
    parse_schema,
)
from voyado_sync.emulator.wire import Reply, error_reply

PAGE_SIZE = 50
STATE_VERSION = 1
_MAX_IGNORED_KEPT = 10_000  # enough to debug with, bounded for long soak runs

# Counters kept across a restart when a state file is used.
_COUNTERS = (
    "ignored_total",
    "dropped_properties",
    "deleted",
    "total_requests",
    "peak_requests_per_second",
    "rate_limited",
    "injected_errors",
    "ambiguous_503",
    "dropped_connections",
)


@dataclass(frozen=True)
class StoredInteraction:
    """An interaction Engage accepted and kept."""

    id: str
    contact_id: str
    schema_id: str
    created_date: str
    payload: dict[str, Any]
    seq: int
    dropped: tuple[str, ...] = ()
    # When the emulator stored it (not part of Engage's API): lets a benchmark measure the
    # rate a client actually sustained, from the server's side.
    received_at: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "contactId": self.contact_id,
            "schemaId": self.schema_id,
            "createdDate": self.created_date,
            # A copy: callers (tests, the admin API) must not be able to edit stored data.
            "payload": dict(self.payload),
        }

    def to_admin(self) -> dict[str, Any]:
        """As /_emulator/interactions and the state file show it: with what Engage dropped and
        when the emulator stored it."""
        return {
            **self.to_api(),
            "droppedProperties": list(self.dropped),
            "receivedAt": self.received_at,
        }

    def fingerprints(self) -> tuple[str, str]:
        """Keys for duplicate counting: with the createdDate, and of the payload alone."""
        payload = json.dumps(self.payload, sort_keys=True)
        loose = f"{self.contact_id.lower()}\x00{self.schema_id}\x00{payload}"
        return f"{loose}\x00{self.created_date}", loose


class Emulator:
    """The state of one emulated Engage environment, safe to use from several threads."""

    def __init__(self, config: EmulatorConfig) -> None:
        # A private copy: runtime changes must not leak into the caller's config object.
        self.config = replace(config, contacts=list(config.contacts))
        self._lock = threading.RLock()
        self._contacts = ContactBook(config.contacts)
        self.dirty = False
        # Ids must differ between runs even with a fixed seed (a state file keeps old ones),
        # and need no cryptographic strength: a privately seeded generator spares a syscall.
        self._ids = random.Random()
        self._clear()

    def _clear(self) -> None:
        #: (time, Created|Updated|Deleted, contact id) of each change to the contacts since
        #: the last reset (the contacts themselves survive a reset).
        self._changes: list[tuple[float, str, str]] = []
        self._schemas: dict[str, InteractionSchema] = {}
        self._interactions: dict[str, StoredInteraction] = {}
        # (lower-case contact id, schema id) -> interactions in creation order, for listing.
        self._by_pair: dict[tuple[str, str], list[StoredInteraction]] = {}
        self._seq = 0
        self._ignored: deque[dict[str, Any]] = deque(maxlen=_MAX_IGNORED_KEPT)
        self._ignored_reasons: Counter[str] = Counter()
        self._fingerprints: Counter[str] = Counter()
        self._payload_prints: Counter[str] = Counter()
        self._duplicates = 0
        self._duplicate_payloads = 0
        self._counters: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._by_endpoint: Counter[str] = Counter()
        self._second = 0
        self._second_count = 0
        self._windows: dict[str, deque[float]] = {}
        self._arrivals: deque[float] = deque()
        self.rng = random.Random(self.config.seed)
        # Latency draws have their own generator: adding latency must not change which
        # requests the seeded faults hit.
        seed = self.config.seed
        self._latency_rng = random.Random(None if seed is None else f"latency-{seed}")
        self.started = time.monotonic()

    # ---- admin -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget schemas, interactions and statistics; keep contacts and settings."""
        with self._lock:
            self._clear()
            self.dirty = True

    def configure(self, **changes: Any) -> None:
        """Change runtime settings (latency_ms, error_rate, ambiguous_rate, rate_limit,
        retry_after, api_key). Raises ValueError naming every bad setting."""
        clean = check_runtime_changes(changes)
        with self._lock:
            for name, value in clean.items():
                setattr(self.config, name, value)
            if "api_key" in clean or "rate_limit" in clean:
                self._windows.clear()

    def add_contacts(self, contacts: Iterable[Contact]) -> None:
        """Make contacts known (an already known contact id is replaced: ``Updated`` in
        ``GET /api/v3/contacts/changes``)."""
        with self._lock:
            contacts = list(contacts)
            now = time.time()
            for c in contacts:
                known = self._contacts.find(c.contact_id)
                if known is None:
                    self._changes.append((now, "Created", c.contact_id))
                elif known != c:  # the same contact added again is no change
                    self._changes.append((now, "Updated", c.contact_id))
            self._contacts.add(contacts)
            self.dirty = True

    def remove_contacts(self, contact_ids: Iterable[str]) -> int:
        """Forget contacts, as merging or deleting them in Engage does; their stored
        interactions stay. Returns how many of the ids were known."""
        with self._lock:
            contact_ids = list(contact_ids)
            now = time.time()
            for contact_id in contact_ids:
                if self._contacts.find(contact_id) is not None:
                    self._changes.append((now, "Deleted", contact_id))
            removed = self._contacts.remove(contact_ids)
            self.dirty = True
            return removed

    def contact_changes(self, query: Mapping[str, Sequence[str]]) -> Reply:
        """``GET /api/v3/contacts/changes?changeType=&fromDate=&toDate=``: a bare array of
        the ids of contacts created, updated or deleted in the window."""
        change_type = (query.get("changeType") or [""])[0]
        if change_type not in ("Created", "Updated", "Deleted"):
            return error_reply(400, "InvalidChangeType", "changeType: Created, Updated, Deleted")
        bounds = []
        for name in ("fromDate", "toDate"):
            raw = (query.get(name) or [""])[0]
            moment = normalise_date_time(raw)
            if moment is None:
                return error_reply(400, "InvalidDate", f"{name} {raw!r} is not a date-time")
            bounds.append(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp())
        with self._lock:
            ids = {
                contact_id
                for at, kind, contact_id in self._changes
                if kind == change_type and bounds[0] <= at <= bounds[1]
            }
        return Reply(200, sorted(ids))

    def contacts(self) -> list[Contact]:
        with self._lock:
            return self._contacts.all()

    def interactions(self) -> list[dict[str, Any]]:
        """Every stored interaction, in creation order, with the properties Engage dropped and
        the time it was stored (``receivedAt``)."""
        with self._lock:
            items = sorted(self._interactions.values(), key=lambda i: i.seq)
            return [i.to_admin() for i in items]

    def ignored(self) -> list[dict[str, Any]]:
        """The interactions answered 201 but not kept, each with the reason."""
        with self._lock:
            return [dict(entry) for entry in self._ignored]

    def stats(self) -> dict[str, Any]:
        """Counts of what was stored, ignored, dropped and duplicated, and of requests."""
        with self._lock:
            c = self._counters
            return {
                "stored": len(self._interactions),
                "ignored": c["ignored_total"],
                "dropped_properties": c["dropped_properties"],
                "duplicates": self._duplicates,
                "duplicate_payloads": self._duplicate_payloads,
                "deleted": c["deleted"],
                "schemas": len(self._schemas),
                "contacts": len(self._contacts),
                "total_requests": c["total_requests"],
                "requests_by_status": dict(sorted(self._by_status.items())),
                "requests_by_endpoint": dict(sorted(self._by_endpoint.items())),
                "peak_requests_per_second": c["peak_requests_per_second"],
                # Sliding: the most requests that arrived within any one second.
                "peak_requests_in_any_second": c["peak_requests_in_any_second"],
                "faults": {
                    "rate_limited": c["rate_limited"],
                    "injected_errors": c["injected_errors"],
                    "ambiguous_503": c["ambiguous_503"],
                    "dropped_connections": c["dropped_connections"],
                },
                "ignored_reasons": dict(self._ignored_reasons.most_common()),
                "uptime_seconds": round(time.monotonic() - self.started, 3),
            }

    # ---- request accounting and limits -----------------------------------------------------

    def admit(self, api_key: str, now: float) -> float | None:
        """Count a request against the key's sliding one-second window.

        Returns None when admitted, else the seconds until a slot frees up. Refused requests
        do not use up the window, so a client that backs off gets through again.
        """
        with self._lock:
            limit = self.config.rate_limit
            if limit <= 0:
                return None
            window = self._windows.setdefault(api_key, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                return max(0.0, window[0] + 1.0 - now)
            window.append(now)
            return None

    def arrived(self, now: float) -> None:
        """Count an API request when it arrives, for the most seen in any one second."""
        with self._lock:
            arrivals = self._arrivals
            while arrivals and arrivals[0] <= now - 1.0:
                arrivals.popleft()
            arrivals.append(now)
            c = self._counters
            if len(arrivals) > c["peak_requests_in_any_second"]:
                c["peak_requests_in_any_second"] = len(arrivals)

    def latency(self) -> float:
        """Seconds the next API answer waits: ``latency_ms`` with its spread and slow tail."""
        with self._lock:
            config = self.config
            # Two draws every time, so the sequence does not depend on the settings.
            spread = 2.0 * self._latency_rng.random() - 1.0
            slow = self._latency_rng.random() < config.slow_rate
            ms = config.latency_ms * (1.0 + config.latency_jitter * spread)
            if slow:
                ms += config.slow_ms
            return max(0.0, ms) / 1000.0

    def record_request(self, endpoint: str, status: int | None, now: float) -> None:
        """Account for one answered API request (status None: the connection was dropped)."""
        with self._lock:
            c = self._counters
            c["total_requests"] += 1
            self._by_endpoint[endpoint] += 1
            if status is not None:
                self._by_status[str(status)] += 1
            second = int(now)
            if second != self._second:
                self._second, self._second_count = second, 0
            self._second_count += 1
            if self._second_count > c["peak_requests_per_second"]:
                c["peak_requests_per_second"] = self._second_count

    def count(self, counter: str) -> None:
        """Count a fault (rate_limited, injected_errors, ambiguous_503, dropped_connections)."""
        with self._lock:
            self._counters[counter] += 1

    def draw(self) -> float:
        """A reproducible random number for fault decisions."""
        with self._lock:
            return self.rng.random()

    # ---- interaction schemas -----------------------------------------------------------------

    def list_schemas(self) -> Reply:
        with self._lock:
            return Reply(
                200, [{"id": s.id, "displayName": s.display_name} for s in self._schemas.values()]
            )

    def create_schema(self, body: object, *, base_url: str) -> Reply:
        try:
            schema = parse_schema(body, created=now_iso())
        except SchemaRuleError as e:
            return error_reply(400, "InvalidInteractionSchema", str(e))
        with self._lock:
            if schema.id in self._schemas:
                return error_reply(
                    409,
                    "InteractionSchemaAlreadyExists",
                    f"schema {schema.id!r} exists; schemas cannot be updated, only deleted and "
                    "created again",
                )
            if len(self._schemas) >= MAX_SCHEMAS:
                return error_reply(
                    400,
                    "TooManyInteractionSchemas",
                    f"an environment can have at most {MAX_SCHEMAS} interaction schemas",
                )
            self._schemas[schema.id] = schema
            self.dirty = True
        href = f"{base_url}/api/v3/interactionschemas/{schema.id}"
        return Reply(200, {"id": schema.id, "self": {"href": href, "created": schema.created}})

    def get_schema(self, schema_id: str) -> Reply:
        with self._lock:
            schema = self._schemas.get(schema_id)
            if schema is None:
                return _schema_not_found(schema_id)
            return Reply(200, schema.to_json())

    def delete_schema(self, schema_id: str) -> Reply:
        """Delete a schema and, as Engage does, every interaction of it for all contacts."""
        with self._lock:
            if self._schemas.pop(schema_id, None) is None:
                return _schema_not_found(schema_id)
            doomed = [i for i in self._interactions.values() if i.schema_id == schema_id]
            for interaction in doomed:
                self._remove(interaction)
            self.dirty = True
            return Reply(204)

    # ---- interactions ---------------------------------------------------------------------------

    def create_interaction(self, body: object, *, base_url: str) -> Reply:
        """Store an interaction, or accept and silently ignore it when it breaks the schema."""
        if not isinstance(body, dict):
            return _invalid_interaction("the body must be a JSON object")
        contact_id, schema_id, payload = (body.get(k) for k in ("contactId", "schemaId", "payload"))
        if not isinstance(contact_id, str) or not contact_id:
            return _invalid_interaction("contactId is required and must be a string")
        if not isinstance(schema_id, str) or not schema_id:
            return _invalid_interaction("schemaId is required and must be a string")
        if not isinstance(payload, dict):
            return _invalid_interaction("payload is required and must be a JSON object")
        raw_date = body.get("createdDate")
        with self._lock:
            schema = self._schemas.get(schema_id)
            if schema is None:
                return _schema_not_found(schema_id)
            contact = self._contacts.find(contact_id)
            if contact is None:
                return error_reply(404, "ContactNotFound", f"no contact with id {contact_id!r}")
            interaction_id = self._new_id()
            self.dirty = True
            check = check_payload(schema, payload)
            created = now_iso() if raw_date is None else normalise_date_time(raw_date)
            if created is None:
                # Engage answers 201 and drops the interaction, like any other rule breach.
                reason = f"createdDate {raw_date!r} is not an RFC 3339 date-time"
                self._ignore(interaction_id, body, reason, ())
                created = now_iso()
            elif check.reason is not None:
                self._ignore(interaction_id, body, check.reason, check.errors)
            else:
                self._seq += 1
                self._add(
                    StoredInteraction(
                        id=interaction_id,
                        contact_id=contact.contact_id,
                        schema_id=schema_id,
                        created_date=created,
                        payload=check.payload,
                        seq=self._seq,
                        dropped=check.dropped,
                        received_at=now_iso(),
                    )
                )
                self._counters["dropped_properties"] += len(check.dropped)
        href = f"{base_url}/api/v3/interactions/{interaction_id}"
        return Reply(
            201,
            {
                "id": interaction_id,
                "self": {"contactId": contact_id, "href": href, "created": created},
            },
        )

    def get_interaction(self, interaction_id: str) -> Reply:
        with self._lock:
            interaction = self._interactions.get(interaction_id)
            if interaction is None:
                return _interaction_not_found(interaction_id)
            return Reply(200, interaction.to_api())

    def delete_interaction(self, interaction_id: str) -> Reply:
        with self._lock:
            interaction = self._interactions.get(interaction_id)
            if interaction is None:
                return _interaction_not_found(interaction_id)
            self._remove(interaction)
            self.dirty = True
            return Reply(204)

    def list_interactions(self, query: Mapping[str, Sequence[str]]) -> Reply:
        """One page of a contact's interactions of one schema, oldest first."""
        contact_id = _single(query, "contactId")
        schema_id = _single(query, "schemaId")
        if not contact_id or not schema_id:
            return error_reply(
                400, "InvalidQuery", "contactId and schemaId are both required, once each"
            )
        after = 0
        token = _single(query, "continuation")
        if token is not None:
            decoded = _decode_token(token)
            if decoded is None:
                return error_reply(400, "InvalidContinuationToken", "unknown continuation token")
            after = decoded
        with self._lock:
            if schema_id not in self._schemas:
                return _schema_not_found(schema_id)
            if self._contacts.find(contact_id) is None:
                return error_reply(404, "ContactNotFound", f"no contact with id {contact_id!r}")
            items = self._by_pair.get((contact_id.lower(), schema_id), [])
            start = bisect.bisect_right(items, after, key=lambda i: i.seq)
            page = items[start : start + PAGE_SIZE]
            more = start + PAGE_SIZE < len(items)
            body: dict[str, Any] = {"items": [i.to_api() for i in page], "links": []}
        if more:
            params = urlencode(
                {
                    "contactId": contact_id,
                    "schemaId": schema_id,
                    "continuation": _token(page[-1].seq),
                }
            )
            body["links"].append(
                {"href": f"/api/v3/interactions?{params}", "method": "GET", "rel": "next"}
            )
        return Reply(200, body)

    def lookup_contact(self, query: Mapping[str, Sequence[str]]) -> Reply:
        with self._lock:
            return self._contacts.lookup(query)

    # ---- internals (called with the lock held) ---------------------------------------------

    def _add(self, interaction: StoredInteraction) -> None:
        self._interactions[interaction.id] = interaction
        pair = (interaction.contact_id.lower(), interaction.schema_id)
        self._by_pair.setdefault(pair, []).append(interaction)
        exact, loose = interaction.fingerprints()
        if self._fingerprints[exact]:
            self._duplicates += 1
        self._fingerprints[exact] += 1
        if self._payload_prints[loose]:
            self._duplicate_payloads += 1
        self._payload_prints[loose] += 1

    def _remove(self, interaction: StoredInteraction) -> None:
        del self._interactions[interaction.id]
        self._by_pair[(interaction.contact_id.lower(), interaction.schema_id)].remove(interaction)
        self._counters["deleted"] += 1
        exact, loose = interaction.fingerprints()
        if _forget(self._fingerprints, exact):
            self._duplicates -= 1
        if _forget(self._payload_prints, loose):
            self._duplicate_payloads -= 1

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _ignore(
        self, interaction_id: str, body: dict[str, Any], reason: str, errors: Sequence[str]
    ) -> None:
        self._counters["ignored_total"] += 1
        self._ignored_reasons[reason] += 1
        self._ignored.append(
            {
                "id": interaction_id,
                "contactId": body.get("contactId"),
                "schemaId": body.get("schemaId"),
                "createdDate": body.get("createdDate"),
                "payload": body.get("payload"),
                "reason": reason,
                "errors": list(errors),
                "receivedAt": now_iso(),
            }
        )

    # ---- persistence --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything worth keeping across a restart, as JSON-ready data."""
        with self._lock:
            self.dirty = False
            return {
                "version": STATE_VERSION,
                "schemas": [{**s.to_json(), "created": s.created} for s in self._schemas.values()],
                "interactions": [
                    i.to_admin() for i in sorted(self._interactions.values(), key=lambda i: i.seq)
                ],
                "ignored": list(self._ignored),
                "ignoredReasons": dict(self._ignored_reasons),
                "contacts": [c.to_json() for c in self._contacts.all()],
                "counters": {k: self._counters[k] for k in _COUNTERS},
                "requestsByStatus": dict(self._by_status),
                "requestsByEndpoint": dict(self._by_endpoint),
            }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a snapshot. Contacts given in the config win over saved ones with the same id.

        Raises ValueError when the data is not a snapshot this version can read.
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {data.get('version')!r}")
        try:
            with self._lock:
                self._clear()
                for raw in data["schemas"]:
                    schema = parse_schema(raw, created=raw["created"])
                    self._schemas[schema.id] = schema
                for raw in data["interactions"]:
                    self._seq += 1
                    self._add(
                        StoredInteraction(
                            id=raw["id"],
                            contact_id=raw["contactId"],
                            schema_id=raw["schemaId"],
                            created_date=raw["createdDate"],
                            payload=raw["payload"],
                            seq=self._seq,
                            dropped=tuple(raw.get("droppedProperties", ())),
                            received_at=raw.get("receivedAt"),
                        )
                    )
                self._ignored.extend(data.get("ignored", []))
                self._ignored_reasons.update(data.get("ignoredReasons", {}))
                self._counters.update(data.get("counters", {}))
                self._by_status.update(data.get("requestsByStatus", {}))
                self._by_endpoint.update(data.get("requestsByEndpoint", {}))
                saved = [Contact.from_json(c, where="saved contact") for c in data["contacts"]]
                configured = self._contacts.all()
                self._contacts = ContactBook([*saved, *configured])
                self.dirty = False
        except (KeyError, TypeError, SchemaRuleError) as e:
            raise ValueError(f"damaged state: {e!r}") from e

    # ---- the text shown when the server stops -----------------------------------------------

    def summary(self) -> str:
        """A short human-readable account of the session."""
        s = self.stats()
        lines = [
            f"Voyado emulator summary ({s['uptime_seconds']:.1f} s)",
            f"  stored interactions:   {s['stored']} ({s['duplicates']} duplicates, "
            f"{s['deleted']} deleted)",
            f"  ignored interactions:  {s['ignored']}",
        ]
        for reason, n in list(s["ignored_reasons"].items())[:5]:
            lines.append(f"      {n:>6} x {reason}")
        lines.append(f"  dropped properties:    {s['dropped_properties']}")
        statuses = ", ".join(f"{k}: {v}" for k, v in s["requests_by_status"].items()) or "none"
        lines.append(f"  requests:              {s['total_requests']} ({statuses})")
        faults = s["faults"]
        if any(faults.values()):
            lines.append(
                "  faults:                " + ", ".join(f"{k} {v}" for k, v in faults.items())
            )
        lines.append(f"  peak requests/s:       {s['peak_requests_per_second']}")
        lines.append(f"  peak in any 1 s:       {s['peak_requests_in_any_second']}")
        return "\n".join(lines)


def _single(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values and len(values) == 1 else None


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix, _, number = text.partition(":")
    return int(number) if prefix == "after" and number.isdigit() else None


def _forget(prints: Counter[str], key: str) -> bool:
    """Remove one occurrence of key; return whether it was a duplicate of another."""
    was_duplicate = prints[key] > 1
    prints[key] -= 1
    if prints[key] <= 0:
        del prints[key]
    return was_duplicate


def _schema_not_found(schema_id: str) -> Reply:
    return error_reply(404, "InteractionSchemaNotFound", f"no interaction schema {schema_id!r}")


def _interaction_not_found(interaction_id: str) -> Reply:
    return error_reply(404, "InteractionNotFound", f"no interaction {interaction_id!r}")


def _invalid_interaction(message: str) -> Reply:
    return error_reply(400, "InvalidInteraction", message)
