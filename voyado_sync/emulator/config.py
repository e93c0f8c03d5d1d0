"""The emulator's settings and its known contacts.

Only the fault and limit settings in :data:`RUNTIME_FIELDS` may change while the emulator runs;
host, port, seed and state file are fixed at start.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_API_KEY = "emulator-key"

# Contact keys as they appear in a contacts file or an admin request (Voyado's spelling),
# mapped to the Contact field each one fills.
_CONTACT_KEYS = {
    "contactId": "contact_id",
    "email": "email",
    "mobilePhone": "mobile_phone",
    "customKey": "custom_key",
    "socialSecurityNumber": "social_security_number",
}


@dataclass(frozen=True)
class Contact:
    """A contact the emulator knows: interactions may only be posted for known contacts."""

    contact_id: str
    email: str | None = None
    mobile_phone: str | None = None
    custom_key: str | None = None
    social_security_number: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The contact in Voyado's spelling, as a contacts JSON file holds it."""
        return {wire: getattr(self, attr) for wire, attr in _CONTACT_KEYS.items()}

    @classmethod
    def from_json(cls, data: object, *, where: str = "contact") -> Contact:
        """Build a contact from a JSON object in Voyado's spelling (snake_case is accepted too).

        Raises ValueError naming ``where`` when the object is not a usable contact.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        values: dict[str, str | None] = {}
        for key, value in data.items():
            attr = _CONTACT_KEYS.get(key, key if key in _CONTACT_KEYS.values() else None)
            if attr is None:
                allowed = ", ".join(_CONTACT_KEYS)
                raise ValueError(f"{where}: unknown key {key!r} (allowed: {allowed})")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{where}: {key} must be a string, got {type(value).__name__}")
            # An empty cell means "no such identifier", as in the CSV format.
            values[attr] = (value.strip() or None) if isinstance(value, str) else None
        contact_id = values.pop("contact_id", None)
        if not contact_id:
            raise ValueError(f"{where}: contactId is missing or empty")
        return cls(contact_id=contact_id, **values)


def load_contacts(path: Path) -> list[Contact]:
    """Read contacts from a ``.json`` file (a list of objects) or a CSV file with a header.

    Columns/keys: contactId, email, mobilePhone, customKey, socialSecurityNumber; every one but
    contactId may be empty or absent. Raises ValueError (naming the file and row) or OSError.
    """
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of contacts")
        return [Contact.from_json(item, where=f"{path} item {i}") for i, item in enumerate(data)]
    contacts = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "contactId" not in reader.fieldnames:
            raise ValueError(f"{path}: the CSV header must name a contactId column")
        for row in reader:
            # DictReader puts cells beyond the header under None; they cannot be mapped.
            row.pop(None, None)  # type: ignore[call-overload]
            where = f"{path} line {reader.line_num}"
            contacts.append(Contact.from_json(dict(row), where=where))
    return contacts


# Settings that POST /_emulator/config and EmulatorHandle.configure may change.
RUNTIME_FIELDS = frozenset(
    {
        "latency_ms",
        "latency_jitter",
        "slow_rate",
        "slow_ms",
        "error_rate",
        "ambiguous_rate",
        "rate_limit",
        "retry_after",
        "api_key",
    }
)


@dataclass
class EmulatorConfig:
    """How the emulator listens and misbehaves.

    ``port`` 0 picks a free port. ``rate_limit`` is requests per second per API key (0 or less:
    no limit). ``retry_after`` adds a Retry-After header (seconds) to 429 answers. The three
    fault rates are shares between 0 and 1; ``seed`` makes their draws reproducible.

    Latency, as a far-away Voyado has it: each API answer waits ``latency_ms`` spread
    uniformly by ``latency_jitter`` (0.5: 50% to 150% of it), and a share ``slow_rate`` of
    answers waits ``slow_ms`` more (the slow tail). The draws follow ``seed`` too.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = DEFAULT_API_KEY
    rate_limit: float = 200.0
    retry_after: float | None = None
    latency_ms: float = 0.0
    latency_jitter: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 0.0
    error_rate: float = 0.0
    ambiguous_rate: float = 0.0
    seed: int | None = None
    state_file: Path | None = None
    contacts: list[Contact] = field(default_factory=list)

    def __repr__(self) -> str:
        # Keep the API key out of reprs, which end up in logs and test output.
        return (
            f"EmulatorConfig(host={self.host!r}, port={self.port}, api_key='***', "
            f"rate_limit={self.rate_limit}, retry_after={self.retry_after}, "
            f"latency_ms={self.latency_ms}, latency_jitter={self.latency_jitter}, "
            f"slow_rate={self.slow_rate}, slow_ms={self.slow_ms}, error_rate={self.error_rate}, "
            f"ambiguous_rate={self.ambiguous_rate}, seed={self.seed}, "
            f"state_file={self.state_file}, contacts=<{len(self.contacts)}>)"
        )

    def runtime_settings(self) -> dict[str, Any]:
        """The changeable settings, without the API key (it is never shown)."""
        return {
            "latency_ms": self.latency_ms,
            "latency_jitter": self.latency_jitter,
            "slow_rate": self.slow_rate,
            "slow_ms": self.slow_ms,
            "error_rate": self.error_rate,
            "ambiguous_rate": self.ambiguous_rate,
            "rate_limit": self.rate_limit,
            "retry_after": self.retry_after,
            "api_key_set": bool(self.api_key),
        }


_SHARES = frozenset({"error_rate", "ambiguous_rate", "latency_jitter", "slow_rate"})


def check_runtime_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate a partial runtime config; return it with numbers as floats.

    Raises ValueError listing every problem found, so one round trip shows them all.
    """
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in RUNTIME_FIELDS:
            problems.append(f"{name}: not a runtime setting (allowed: {sorted(RUNTIME_FIELDS)})")
            continue
        if name == "api_key":
            if not isinstance(value, str) or not value:
                problems.append("api_key: must be a non-empty string")
            else:
                clean[name] = value
            continue
        if name == "retry_after" and value is None:
            clean[name] = None
            continue
        # bool is an int subclass; "true" as a latency is a mistake, not 1 ms.
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            problems.append(f"{name}: must be a number, got {value!r}")
            continue
        number = float(value)
        if name in _SHARES and not 0.0 <= number <= 1.0:
            problems.append(f"{name}: must be between 0 and 1, got {value!r}")
        elif name in {"latency_ms", "slow_ms", "retry_after"} and number < 0:
            problems.append(f"{name}: must not be negative, got {value!r}")
        else:
            clean[name] = number
    if problems:
        raise ValueError("; ".join(problems))
    return clean
