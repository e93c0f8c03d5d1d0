"""The emulator's contact register and Voyado's ``GET /api/v3/contacts/id`` lookup."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from voyado_sync.emulator.config import Contact
from voyado_sync.emulator.wire import Reply, error_reply

# The lookup keys the sync may use. Voyado's `any` key is deliberately absent: it stops at the
# first attribute the value is valid for, even without a match, so clients must not use it.
LOOKUP_KEYS = ("email", "mobilePhone", "customKey", "socialSecurityNumber")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Swedish personnummer: YYMMDD or YYYYMMDD, then an optional dash, then four digits.
_SSN = re.compile(r"(?:[0-9]{6}|[0-9]{8})-?[0-9]{4}")


class ContactBook:
    """Known contacts, indexed by id and by each lookup key. Not thread-safe on its own."""

    def __init__(self, contacts: Iterable[Contact] = ()) -> None:
        self._by_id: dict[str, Contact] = {}
        self._index: dict[str, dict[str, list[str]]] = {}
        self.add(contacts)

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Contact]:
        return list(self._by_id.values())

    def add(self, contacts: Iterable[Contact]) -> None:
        """Add contacts; a contact whose id is already known replaces the earlier one."""
        for contact in contacts:
            # GUIDs are compared case-insensitively, as Engage does.
            self._by_id[contact.contact_id.lower()] = contact
        self._rebuild_index()

    def remove(self, contact_ids: Iterable[str]) -> int:
        """Forget contacts (as a merge or deletion in Engage does); return how many were known."""
        removed = sum(self._by_id.pop(c.lower(), None) is not None for c in contact_ids)
        self._rebuild_index()
        return removed

    def find(self, contact_id: str) -> Contact | None:
        return self._by_id.get(contact_id.lower())

    def _rebuild_index(self) -> None:
        index: dict[str, defaultdict[str, list[str]]] = {k: defaultdict(list) for k in LOOKUP_KEYS}
        for contact in self._by_id.values():
            values = {
                "email": contact.email.casefold() if contact.email else None,
                "mobilePhone": contact.mobile_phone,
                "customKey": contact.custom_key,
                "socialSecurityNumber": contact.social_security_number,
            }
            for key, value in values.items():
                if value:
                    index[key][value].append(contact.contact_id)
        self._index = {k: dict(v) for k, v in index.items()}

    def lookup(self, query: Mapping[str, Sequence[str]]) -> Reply:
        """Answer ``GET /api/v3/contacts/id`` for parsed query parameters."""
        if len(query) != 1:
            return error_reply(
                400,
                "InvalidSearchQuery",
                f"give exactly one of {', '.join(LOOKUP_KEYS)} (got {sorted(query) or 'none'})",
            )
        ((key, values),) = query.items()
        if key not in LOOKUP_KEYS:
            return error_reply(
                400,
                "InvalidSearchQuery",
                f"unsupported search key {key!r}; use one of {', '.join(LOOKUP_KEYS)}",
            )
        if len(values) != 1 or not values[0]:
            return error_reply(400, "InvalidSearchQuery", f"{key} must be given once, not empty")
        value = values[0]
        if key == "email":
            if not _EMAIL.fullmatch(value):
                return error_reply(400, "InvalidEmailAddress", "not a valid email address")
            value = value.casefold()
        elif key == "mobilePhone" and not _E164.fullmatch(value):
            # A '+' that was not URL-encoded arrives as a space: the commonest mistake.
            hint = " (was the '+' URL-encoded as %2B?)" if value.startswith(" ") else ""
            return error_reply(
                400, "InvalidPhoneNumber", f"mobilePhone must be in E.164 format{hint}"
            )
        elif key == "socialSecurityNumber" and not _SSN.fullmatch(value):
            return error_reply(
                400,
                "InvalidSocialSecurityNumber",
                "socialSecurityNumber must have 10 or 12 digits, optionally a dash before the "
                "last four",
            )
        matches = self._index[key].get(value, [])
        if not matches:
            return error_reply(404, "ContactNotFound", f"no contact matches that {key}")
        if len(matches) > 1:
            return error_reply(
                409,
                "MultipleMatches",
                f"{len(matches)} contacts match that {key}",
                multipleMatchesFound=list(matches),
            )
        return Reply(200, matches[0])
