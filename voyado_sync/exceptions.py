"""The one error tree of voyado-sync, one class per way the caller recovers.

::

    VoyadoSyncError                 base class; never raised directly
    ├── ConfigError                 meta.voyado, options or environment are wrong: fix them (exit 2)
    ├── ManifestError               target/manifest.json missing or unreadable: dbt build (exit 2)
    ├── WarehouseError              the warehouse could not be reached or a query failed (exit 2)
    ├── StateError                  the ledger is unusable (exit 2)
    │   └── LockError               another run holds the ledger's lock: wait for it (exit 2)
    ├── SchemaRefused               voyado-sync refused a schema change to protect data (exit 2)
    └── ApiError                    Voyado answered in a way the caller must handle
        ├── RetryableApiError       429, 502/503/504, network trouble: try again later
        │   ├── ListingUnavailable  a listing could not be read: keep the row in flight
        │   └── ClientStopped       the client was stopped (``VoyadoClient.stop``)
        ├── ContactGone             the listing says 404 ContactNotFound: the contact is gone
        ├── RequestRefused          Voyado refused one request for good (a 4xx on a schema
        │                           create or delete): fix that schema; other work goes on
        └── FatalApiError           401/403/407/redirect: no request can succeed; stop the run

``RowRejected`` is not an error of the run: it marks one row as not sendable (bad payload,
NULL key) and the run goes on with the next row.

Messages never contain the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class VoyadoSyncError(Exception):
    """Base class of every error voyado-sync raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One configuration problem: where it was found and what is allowed."""

    message: str
    model: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = []
        if self.model:
            where.append(f"model {self.model}")
        if self.key:
            where.append(f"key {self.key}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ConfigError(VoyadoSyncError):
    """The configuration is wrong. Carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem | str]) -> None:
        self.problems: list[ConfigProblem] = [
            p if isinstance(p, ConfigProblem) else ConfigProblem(p) for p in problems
        ]
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            text = lines[0]
        else:
            text = f"{len(lines)} configuration problems:\n" + "\n".join(f"  - {x}" for x in lines)
        super().__init__(text)


class ManifestError(VoyadoSyncError):
    """dbt's target/manifest.json is missing, unreadable or of an unsupported version."""


class WarehouseError(VoyadoSyncError):
    """The warehouse could not be opened or a statement failed; driver errors end here."""


class StateError(VoyadoSyncError):
    """The ledger (delivery state) is missing, damaged or of an unknown version."""


class LockError(StateError):
    """Another voyado-sync run holds the ledger: only one run at a time may write it."""


class SchemaRefused(VoyadoSyncError):
    """A schema operation was refused to protect the interactions stored in Voyado.

    Nothing was changed in Voyado. The message names the schema id and what to do instead.
    """


class ApiError(VoyadoSyncError):
    """Voyado answered with an error. ``status`` is the HTTP status (None: no answer)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        body: str | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.body = body
        super().__init__(message)


class RetryableApiError(ApiError):
    """A transient answer (429, 502/503/504, network): the same request may succeed later."""


class RequestRefused(ApiError):
    """Voyado refused one request permanently (a 4xx other than 401/403), such as creating a
    schema that breaks one of its rules or limits. Only the work that needed it stops."""


class ListingUnavailable(RetryableApiError):
    """A contact's interactions could not be listed, so whether a row is stored is unknown.

    Raised by ``VoyadoClient.list_interactions`` / ``find_delivered`` for every failure other
    than 401/403 (``FatalApiError``) and 404 ``ContactNotFound`` (``ContactGone``): 5xx,
    429 or network trouble past the retry budget, a 404 without Voyado's error code, an
    answer that is not JSON or of a shape not recognised, paging that does not end, an echo the
    matcher cannot decide on. The row must stay in flight: neither resent nor given up.

    ``cause`` is a short machine-readable word: ``"server-error"`` (5xx, past the retry
    budget), ``"throttled"`` (429s past the throttle budget), ``"network"`` (no answer, past
    the budget), ``"not-voyado-404"``, ``"http-error"`` (another 4xx), ``"not-json"``,
    ``"unknown-shape"``, ``"too-many-pages"``, ``"repeated-page"``, ``"undecidable-echo"``;
    ``observed_status`` is the HTTP status seen, if any. ``status`` is the same except for a
    404 without Voyado's code, where it is None: that 404 is not Voyado's answer, and callers
    that read ``status == 404`` as "the contact is gone" must not take it for one.
    """

    def __init__(
        self,
        message: str,
        *,
        cause: str,
        observed_status: int | None = None,
        error_code: str | None = None,
        body: str | None = None,
    ) -> None:
        self.cause = cause
        self.observed_status = observed_status
        status = None if observed_status == 404 else observed_status
        super().__init__(message, status=status, error_code=error_code, body=body)


class ClientStopped(RetryableApiError):
    """``VoyadoClient.stop()`` was called: no new request starts and waits end at once.

    ``may_have_left`` is true when a request was abandoned after it may have reached Voyado
    (its outcome is unknown), false when it was stopped before it was sent.
    """

    def __init__(self, message: str, *, may_have_left: bool = False) -> None:
        self.may_have_left = may_have_left
        super().__init__(message)


class ContactGone(ApiError):
    """The listing answered 404 with Voyado's ``ContactNotFound``: the contact does not exist
    (merged or deleted), so nothing can be stored under it any more. ``status`` is 404 and
    ``error_code`` ``"ContactNotFound"``."""


class FatalApiError(ApiError):
    """An answer that makes every further request pointless (401 wrong key, 403 no access,
    a redirect away from the API): the whole run stops."""


class RowRejected(VoyadoSyncError):
    """One row cannot be sent as it is; the reason names the property, rule and value."""

    def __init__(self, reason: str, *, error_code: str | None = None) -> None:
        self.reason = reason
        self.error_code = error_code
        super().__init__(reason)


def error_kind(exc: BaseException) -> str:
    """The class name a ``--json`` error envelope reports as ``kind``."""
    return type(exc).__name__ if isinstance(exc, VoyadoSyncError) else "UnexpectedError"
