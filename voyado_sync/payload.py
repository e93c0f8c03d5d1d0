"""From a warehouse row to the exact body posted to Voyado, validated before it is sent.

Voyado accepts an interaction that breaks its schema and then silently ignores it, so every
payload is checked here against the schema's JSON Schema (draft 2020-12, with date-time format
checking) and a failing row becomes a rejection that names the property, the rule and the value.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from voyado_sync.exceptions import RowRejected
from voyado_sync.spec import InteractionModel, ResolvedProperty

MAX_VALUE_IN_REASON = 80


def shown(value: object) -> str:
    """A value as it appears in a rejection reason, the way a person writes it: ``99.99``
    (not ``Decimal('99.99')``), ``2025-01-31T08:00:00``, ``true``; text quoted, truncated
    inside its quotes."""
    if isinstance(value, str | uuid.UUID):
        text = str(value)
        if len(text) > MAX_VALUE_IN_REASON:
            text = text[: MAX_VALUE_IN_REASON - 3] + "..."
        return repr(text)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    text = repr(value) if isinstance(value, int | float) else str(value)
    if len(text) > MAX_VALUE_IN_REASON:
        text = text[: MAX_VALUE_IN_REASON - 3] + "..."
    return text


def _infinite(value: date) -> bool:
    """The values DuckDB, PostgreSQL and the Python drivers give for +/-infinity: the first
    and last representable date or moment (a real one cannot be told apart, and is no more
    an event's date)."""
    if isinstance(value, datetime):
        naive = value.replace(tzinfo=None)
        return naive in (datetime.max, datetime.min)
    return value in (date.max, date.min)


def iso_instant(value: object) -> str:
    """A timestamp or date as ISO 8601 UTC with milliseconds and Z (naive values are UTC)."""
    if isinstance(value, date) and _infinite(value):
        raise ValueError(
            f"{shown(value)} is how the warehouse hands over 'infinity' (or the first or last "
            "representable moment): not a date Voyado can hold; use NULL for 'no date'"
        )
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return iso_instant(datetime.combine(value, time(0), tzinfo=UTC))
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{shown(value)} is not an ISO 8601 date-time") from exc
        return iso_instant(parsed)
    raise ValueError(f"{shown(value)} is not a timestamp or date")


def _convert(prop: ResolvedProperty, value: object) -> object:
    if prop.type == "string":
        if isinstance(value, datetime | date) and prop.format == "date":
            if _infinite(value):
                iso_instant(value)  # raises, saying why
            return (value.date() if isinstance(value, datetime) else value).isoformat()
        if isinstance(value, datetime | date) and prop.format in (None, "date-time"):
            return iso_instant(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return value
        if isinstance(value, float | Decimal):
            return format(value, "f") if isinstance(value, Decimal) else repr(value)
        if isinstance(value, int | uuid.UUID | time):
            return str(value)
        raise ValueError(f"{shown(value)} cannot be sent as a string")
    if prop.type == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{shown(value)} is not a boolean")
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is a boolean, not a {prop.type}")
    if prop.type == "integer":
        if isinstance(value, int):
            return value
        if isinstance(value, Decimal | float) and math.isfinite(value) and value == int(value):
            return int(value)
        raise ValueError(f"{shown(value)} is not an integer")
    # number
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float):
        if not math.isfinite(value):
            raise ValueError(f"{shown(value)} is not a finite number")
        if value == int(value) and isinstance(value, Decimal):
            return int(value)
        return _exact_float(value)
    raise ValueError(f"{shown(value)} is not a number")


def _exact_float(value: Decimal | float) -> float:
    """``value`` as a JSON number that means exactly the same decimal; a decimal with more
    digits than a JSON number keeps (a double: about 17) cannot be, and is rejected rather than
    rounded on the way (``1234567890.0123456789`` would arrive as ``1234567890.0123458``)."""
    number = float(value)
    if isinstance(value, Decimal) and Decimal(repr(number)) != value:
        raise ValueError(
            f"{shown(value)} has more significant digits than a JSON number keeps (it would "
            f"arrive as {number!r}); round it in the model, or map it as type: string"
        )
    return number


class PayloadBuilder:
    """Builds and validates the interaction body of each row of one model."""

    def __init__(self, model: InteractionModel) -> None:
        self.model = model
        self.schema = model.schema_body()["jsonSchema"]
        self._validator = Draft202012Validator(self.schema, format_checker=FormatChecker())
        stored = model.stored_json_schema
        #: Voyado's own schema, where it was read and is not the same as the generated one.
        self._stored = (
            Draft202012Validator(stored, format_checker=FormatChecker())
            if stored and stored != self.schema
            else None
        )

    def payload(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of a row (column -> value); RowRejected when it breaks the schema."""
        payload: dict[str, Any] = {}
        for prop in self.model.properties:
            value = row.get(prop.column)
            if value is None:
                continue  # NULL -> property omitted; a required one is caught below
            try:
                payload[prop.name] = _convert(prop, value)
            except ValueError as exc:
                raise RowRejected(
                    f"property {prop.name} (column {prop.column}): {exc}; the schema says "
                    f"type {prop.type}"
                ) from None
        errors = sorted(self._validator.iter_errors(payload), key=lambda e: list(e.path))
        if not errors and self._stored is not None:
            errors = sorted(self._stored.iter_errors(payload), key=lambda e: list(e.path))
            if errors:
                raise RowRejected(
                    "Voyado's stored schema: " + "; ".join(self._describe(e) for e in errors[:3])
                )
        if errors:
            raise RowRejected("; ".join(self._describe(e) for e in errors[:3]))
        return payload

    def created_date(self, row: Mapping[str, Any]) -> str | None:
        """The row's createdDate, or None when the model maps no created_date column."""
        column = self.model.created_date_column
        if column is None:
            return None
        value = row.get(column)
        if value is None:
            raise RowRejected(f"created_date column {column} is NULL")
        try:
            return iso_instant(value)
        except ValueError as exc:
            raise RowRejected(f"created_date column {column}: {exc}") from None

    def _describe(self, error: Any) -> str:
        validator = str(error.validator)
        if validator == "required":
            missing = str(error.message).split("'")[1] if "'" in str(error.message) else "?"
            column = next((p.column for p in self.model.properties if p.name == missing), missing)
            return f"property {missing} is required by the schema but column {column} is NULL"
        name = ".".join(str(p) for p in error.path) or "payload"
        prop = next((p for p in self.model.properties if p.name == name), None)
        where = f"property {name}" + (f" (column {prop.column})" if prop else "")
        if validator == "format":
            return f"{where}: {shown(error.instance)} is not a valid {error.validator_value}"
        if validator == "type":
            return f"{where}: {shown(error.instance)} is not of type {error.validator_value}"
        rule = f"{validator}={shown(error.validator_value)}"
        return f"{where}: breaks rule {rule} ({shown(error.instance)})"
