"""The Voyado Engage API layer: an async client, its typed outcomes, pacing, the window of
requests in flight, and reconciliation."""

from __future__ import annotations

from voyado_sync.exceptions import ClientStopped, ContactGone, ListingUnavailable
from voyado_sync.voyado.client import LOOKUP_KEYS, RetryPolicy, VoyadoClient
from voyado_sync.voyado.models import (
    ContactAmbiguous,
    ContactFound,
    ContactInvalid,
    ContactNotFound,
    Deleted,
    DeleteOutcome,
    Delivered,
    DeliveryOutcome,
    Failed,
    LookupOutcome,
    Rejected,
    RequestStats,
    SchemaSummary,
)
from voyado_sync.voyado.pacing import RateLimiter
from voyado_sync.voyado.reconcile import echo_problems, find_match, matches
from voyado_sync.voyado.window import ConcurrencyWindow

__all__ = [
    "LOOKUP_KEYS",
    "ClientStopped",
    "ConcurrencyWindow",
    "ContactAmbiguous",
    "ContactFound",
    "ContactGone",
    "ContactInvalid",
    "ContactNotFound",
    "DeleteOutcome",
    "Deleted",
    "Delivered",
    "DeliveryOutcome",
    "Failed",
    "ListingUnavailable",
    "LookupOutcome",
    "RateLimiter",
    "Rejected",
    "RequestStats",
    "RetryPolicy",
    "SchemaSummary",
    "VoyadoClient",
    "echo_problems",
    "find_match",
    "matches",
]
