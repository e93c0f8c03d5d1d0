"""Contact identifiers, normalised before lookup. Pure; the cache of resolved ids is the
ledger's (:meth:`voyado_sync.state.Ledger.cached_contacts`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

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
