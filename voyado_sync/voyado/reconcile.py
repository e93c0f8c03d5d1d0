"""Is this interaction already in Voyado? Matching a listed interaction against a POST body.

Voyado has no idempotency key, so when a POST's outcome is unknown (5xx, timeout, dropped
connection) the only safe next step is to list the contact's interactions of that schema and
look for the one we may have created. How Voyado echoes what it stored is not documented, so
the comparison allows for every change a server is known to make to a value it accepted, and
for nothing else:

* ``createdDate`` and date-time strings compare as **instants at the coarser precision of the
  two**: ``07:04:08.723Z`` sent and ``07:04:08Z`` or ``07:04:09Z`` echoed (to the second,
  truncated or rounded) are the same; ``Z``, ``+00:00`` and other offsets are equivalent.
  Precision is read from the text (the number of fractional digits; microseconds at most).
* An echoed ``createdDate`` **without an offset** (local time?) cannot be compared as an
  instant: Voyado documents UTC, but a server that writes local time would shift it by hours.
  It is never matched blindly. If it differs from the instant sent by a whole number of
  quarter hours within +-14 h (what a time zone does) and everything else matches, the
  verdict is ``UNDECIDABLE``: the caller must keep the row in flight, neither resend it (it
  may be stored) nor mark it sent (the echo may be another row's). Otherwise it is no match.
  An echo with no ``createdDate`` at all is undecidable the same way.
* **Numbers by value**: ``1 == 1.0``. A number that went through a double
  (``12345678901234567`` echoed as ``12345678901234568``) matches when both round to the same
  double. A number echoed with fewer decimal places (a server rounding or truncating floats)
  matches when it is within one unit of its own last digit of the value sent:
  ``0.1234567891`` matches an echo ``0.1235`` (unit 0.0001) or ``0.1234``, not ``0.1237``.
  The tolerance is the precision the echo itself shows, so it is never looser than what the
  echo can express, and only the echo may be the coarser one (``10`` sent never matches
  ``9.7`` echoed). A bool never equals a number.
* **Strings** compare after Unicode NFC normalisation and stripping of surrounding
  whitespace, as a server may do either before storing.
* Objects compare key by key, a missing key being equal to null (a server may drop nulls).

An interaction whose id is in ``exclude_ids`` (already claimed by another row, compared
case-insensitively as Voyado's ids are GUIDs) is never matched: identical rows each get their
own stored interaction, or none.

``echo_problems`` explains, for one body Voyado accepted and its echo (``GET
/api/v3/interactions/{id}``), why the matcher would not recognise it: an empty list means the
matcher can be trusted against this Voyado.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "UndecidableEcho",
    "Verdict",
    "echo_problems",
    "find_match",
    "judge",
    "matches",
    "parse_instant",
    "same_instant",
    "same_json",
]

_QUARTER_HOUR = timedelta(minutes=15)
_MAX_OFFSET = timedelta(hours=14)


class Verdict(enum.Enum):
    """What a listed interaction is to a body: the same one, another one, or cannot tell."""

    MATCH = "match"
    NO_MATCH = "no match"
    UNDECIDABLE = "undecidable"


class UndecidableEcho(Exception):
    """``find_match`` found no match, but a listed interaction could be the body's one: its
    echo cannot be compared (``createdDate`` without an offset, or none). Keep the row in
    flight; do not resend it."""


@dataclass(frozen=True)
class _Instant:
    at: datetime  # aware UTC; a naive value is taken as UTC here
    unit: timedelta  # precision of the text: 1 s, 1 ms, 1 us...
    has_offset: bool


# A date, "T" or a space, hours and minutes, then maybe seconds and a fraction of them.
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?P<seconds>:\d{2}(?:[.,](?P<fraction>\d+))?)?"
)


def _instant(value: Any) -> _Instant | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    shape = _DATE_TIME.match(text)
    if shape is None:
        return None
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text.replace(",", "."))
    except ValueError:
        return None
    # Precision as written (to the minute when seconds are left out), at most microseconds.
    if shape.group("seconds") is None:
        unit = timedelta(minutes=1)
    else:
        digits = len(shape.group("fraction") or "")
        unit = timedelta(microseconds=10 ** (6 - min(digits, 6)))
    has_offset = parsed.tzinfo is not None
    if not has_offset:
        parsed = parsed.replace(tzinfo=UTC)
    return _Instant(parsed.astimezone(UTC), unit, has_offset)


def parse_instant(value: Any) -> datetime | None:
    """Parse an ISO 8601 date-time (``Z`` or offset, any fractional precision) as aware UTC.

    A value without an offset is taken as UTC here (``matches`` does not rely on that for
    ``createdDate``). Returns None for anything that is not a date-time string.
    """
    parsed = _instant(value)
    return None if parsed is None else parsed.at


def _close(a: _Instant, b: _Instant) -> bool:
    # Strictly less than the coarser unit: a server that truncates .723 to :08 and one that
    # rounds it to :09 both match, and two values a whole unit apart never do.
    return abs(a.at - b.at) < max(a.unit, b.unit)


def same_instant(a: Any, b: Any) -> bool:
    """True when both are date-times that agree at the coarser precision of the two.

    Values without an offset are taken as UTC here.
    """
    ta, tb = _instant(a), _instant(b)
    return ta is not None and tb is not None and _close(ta, tb)


def _shifted_by_a_time_zone(naive: _Instant, sent: _Instant) -> bool:
    """Whether a naive echo could be ``sent`` written in some time zone's local time."""
    diff = naive.at - sent.at
    if abs(diff) > _MAX_OFFSET + naive.unit:
        return False
    rest = diff % _QUARTER_HOUR
    tolerance = max(naive.unit, sent.unit)
    return rest < tolerance or _QUARTER_HOUR - rest < tolerance


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but true is never 1 in JSON.
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _as_decimal(value: int | float | Decimal) -> Decimal | None:
    try:
        # str() of a float is its shortest round-trip form, so 0.1 stays 0.1.
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    return dec if dec.is_finite() else None


def same_number(sent: int | float | Decimal, echoed: int | float | Decimal) -> bool:
    """Whether ``echoed`` is how a server may show the number ``sent``.

    Equal values; or equal once both are doubles (big integers, long decimals through a
    double); or ``echoed`` has fewer decimal places than ``sent`` (a server that rounds or
    truncates) and is within one unit of its own last digit of it. A server can drop digits,
    not add them, so only the echo may be the coarser one: ``10`` sent never matches ``9.7``.
    """
    ds, de = _as_decimal(sent), _as_decimal(echoed)
    if ds is None or de is None:
        return False
    if ds == de:
        return True
    try:
        if float(ds) == float(de):
            return True
    except OverflowError:
        return False
    sent_exp, echo_exp = ds.as_tuple().exponent, de.as_tuple().exponent
    if not isinstance(sent_exp, int) or not isinstance(echo_exp, int) or echo_exp <= sent_exp:
        return False
    return abs(ds - de) < Decimal(1).scaleb(echo_exp)


def _same_string(a: str, b: str) -> bool:
    if a == b:
        return True
    na = unicodedata.normalize("NFC", a).strip()
    nb = unicodedata.normalize("NFC", b).strip()
    return na == nb or same_instant(na, nb)


def same_json(a: Any, b: Any) -> bool:
    """Whether ``b`` is how Voyado may echo the JSON value ``a`` that was sent (see the
    module docstring). Symmetric but for numbers: only ``b`` may have lost digits."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and same_number(a, b)
    if isinstance(a, str) and isinstance(b, str):
        return _same_string(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = set(a) | set(b)
        return all(same_json(a.get(k), b.get(k)) for k in keys)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a is None and b is None


def _norm_id(value: Any) -> str | None:
    # Voyado ids are GUIDs, which .NET treats case-insensitively.
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _compare(item: Mapping[str, Any], body: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(reasons it is another interaction, reasons it cannot be told) for one listed item."""
    mismatches: list[str] = []
    undecidable: list[str] = []
    for key in ("contactId", "schemaId"):
        if item.get(key) is not None and _norm_id(item[key]) != _norm_id(body.get(key)):
            mismatches.append(f"{key}: sent {_short(body.get(key))}, echoed {_short(item[key])}")
    sent_date = body.get("createdDate")
    if sent_date is not None:
        sent = _instant(sent_date)
        echoed = _instant(item.get("createdDate"))
        if sent is None:
            mismatches.append(f"createdDate: the value sent {_short(sent_date)} is no date-time")
        elif item.get("createdDate") is None:
            undecidable.append("createdDate: not echoed, so the instant cannot be compared")
        elif echoed is None:
            mismatches.append(
                f"createdDate: echoed {_short(item.get('createdDate'))}, not a date-time"
            )
        elif not echoed.has_offset:
            if _shifted_by_a_time_zone(echoed, sent):
                undecidable.append(
                    f"createdDate: echoed {_short(item['createdDate'])} without an offset "
                    "(local time?), so it cannot be compared as an instant"
                )
            else:
                mismatches.append(
                    f"createdDate: echoed {_short(item['createdDate'])} without an offset, "
                    f"in no time zone the instant sent {_short(sent_date)}"
                )
        elif not _close(echoed, sent):
            mismatches.append(
                f"createdDate: sent {_short(sent_date)}, echoed {_short(item['createdDate'])}"
            )
    sent_payload = body.get("payload") or {}
    echoed_payload = item.get("payload") or {}
    if not isinstance(sent_payload, Mapping) or not isinstance(echoed_payload, Mapping):
        if not same_json(sent_payload, echoed_payload):
            mismatches.append("payload: not an object on both sides")
        return mismatches, undecidable
    for key in sorted(set(sent_payload) | set(echoed_payload), key=str):
        a, b = sent_payload.get(key), echoed_payload.get(key)
        if not same_json(a, b):
            if key not in echoed_payload:
                mismatches.append(f"payload.{key}: sent {_short(a)}, not echoed")
            else:
                mismatches.append(f"payload.{key}: sent {_short(a)}, echoed {_short(b)}")
    return mismatches, undecidable


def judge(
    item: Mapping[str, Any], body: Mapping[str, Any], *, exclude_ids: Collection[str] = ()
) -> Verdict:
    """Whether the listed interaction ``item`` is the one ``body`` would have created.

    ``NO_MATCH`` for an item whose id is in ``exclude_ids`` (claimed by another row) and for
    one that differs; ``UNDECIDABLE`` when only its ``createdDate`` cannot be compared (see
    the module docstring); ``MATCH`` otherwise.
    """
    return _judge(item, body, _excluded(exclude_ids))


def _excluded(ids: Collection[str]) -> set[str]:
    return {x for x in (_norm_id(i) for i in ids) if x is not None}


def _judge(item: Mapping[str, Any], body: Mapping[str, Any], excluded: set[str]) -> Verdict:
    item_id = _norm_id(item.get("id"))
    if item_id is not None and item_id in excluded:
        return Verdict.NO_MATCH
    mismatches, undecidable = _compare(item, body)
    if mismatches:
        return Verdict.NO_MATCH
    return Verdict.UNDECIDABLE if undecidable else Verdict.MATCH


def matches(
    item: Mapping[str, Any], body: Mapping[str, Any], *, exclude_ids: Collection[str] = ()
) -> bool:
    """True when ``judge`` says ``MATCH``: the item is the one ``body`` created."""
    return judge(item, body, exclude_ids=exclude_ids) is Verdict.MATCH


def find_match(
    items: Iterable[Mapping[str, Any]],
    body: Mapping[str, Any],
    *,
    exclude_ids: Collection[str] = (),
) -> str | None:
    """The id of the first listed interaction that matches ``body`` and is not excluded.

    Returns None only when no item could be the body's interaction. Raises
    ``UndecidableEcho`` when none matches but one cannot be told apart (its echo has no
    comparable ``createdDate``): the caller must not conclude "not stored".
    """
    excluded = _excluded(exclude_ids)
    doubtful = 0
    for item in items:
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            continue
        verdict = _judge(item, body, excluded)
        if verdict is Verdict.MATCH:
            return item_id
        if verdict is Verdict.UNDECIDABLE:
            doubtful += 1
    if doubtful:
        raise UndecidableEcho(
            f"{doubtful} listed interaction(s) could be this row's but their createdDate "
            "cannot be compared as an instant (no offset, or none echoed)"
        )
    return None


def echo_problems(sent_body: Mapping[str, Any], echoed: Any) -> list[str]:
    """Why the matcher would not recognise ``echoed`` as the interaction ``sent_body`` made.

    ``echoed`` is Voyado's own view of an interaction it accepted (``GET
    /api/v3/interactions/{id}`` or its listing entry). Each string names a field, what was
    sent and what came back; an empty list means ``matches(echoed, sent_body)`` is true, so
    the matcher can be trusted against this Voyado. A field the matcher cannot decide on
    (``createdDate`` without an offset) is a problem too: reconciliation could not conclude.
    """
    if not isinstance(echoed, Mapping):
        return [f"the echo is not a JSON object: {_short(echoed)}"]
    mismatches, undecidable = _compare(echoed, sent_body)
    return mismatches + undecidable
