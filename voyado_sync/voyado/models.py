"""Typed results of the Voyado client: what a request came to, never a raw response.

Every outcome is a small frozen dataclass so that callers (the engine) can ``match`` on it and
store it without holding on to HTTP objects. Nothing here carries the API key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "ContactAmbiguous",
    "ContactFound",
    "ContactInvalid",
    "ContactNotFound",
    "DeleteOutcome",
    "Deleted",
    "Delivered",
    "DeliveryOutcome",
    "Failed",
    "LookupOutcome",
    "Rejected",
    "RequestKind",
    "RequestStats",
    "SchemaSummary",
]


@dataclass(frozen=True)
class SchemaSummary:
    """One entry of ``GET /api/v3/interactionschemas``."""

    id: str
    display_name: str


@dataclass(frozen=True)
class Delivered:
    """The interaction is stored in Voyado under ``interaction_id``.

    ``reconciled`` is true when the POST's outcome was unknown (5xx, timeout, dropped
    connection) and the interaction was then found by listing the contact's interactions.
    ``interaction_id`` is never empty: a 2xx without an id is not Voyado's answer and comes
    back as ``Failed(maybe_delivered=True)``.
    """

    interaction_id: str
    reconciled: bool = False


@dataclass(frozen=True)
class Rejected:
    """Voyado refused this row for good (a 4xx other than 401/403/429): do not resend it."""

    status: int
    error_code: str | None
    message: str


@dataclass(frozen=True)
class Failed:
    """A transient failure whose retry budget is used up for this run; try again next run.

    ``maybe_delivered`` is true when the last attempt's outcome is unknown *and* could not be
    checked (the listing failed, the body lacks contactId/schemaId, a 2xx carried no
    interaction id, or ``VoyadoClient.stop()`` abandoned a POST in flight): Voyado may have
    stored the interaction, so the row must be reconciled (``find_delivered``) before it is
    sent again. ``reason`` never holds the API key or proxy credentials.
    """

    reason: str
    status: int | None = None
    error_code: str | None = None
    maybe_delivered: bool = False


DeliveryOutcome: TypeAlias = Delivered | Rejected | Failed


@dataclass(frozen=True)
class Deleted:
    """Voyado no longer holds the interaction: it answered the DELETE, or answered 404
    (``already_gone``: deleted before, maybe by an earlier attempt whose answer was lost)."""

    already_gone: bool = False


#: What ``delete_interaction`` came to: ``Failed(maybe_delivered=True)`` means the last
#: DELETE's outcome is unknown and could not be checked (the interaction may still be there).
DeleteOutcome: TypeAlias = Deleted | Rejected | Failed


@dataclass(frozen=True)
class ContactFound:
    """The lookup matched exactly one contact."""

    contact_id: str


@dataclass(frozen=True)
class ContactNotFound:
    """No contact has that key value (404)."""

    message: str


@dataclass(frozen=True)
class ContactAmbiguous:
    """Several contacts share the key value (409); their ids when Voyado lists them."""

    contact_ids: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class ContactInvalid:
    """The value is not valid for the key (400, e.g. ``InvalidEmailAddress``)."""

    error_code: str
    message: str


LookupOutcome: TypeAlias = (
    ContactFound | ContactNotFound | ContactAmbiguous | ContactInvalid | Failed
)

RequestKind = Literal[
    "schema",
    "interaction_post",
    "interaction_list",
    "interaction_get",
    "interaction_delete",
    "contact_lookup",
    "contact_changes",
]


@dataclass
class RequestStats:
    """Counters of every HTTP exchange of a client, for the run summary.

    ``by_status`` is keyed by the HTTP status, or ``"network"`` when no answer came back.
    ``retries`` counts resends of any cause (429 included); ``throttled`` counts 429 answers;
    ``throttle_wait`` is the total pause, in seconds, that 429s imposed on the requests.
    """

    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int | str] = field(default_factory=Counter)
    throttled: int = 0
    retries: int = 0
    reconciled: int = 0
    throttle_wait: float = 0.0

    def record(self, kind: RequestKind, status: int | Literal["network"]) -> None:
        """Count one exchange of ``kind`` that ended with ``status``."""
        self.by_kind[kind] += 1
        self.by_status[status] += 1
        if status == 429:
            self.throttled += 1

    def total(self) -> int:
        """Number of HTTP exchanges attempted, answered or not."""
        return sum(self.by_kind.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (status keys become strings, sorted)."""
        return {
            "total": self.total(),
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items(), key=_status_key)},
            "throttled": self.throttled,
            "retries": self.retries,
            "reconciled": self.reconciled,
            "throttle_wait_seconds": round(self.throttle_wait, 3),
        }


def _status_key(item: tuple[int | str, int]) -> tuple[int, str]:
    # Numeric statuses first in order, then "network".
    key = item[0]
    return (key, "") if isinstance(key, int) else (1000, key)
