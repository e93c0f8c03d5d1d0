"""Contact identifiers: normalisation before lookup, and the cache of resolved contactIds."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from sqlglot import exp

from voyado_sync.diff import col, lit
from voyado_sync.state import Ledger, utc_now

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SSN = re.compile(r"^(\d{6}|\d{8})-?\d{4}$")


@dataclass(frozen=True)
class Normalised:
    """An identifier ready for lookup, and what was changed to get there (for the summary)."""

    value: str
    changed: str | None = None


def normalise(key: str, raw: object, *, default_country: str | None = None) -> Normalised:
    """Normalise a contact identifier; raise ValueError with the reason when it cannot be used."""
    text = str(raw).strip()
    if not text:
        raise ValueError("the contact identifier is empty")
    if key == "email":
        value = text.lower()
        if not _EMAIL.match(value):
            raise ValueError(f"{text!r} is not an email address")
        return Normalised(value, "trimmed and lower-cased" if value != str(raw) else None)
    if key == "mobilePhone":
        try:
            number = phonenumbers.parse(text, default_country)
        except phonenumbers.NumberParseException as exc:
            hint = "" if default_country else " (set contact.default_country for local numbers)"
            raise ValueError(f"{text!r} is not a phone number: {exc}{hint}") from None
        if not phonenumbers.is_valid_number(number):
            raise ValueError(f"{text!r} is not a valid phone number")
        value = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return Normalised(value, "converted to E.164" if value != str(raw) else None)
    if key == "socialSecurityNumber":
        if not _SSN.match(text):
            raise ValueError(f"{text[:2]}... is not a social security number (YYMMDD-NNNN)")
        return Normalised(text, "trimmed" if text != str(raw) else None)
    return Normalised(text, "trimmed" if text != str(raw) else None)


class ContactCache:
    """Resolved contactIds, kept in the ledger schema so each identifier is looked up once."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get(self, key: str, values: list[str]) -> dict[str, str]:
        if not values:
            return {}
        query = (
            exp.select("key_value", "contact_id")
            .from_(self.ledger.table("contacts"))
            .where(
                exp.and_(
                    col("key_type").eq(lit(key)), col("key_value").isin(*(lit(v) for v in values))
                )
            )
        )
        return {str(v): str(c) for v, c in self.ledger.warehouse.query(self.ledger._sql(query))}

    def put(self, key: str, resolved: dict[str, str]) -> None:
        if not resolved:
            return
        table = self.ledger.table("contacts")
        where = exp.and_(
            col("key_type").eq(lit(key)), col("key_value").isin(*(lit(v) for v in resolved))
        )
        now = utc_now()
        rows = [(lit(key), lit(v), lit(c), lit(now)) for v, c in resolved.items()]
        self.ledger.warehouse.execute_many(
            [
                self.ledger._sql(exp.delete(table, where=where)),
                self.ledger._sql(exp.insert(exp.values(rows), table)),
            ]
        )

    def forget(self, key: str, values: list[str]) -> None:
        """Drop cached ids Voyado no longer knows (the contact was merged or deleted)."""
        if not values:
            return
        where = exp.and_(
            col("key_type").eq(lit(key)), col("key_value").isin(*(lit(v) for v in values))
        )
        self.ledger.warehouse.execute(
            self.ledger._sql(exp.delete(self.ledger.table("contacts"), where=where))
        )
