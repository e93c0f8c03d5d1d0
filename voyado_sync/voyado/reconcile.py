"""Is this interaction already in Voyado? Matching a listed interaction against a POST body.

Voyado has no idempotency key, so when a POST's outcome is unknown (5xx, timeout, dropped
connection) the only safe next step is to list the contact's interactions of that schema and
look for the one we may have created. Two interactions are the same when contact, schema,
``createdDate`` (as an instant, to the millisecond) and payload (JSON values, numbers compared
by value) agree. The engine always sets ``createdDate``, which makes the match precise; a body
without one is matched on contact, schema and payload alone.

Identical rows (same contact, schema, instant and payload) are told apart by ``exclude_ids``:
an interaction already claimed by one row is never matched for another.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["find_match", "matches", "parse_instant", "same_instant", "same_json"]

_MS = timedelta(milliseconds=1)


def parse_instant(value: Any) -> datetime | None:
    """Parse an ISO 8601 date-time (``Z`` or offset, any fractional precision) as aware UTC.

    A value without an offset is taken as UTC, which is what Voyado stores. Returns None for
    anything that is not a date-time string.
    """
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def same_instant(a: Any, b: Any) -> bool:
    """True when both are date-times less than a millisecond apart.

    Less than 1 ms rather than "equal after truncation" so that a server that rounds
    ``.7235`` to ``.724`` and one that truncates it to ``.723`` both match the value sent.
    """
    ta, tb = parse_instant(a), parse_instant(b)
    if ta is None or tb is None:
        return False
    return abs(ta - tb) < _MS


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but true is never 1 in JSON.
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _as_decimal(value: int | float | Decimal) -> Decimal | None:
    try:
        # str() of a float is its shortest round-trip form, so 0.1 stays 0.1.
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None


def same_json(a: Any, b: Any) -> bool:
    """Compare JSON values: numbers by value (``1 == 1.0``), a bool never equals a number.

    Objects compare key by key, a missing key being equal to null (a server may drop nulls);
    two strings that are both date-times compare as instants (a server may reformat them).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        if not (_is_number(a) and _is_number(b)):
            return False
        da, db = _as_decimal(a), _as_decimal(b)
        return da is not None and db is not None and da == db
    if isinstance(a, str) and isinstance(b, str):
        return a == b or same_instant(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = set(a) | set(b)
        return all(same_json(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a is None and b is None


def _same_id(a: Any, b: Any) -> bool:
    # Voyado ids are GUIDs, which .NET treats case-insensitively.
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower()


def matches(
    item: Mapping[str, Any], body: Mapping[str, Any], *, exclude_ids: Collection[str] = ()
) -> bool:
    """True when the listed interaction ``item`` is the one ``body`` would have created.

    contactId and schemaId are compared when the item carries them (a listing is already
    filtered by both); createdDate as instants to the millisecond when the body has one;
    payload as JSON with number normalisation. An item whose id is in ``exclude_ids`` (claimed
    by another row) never matches.
    """
    item_id = item.get("id")
    if isinstance(item_id, str) and item_id in exclude_ids:
        return False
    for key in ("contactId", "schemaId"):
        if key in item and item[key] is not None and not _same_id(item[key], body.get(key)):
            return False
    if body.get("createdDate") is not None and not same_instant(
        item.get("createdDate"), body["createdDate"]
    ):
        return False
    return same_json(item.get("payload") or {}, body.get("payload") or {})


def find_match(
    items: Iterable[Mapping[str, Any]],
    body: Mapping[str, Any],
    *,
    exclude_ids: Collection[str] = (),
) -> str | None:
    """The id of the first listed interaction that ``matches`` body and is not excluded."""
    for item in items:
        item_id = item.get("id")
        if isinstance(item_id, str) and item_id and matches(item, body, exclude_ids=exclude_ids):
            return item_id
    return None
