"""The HTTP client for Voyado Engage API v3: headers, pacing, retries, exactly-once POSTs.

Every request goes through one path (``_send``): a concurrency slot, a token from the shared
``RateLimiter``, the three headers Voyado requires, and a count in ``RequestStats``. On top of
it, two retry disciplines:

* idempotent requests (GET, DELETE) are simply repeated on 429, 5xx and network errors;
* ``POST /api/v3/interactions`` is never repeated blindly. Voyado has no idempotency key, so a
  POST whose outcome is unknown (5xx, read timeout, dropped connection) is followed by a listing
  of the contact's interactions; it is resent only when the interaction is not there.

The API key lives in a request header only: never in a URL, a message, a repr or the stats.
It and any proxy credentials are replaced by ``***`` in every text taken from a response, in
every encoding a server may echo them (``redact.py``).

Bounded waits: every exchange has a total ``deadline`` (connect, send and the complete
answer), a ``Retry-After`` is capped (``pacing.sane_retry_after``), and ``stop()`` ends every
wait and exchange at once, so a stopped run's senders return within moments.

What is not Voyado's answer is not taken for one: a 2xx to a POST without an interaction id
is an unknown outcome (``Failed(maybe_delivered=True)``), and a listing is trusted only when
it is JSON of a known shape read to its last page, its 404 only with ``ContactNotFound``
(``ContactGone``); anything else is ``ListingUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random as _random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from voyado_sync import __version__
from voyado_sync.exceptions import (
    ApiError,
    ClientStopped,
    ContactGone,
    FatalApiError,
    ListingUnavailable,
    RequestRefused,
    RetryableApiError,
)
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
    RequestKind,
    RequestStats,
    SchemaSummary,
)
from voyado_sync.voyado.pacing import RateLimiter, sane_retry_after
from voyado_sync.voyado.reconcile import UndecidableEcho, find_match
from voyado_sync.voyado.redact import Redactor, proxy_secrets
from voyado_sync.voyado.transport import BEFORE_WRITE, Http11Transport
from voyado_sync.voyado.window import DEFAULT_CAP, ConcurrencyWindow

__all__ = ["LOOKUP_KEYS", "RetryPolicy", "VoyadoClient"]

#: Keys ``lookup_contact`` accepts. ``any`` is left out on purpose: Voyado stops at the first
#: attribute the value is valid for, even without a match, so it can miss a contact.
LOOKUP_KEYS = frozenset({"email", "mobilePhone", "customKey", "socialSecurityNumber"})

_INTERACTIONS = "/api/v3/interactions"
_SCHEMAS = "/api/v3/interactionschemas"
_CONTACT_ID = "/api/v3/contacts/id"
_CONTACT_CHANGES = "/api/v3/contacts/changes"

# The request may have reached Voyado and been stored: the outcome of a POST is unknown.
_UNKNOWN_OUTCOME_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
)
# The request never left: resending cannot create a duplicate.
_NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ProxyError,  # the proxy refused the tunnel: nothing reached Voyado
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# An error code that no amount of retrying fixes, even though it comes with a 500.
_CONFIG_ERROR_CODES = frozenset({"InvalidSystemConfiguration"})
_MAX_BODY = 500
# How much of a response body is scanned for secrets and error details.
_SCAN = 64 * 1024
# Where _send leaves the time the limiter let a request go (Response.extensions).
_SENT_AT = "voyado_sync.sent_at"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request before giving up for this run.

    ``max_attempts`` bounds sends that fail with 5xx or network errors; 429s do not count
    against it (the request was not processed) but their pauses add up, and after
    ``throttle_max_wait`` seconds of them the request is given up. Back-off before attempt
    *n + 1* is drawn uniformly from ``[0, min(backoff_max, backoff_base * 2**(n-1))]``.
    """

    max_attempts: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    throttle_max_wait: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.throttle_max_wait < 0:
            raise ValueError("back-off and wait limits must not be negative")


@dataclass(frozen=True)
class _ErrorInfo:
    code: str | None
    message: str
    body: str


class _Secret:
    """Holds the API key so that no repr, vars() dump or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"


class _ThrottleBudgetExceeded(Exception):
    def __init__(self, waited: float) -> None:
        self.waited = waited


class VoyadoClient:
    """An async client for the parts of Voyado Engage API v3 that voyado-sync needs.

    Use it as an async context manager (or call ``aclose``). One client per run and API key:
    its ``limiter`` paces every request it sends, and ``stats`` counts them.

    ``rate`` is requests per second (ignored when a shared ``limiter`` is passed). The
    requests in flight follow the round trip (``window``); ``concurrency`` is their upper
    bound (default 128), exposed as ``max_in_flight``, and sizes the connection pool, whose
    connections are opened only as the window needs them; ``timeout`` applies to connect,
    read, write and pool waits alike, and ``deadline`` (default: ``timeout``) to each whole
    exchange from the moment it may leave, connect, send and the complete answer together, on
    either transport. ``stop()`` ends every wait and request at once. ``transport`` is for tests
    (``httpx.MockTransport``), as are ``sleep``, ``clock`` and ``random``, which drive every
    back-off and pause. ``max_list_pages`` bounds one listing (``ListingUnavailable`` past it).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        rate: float = 40.0,
        concurrency: int | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        user_agent: str = f"voyado-sync/{__version__}",
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        max_list_pages: int = 200,
        deadline: float | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url must be an http(s) URL such as https://acme.voyado.com, got {base_url!r}"
            )
        if not api_key or not api_key.strip():
            raise ValueError("api_key is empty")
        if concurrency is None:
            concurrency = DEFAULT_CAP
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_list_pages < 1:
            raise ValueError(f"max_list_pages must be at least 1, got {max_list_pages}")
        self.max_list_pages = max_list_pages
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        self.deadline = deadline if deadline is not None else timeout
        self._stopping = False
        self._scopes: set[asyncio.Timeout] = set()
        self.base_url = str(url).rstrip("/")
        self._key = _Secret(api_key.strip())
        # The key, and the credentials of any proxy httpx may use, as a server may echo them.
        self._redactor = Redactor([self._key.get(), *proxy_secrets()])
        self.retry = retry
        self.user_agent = user_agent
        self.concurrency = concurrency
        self._sleep = sleep
        self._random = random
        self.limiter = limiter or RateLimiter(
            rate,
            clock=clock,
            sleep=sleep,
            backoff_base=retry.backoff_base,
            backoff_max=retry.backoff_max,
            random=random,
        )
        self.stats = RequestStats()
        pacer = self.limiter
        # The window follows the rate in force: it shrinks with the limiter after a 429.
        self.window = ConcurrencyWindow(
            rate=lambda: pacer.current_rate, cap=concurrency, clock=clock, sleep=sleep
        )
        self._clock = clock
        if transport is None and not _proxied(url):
            transport = Http11Transport(max_connections=concurrency)
        # Our transport takes the token once the connection is ready; others get it before.
        self._token_on_write = isinstance(transport, Http11Transport)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
            follow_redirects=False,
        )
        self._urls: dict[str, httpx.URL] = {}

    @property
    def max_in_flight(self) -> int:
        """The most requests this client has in flight at once: size callers' gates to it."""
        return self.window.cap

    def __repr__(self) -> str:
        return (
            f"VoyadoClient(base_url={self.base_url!r}, rate={self.limiter.rate:g}, "
            f"concurrency={self.concurrency})"
        )

    async def __aenter__(self) -> VoyadoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ---------------------------------------------------------------- interaction schemas

    async def list_schemas(self) -> list[SchemaSummary]:
        """Every interaction schema of the environment (``GET /api/v3/interactionschemas``)."""
        resp = await self._idempotent("schema", "GET", _SCHEMAS, what="list interaction schemas")
        if resp.status_code >= 400:
            raise self._api_error(resp, "list interaction schemas")
        data = self._json(resp, "list interaction schemas")
        if isinstance(data, Mapping) and isinstance(data.get("items"), list):
            data = data["items"]
        if not isinstance(data, list):
            raise ApiError(
                "Voyado's list of interaction schemas is not a JSON array",
                status=resp.status_code,
                body=self._keep(resp.text),
            )
        out = []
        for entry in data:
            if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
                name = entry.get("displayName")
                out.append(SchemaSummary(entry["id"], name if isinstance(name, str) else ""))
        return out

    async def get_schema(self, schema_id: str) -> dict[str, Any] | None:
        """The schema ``{"id", "displayName", "jsonSchema", ...}``, or None when absent (404)."""
        what = f"read interaction schema {schema_id!r}"
        return await self._get_object("schema", _schema_path(schema_id), what)

    async def _get_object(self, kind: RequestKind, path: str, what: str) -> dict[str, Any] | None:
        """GET a JSON object; None on 404, ApiError for any other failure or another shape."""
        resp = await self._idempotent(kind, "GET", path, what=what)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300:
            raise self._api_error(resp, what)
        data = self._json(resp, what)
        if not isinstance(data, dict):
            raise ApiError(
                f"Could not {what}: the answer is not a JSON object",
                status=resp.status_code,
                body=self._keep(resp.text),
            )
        return data

    async def create_schema(self, body: dict[str, Any]) -> None:
        """Create an interaction schema (``{"id", "displayName", "jsonSchema"}``).

        Any 2xx is success. A 4xx raises ``RequestRefused`` carrying Voyado's status and error
        code (the schema breaks a rule or a limit: fix the model's meta and rerun). When the
        outcome is unknown (5xx, timeout) the schema is looked up before sending again, so a
        create that did land is not reported as a failure.
        """
        schema_id = str(body.get("id", ""))
        what = f"create interaction schema {schema_id!r}"
        attempts = 0
        throttled = 0.0
        while True:
            try:
                resp = await self._send("schema", "POST", _SCHEMAS, json_body=body)
            except httpx.TransportError as exc:
                attempts += 1
                if attempts >= self.retry.max_attempts:
                    raise self._network_error(exc, what, attempts) from exc
                await self._backoff(attempts)
                if not isinstance(exc, _NOT_SENT_ERRORS) and await self.get_schema(schema_id):
                    return
                self.stats.retries += 1
                continue
            status = resp.status_code
            if status == 429:
                throttled = self._throttle_or_raise(resp, throttled, what)
                continue
            self._raise_for_fatal(resp)
            if 200 <= status < 300:
                if not resp.content.strip() or _is_json(resp):
                    return
                if await self.get_schema(schema_id) is not None:
                    return
                # A 2xx page that is not JSON (a WAF's or portal's) is not Voyado's answer,
                # and the schema is not there: say so rather than send rows to nowhere.
                raise ApiError(
                    f"Could not {what}: the answer (HTTP {status}, {self._content_type(resp)}) "
                    "is not Voyado's, and the schema is not in Voyado",
                    status=status,
                    body=self._keep(resp.text),
                )
            if status >= 500:
                attempts += 1
                if attempts >= self.retry.max_attempts:
                    raise self._retryable_error(resp, what, attempts)
                await self._backoff(attempts)
                if await self.get_schema(schema_id):
                    return
                self.stats.retries += 1
                continue
            info = self._error_info(resp)
            raise RequestRefused(
                f"Voyado refused to {what} ({_describe(status, info)})",
                status=status,
                error_code=info.code,
                body=info.body,
            )

    async def delete_schema(self, schema_id: str) -> None:
        """Delete an interaction schema, and with it every interaction of that schema.

        A 404 counts as success: the schema is gone, maybe by an earlier attempt of this call.
        """
        what = f"delete interaction schema {schema_id!r}"
        resp = await self._idempotent("schema", "DELETE", _schema_path(schema_id), what=what)
        if resp.status_code == 404 or 200 <= resp.status_code < 300:
            return
        info = self._error_info(resp)
        raise RequestRefused(
            f"Voyado refused to {what} ({_describe(resp.status_code, info)})",
            status=resp.status_code,
            error_code=info.code,
            body=info.body,
        )

    # ----------------------------------------------------------------------- interactions

    async def deliver_interaction(
        self,
        body: dict[str, Any],
        *,
        claimed: set[str] | None = None,
        resend_unmatched: bool = True,
    ) -> DeliveryOutcome:
        """POST one interaction so that it is stored exactly once.

        * 2xx with an interaction id: ``Delivered(id)``. A 2xx without one is
          ``Failed(maybe_delivered=True)``, not sent again (see ``_not_voyados_answer``).
        * 429: pause (see ``RateLimiter``) and resend, which is safe as Voyado did not
          process it, without spending an attempt.
        * The request never left (connect error, pool timeout): back off and resend.
        * Unknown outcome (5xx, read/write timeout, dropped connection): back off, then list
          the contact's interactions of the schema; a match is ``Delivered(id,
          reconciled=True)`` and nothing is resent, otherwise resend.
        * Other 4xx: ``Rejected``, not retried. 401/403/407 raise ``FatalApiError``.
        * Attempts used up: ``Failed``, with ``maybe_delivered`` set when the last outcome
          could not be checked.

        ``claimed`` holds interaction ids already accounted to other rows; pass one set for a
        whole run. Every id this call delivers or reconciles is added to it, so two identical
        rows can never both claim the same stored interaction. Matching is precise only when
        the body has a ``createdDate`` (the engine always sets one).

        ``resend_unmatched=False``: an unknown outcome whose listing shows no match is not
        resent but returned as ``Failed(maybe_delivered=True)``, to be looked up again later.
        Voyado may list a new interaction seconds late, so a resend right after one look can
        duplicate it; pass False when the caller reconciles in-flight rows later (or when
        ``echo_problems`` says the matcher cannot recognise this Voyado's echoes).

        After ``stop()``: ``Failed``, with ``maybe_delivered`` set when a POST may have
        reached Voyado and was not checked (a request abandoned in flight, or a back-off
        after an unknown outcome cut short).
        """
        uncertain = [False]  # the last POST's outcome is unknown and unchecked
        try:
            return await self._deliver(
                body, set() if claimed is None else claimed, uncertain, resend_unmatched
            )
        except ClientStopped as exc:
            maybe = uncertain[0] or exc.may_have_left
            return Failed(
                "stopped before the interaction was delivered"
                + ("; it may have been stored, so it is left to be reconciled" if maybe else ""),
                maybe_delivered=maybe,
            )

    async def _deliver(
        self, body: dict[str, Any], claimed: set[str], uncertain: list[bool], resend: bool
    ) -> DeliveryOutcome:
        attempts = 0
        throttled = 0.0
        while True:
            unknown: str
            status: int | None = None
            code: str | None = None
            try:
                resp = await self._send("interaction_post", "POST", _INTERACTIONS, json_body=body)
            except _NOT_SENT_ERRORS as exc:
                attempts += 1
                reason = f"could not reach Voyado ({type(exc).__name__})"
                if attempts >= self.retry.max_attempts:
                    return Failed(f"{reason} after {attempts} attempts")
                await self._backoff(attempts)
                self.stats.retries += 1
                continue
            except httpx.TransportError as exc:
                unknown = f"no answer to the POST ({type(exc).__name__})"
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    interaction_id = _interaction_id(resp)
                    if not interaction_id:
                        return self._not_voyados_answer(resp)
                    claimed.add(interaction_id)
                    return Delivered(interaction_id)
                if status == 429:
                    try:
                        throttled = self._throttle(resp, throttled)
                    except _ThrottleBudgetExceeded as exc:
                        return Failed(
                            f"throttled by Voyado (429) for {exc.waited:.0f} s in total",
                            status=429,
                            error_code=self._error_info(resp).code,
                        )
                    continue
                self._raise_for_fatal(resp)
                info = self._error_info(resp)
                if status < 500:
                    return Rejected(status, info.code, info.message or f"HTTP {status}")
                code = info.code
                unknown = f"Voyado answered {_describe(status, info)}"

            # The outcome is unknown: Voyado may have stored the interaction. Look before
            # sending again, even after the last attempt, so a stored row is never reported
            # as failed (and sent again by the next run).
            attempts += 1
            uncertain[0] = True
            await self._backoff(attempts)
            if not _can_reconcile(body):
                return Failed(
                    f"{unknown}; cannot check whether it was stored (contactId or schemaId "
                    "missing)",
                    status=status,
                    error_code=code,
                    maybe_delivered=True,
                )
            try:
                found = await self.find_delivered(body, claimed=claimed)
            except FatalApiError:
                raise
            except ApiError as exc:
                return Failed(
                    f"{unknown}; checking whether it was stored failed too ({exc})",
                    status=status,
                    error_code=code,
                    maybe_delivered=True,
                )
            if found is not None:
                return Delivered(found, reconciled=True)
            if not resend:
                return Failed(
                    f"{unknown}; not in Voyado's listing yet, which may lag: left in flight to "
                    "be looked up again, not resent",
                    status=status,
                    error_code=code,
                    maybe_delivered=True,
                )
            uncertain[0] = False
            if attempts >= self.retry.max_attempts:
                return Failed(
                    f"{unknown} (after {attempts} attempts; not stored)",
                    status=status,
                    error_code=code,
                )
            self.stats.retries += 1

    def _not_voyados_answer(self, resp: httpx.Response) -> Failed:
        """A 2xx to a POST that carries no interaction id: an unknown outcome, kept in flight.

        Voyado answers a stored interaction with its id. A 2xx without one (``200 text/html``
        from a WAF or a captive portal, JSON without ``id``, a 204) is not Voyado's answer, so
        it proves nothing either way: a proxy may have passed the POST on and replaced the
        answer (the interaction is stored), or blocked it (nothing is stored).

        * Counting it as delivered could lose the row (the WAF blocked it) and would put an
          empty interaction id in the ledger.
        * Resending at once could store it twice (the proxy passed it on).
        * Listing now, as after a 5xx, would ask the same middlebox, whose answer is no more
          Voyado's than this one.

        So the row is ``Failed(maybe_delivered=True)``: it stays in flight and is reconciled
        (``find_delivered``) before it is ever sent again, which can neither lose nor
        duplicate it.
        """
        return Failed(
            f"Voyado's answer to the POST (HTTP {resp.status_code}, {self._content_type(resp)}) "
            "carries no interaction id: not Voyado's answer (a proxy, WAF or portal?); "
            "the interaction may or may not be stored, so it is left to be reconciled",
            status=resp.status_code,
            maybe_delivered=True,
        )

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        """Voyado's stored view of one interaction (``GET /api/v3/interactions/{id}``):
        ``{"id", "contactId", "schemaId", "createdDate", "payload", ...}``, or None on 404.

        For the echo self-check: after a first delivery, compare the body sent with this echo
        (``reconcile.echo_problems``) to learn whether the matcher recognises how this Voyado
        echoes what it stored. Raises ``ApiError`` when the answer is not a JSON object or an
        error other than 404 (``RetryableApiError`` past the retry budget, ``FatalApiError``
        for 401/403/407), ``ClientStopped`` after ``stop()``.
        """
        if not interaction_id or not interaction_id.strip():
            raise ValueError("interaction_id is empty")
        what = "read an interaction"
        path = f"{_INTERACTIONS}/{quote(interaction_id.strip(), safe='')}"
        return await self._get_object("interaction_get", path, what)

    async def delete_interaction(self, interaction_id: str) -> DeleteOutcome:
        """DELETE one interaction so that it is gone, whatever answers get lost.

        * 2xx: ``Deleted()``; 404: ``Deleted(already_gone=True)`` (an earlier attempt, or
          someone else, deleted it).
        * 429: pause and resend without spending an attempt; the request never left: back off
          and resend.
        * Unknown outcome (5xx, read/write timeout, dropped connection): back off, then ask
          Voyado (``GET /api/v3/interactions/{id}``): 404 is ``Deleted(already_gone=True)``,
          still there is a resend of the DELETE (an attempt).
        * Other 4xx: ``Rejected``. 401/403/407 raise ``FatalApiError``.
        * Attempts used up, or the GET failed too: ``Failed``, with ``maybe_delivered`` set
          when the last DELETE may have been carried out: the caller keeps the row deleting
          and tries again later (a DELETE is safe to repeat).

        After ``stop()``: ``Failed(maybe_delivered=...)``, never an exception.
        """
        if not interaction_id or not interaction_id.strip():
            raise ValueError("interaction_id is empty")
        path = f"{_INTERACTIONS}/{quote(interaction_id.strip(), safe='')}"
        uncertain = [False]
        try:
            return await self._delete(interaction_id.strip(), path, uncertain)
        except ClientStopped as exc:
            maybe = uncertain[0] or exc.may_have_left
            return Failed(
                "stopped before Voyado confirmed the DELETE"
                + ("; it may have been carried out, so it is tried again later" if maybe else ""),
                maybe_delivered=maybe,
            )

    async def _delete(self, interaction_id: str, path: str, uncertain: list[bool]) -> DeleteOutcome:
        attempts = 0
        throttled = 0.0
        while True:
            status: int | None = None
            code: str | None = None
            try:
                resp = await self._send("interaction_delete", "DELETE", path)
            except _NOT_SENT_ERRORS as exc:
                attempts += 1
                if attempts >= self.retry.max_attempts:
                    return Failed(
                        f"could not reach Voyado ({type(exc).__name__}) after {attempts} attempts",
                        maybe_delivered=uncertain[0],
                    )
                await self._backoff(attempts)
                self.stats.retries += 1
                continue
            except httpx.TransportError as exc:
                unknown = f"no answer to the DELETE ({type(exc).__name__})"
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return Deleted()
                if status == 404:
                    return Deleted(already_gone=True)
                if status == 429:
                    try:
                        throttled = self._throttle(resp, throttled)
                    except _ThrottleBudgetExceeded as exc:
                        return Failed(
                            f"throttled by Voyado (429) for {exc.waited:.0f} s in total",
                            status=429,
                            error_code=self._error_info(resp).code,
                            maybe_delivered=uncertain[0],
                        )
                    continue
                self._raise_for_fatal(resp)
                info = self._error_info(resp)
                if status < 500:
                    return Rejected(status, info.code, info.message or f"HTTP {status}")
                code = info.code
                unknown = f"Voyado answered {_describe(status, info)}"
            # Voyado may have deleted it: ask before deleting again (a repeat is harmless,
            # but its 404 is the only proof that it is gone).
            attempts += 1
            uncertain[0] = True
            await self._backoff(attempts)
            try:
                still = await self.get_interaction(interaction_id)
            except FatalApiError:
                raise
            except ApiError as exc:
                return Failed(
                    f"{unknown}; checking whether it is gone failed too ({exc})",
                    status=status,
                    error_code=code,
                    maybe_delivered=True,
                )
            if still is None:
                return Deleted(already_gone=True)
            uncertain[0] = False
            if attempts >= self.retry.max_attempts:
                return Failed(
                    f"{unknown} (after {attempts} attempts; still in Voyado)",
                    status=status,
                    error_code=code,
                )
            self.stats.retries += 1

    async def find_delivered(self, body: Mapping[str, Any], *, claimed: set[str]) -> str | None:
        """The id of a stored interaction matching ``body`` and not in ``claimed``, or None.

        For rows whose POST outcome is unknown (e.g. left in flight by a crashed run). The id
        found is added to ``claimed``; an id already in ``claimed`` is never returned. Lists
        afresh on every call. None means no listed interaction can be this row's.

        Raises:
            ContactGone: 404 ``ContactNotFound``: the contact does not exist any more.
            ListingUnavailable: the outcome cannot be checked now (see ``list_interactions``;
                also ``cause="undecidable-echo"`` when a listed interaction could be this
                row's but its ``createdDate`` cannot be compared): keep the row in flight,
                neither resent nor given up.
            ClientStopped: after ``stop()``; keep the row in flight.
            FatalApiError: 401/403/407.
        """
        found = await self.find_delivered_many([body], claimed=claimed)
        return found[0]

    async def find_delivered_many(
        self, bodies: Sequence[Mapping[str, Any]], *, claimed: set[str]
    ) -> list[str | None]:
        """``find_delivered`` for several bodies, listing each (contactId, schemaId) once.

        The listings are cached for this call only: a later resend changes them.
        """
        listings: dict[tuple[str, str], list[dict[str, Any]]] = {}
        out: list[str | None] = []
        for body in bodies:
            if not _can_reconcile(body):
                raise ValueError("cannot reconcile an interaction without contactId and schemaId")
            key = (str(body["contactId"]), str(body["schemaId"]))
            if key not in listings:
                listings[key] = await self.list_interactions(*key)
            try:
                found = find_match(listings[key], body, exclude_ids=claimed)
            except UndecidableEcho as exc:
                raise ListingUnavailable(
                    f"Could not check Voyado's interactions: {exc}", cause="undecidable-echo"
                ) from None
            if found is not None:
                claimed.add(found)
                self.stats.reconciled += 1
            out.append(found)
        return out

    async def list_interactions(self, contact_id: str, schema_id: str) -> list[dict[str, Any]]:
        """Every interaction of one contact and schema, in the order Voyado gives them.

        Reads every shape seen for ``GET /api/v3/interactions?contactId=&schemaId=``: a bare
        array; ``{"items": [...]}`` or ``{"data": [...]}`` (either order: nothing here assumes
        newest or oldest first); the next page from ``links`` (``rel: next``, or a link with a
        ``continuation`` token), from ``links: {"next": ...}``, or from ``nextPage`` /
        ``next`` / ``nextLink`` / ``@odata.nextLink`` / ``continuationToken`` (a URL or path is
        followed on our own base URL, a bare token is sent back as ``continuation``, a number
        as ``page``). No page size is assumed: paging ends when no next page is named.

        Raises:
            ContactGone: 404 with Voyado's ``ContactNotFound``: the contact does not exist.
            ListingUnavailable: anything else that keeps us from reading the whole listing
                (5xx/429/network past the retry budget, a 404 without Voyado's code, not JSON,
                an unknown shape, more than ``max_list_pages`` pages, a page repeated).
            FatalApiError: 401/403/407 or a redirect.
        """
        what = "list interactions"
        params: dict[str, str] = {"contactId": contact_id, "schemaId": schema_id}
        path = _INTERACTIONS
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(self.max_list_pages):
            try:
                resp = await self._idempotent(
                    "interaction_list", "GET", path, params=params, what=what
                )
            except ClientStopped:
                raise
            except RetryableApiError as exc:
                cause = (
                    "network"
                    if exc.status is None
                    else "throttled"
                    if exc.status == 429
                    else "server-error"
                )
                raise ListingUnavailable(
                    f"Could not check Voyado's interactions: {exc}",
                    cause=cause,
                    observed_status=exc.status,
                    error_code=exc.error_code,
                    body=exc.body,
                ) from exc
            status = resp.status_code
            if status >= 300:
                raise self._listing_error(resp)
            try:
                data = json.loads(resp.content) if resp.content.strip() else _NO_JSON
            except ValueError:
                data = _NO_JSON
            if data is _NO_JSON:
                raise ListingUnavailable(
                    f"Could not check Voyado's interactions: the answer (HTTP {status}, "
                    f"{self._content_type(resp)}) is not JSON, so not Voyado's",
                    cause="not-json",
                    observed_status=status,
                    body=self._keep(resp.text),
                )
            page = _listing_page(data)
            if page is None:
                raise ListingUnavailable(
                    "Could not check Voyado's interactions: the listing has a shape not "
                    "recognised (no items, data or bare array)",
                    cause="unknown-shape",
                    observed_status=status,
                    body=self._keep(resp.text),
                )
            items.extend(page)
            nxt = _next_page(data, contact_id, schema_id)
            if nxt is None:
                return items
            path, params = nxt
            token = f"{path}?{sorted(params.items())}"
            if token in seen:
                raise ListingUnavailable(
                    "Could not check Voyado's interactions: Voyado named a page it had "
                    "already given (it repeated a continuation token)",
                    cause="repeated-page",
                    observed_status=status,
                )
            seen.add(token)
        raise ListingUnavailable(
            f"Could not check Voyado's interactions: more than {self.max_list_pages} pages "
            f"for contact {contact_id} and schema {schema_id}",
            cause="too-many-pages",
        )

    def _listing_error(self, resp: httpx.Response) -> ApiError:
        status = resp.status_code
        info = self._error_info(resp)
        if status == 404 and (info.code or "").lower() == "contactnotfound":
            return ContactGone(
                f"Voyado has no contact with that id (404 ContactNotFound): {info.message}",
                status=404,
                error_code="ContactNotFound",
                body=info.body,
            )
        if status == 404:
            return ListingUnavailable(
                "Could not check Voyado's interactions: a 404 without Voyado's ContactNotFound "
                f"code ({_describe(status, info)}; {self._content_type(resp)}) is not proof "
                "that the contact is gone",
                cause="not-voyado-404",
                observed_status=404,
                error_code=info.code,
                body=info.body,
            )
        return ListingUnavailable(
            f"Could not check Voyado's interactions: Voyado answered {_describe(status, info)}",
            cause="server-error" if status >= 500 else "http-error",
            observed_status=status,
            error_code=info.code,
            body=info.body,
        )

    def _content_type(self, resp: httpx.Response) -> str:
        kind = resp.headers.get("Content-Type", "no Content-Type").split(";")[0].strip()
        return self._redact(kind)[:80]

    # --------------------------------------------------------------------------- contacts

    async def contact_changes(self, change_type: str, since: str, until: str) -> set[str] | None:
        """Ids of contacts created, updated or deleted (``change_type``) between two ISO
        instants (``GET /api/v3/contacts/changes``), lower-cased; None when this tenant does
        not answer it usably (not every tenant has it; over 250,000 ids it answers 400)."""
        what = f"list contacts {change_type.lower()} since {since}"
        try:
            resp = await self._idempotent(
                "contact_changes",
                "GET",
                _CONTACT_CHANGES,
                params={"changeType": change_type, "fromDate": since, "toDate": until},
                what=what,
            )
        except RetryableApiError:
            return None
        if resp.status_code != 200:
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
            return None
        return {i.lower() for i in data}

    async def lookup_contact(self, key: str, value: str) -> LookupOutcome:
        """Find a contact's id by ``email``, ``mobilePhone``, ``customKey`` or
        ``socialSecurityNumber`` (``GET /api/v3/contacts/id?<key>=<value>``).

        A 500 ``InvalidSystemConfiguration`` (e.g. no custom key set up in the tenant) raises
        ``FatalApiError``: every lookup by that key would fail the same way.
        """
        if key not in LOOKUP_KEYS:
            raise ValueError(f"lookup key must be one of {sorted(LOOKUP_KEYS)}, got {key!r}")
        what = f"look up a contact by {key}"
        try:
            resp = await self._idempotent(
                "contact_lookup", "GET", _CONTACT_ID, params={key: value}, what=what
            )
        except RetryableApiError as exc:
            return Failed(str(exc), status=exc.status, error_code=exc.error_code)
        status = resp.status_code
        if 200 <= status < 300:
            contact_id = _contact_id(resp)
            if contact_id:
                return ContactFound(contact_id)
            return Failed("Voyado's answer to a contact lookup holds no id", status=status)
        info = self._error_info(resp)
        message = info.message or f"HTTP {status}"
        if status == 404:
            return ContactNotFound(message)
        if status == 409:
            return ContactAmbiguous(tuple(self._redact(x) for x in _ambiguous_ids(resp)), message)
        if status >= 500 and info.code in _CONFIG_ERROR_CODES:
            raise FatalApiError(
                f"Voyado cannot {what}: {info.code} (the tenant is not set up for it): {message}",
                status=status,
                error_code=info.code,
                body=info.body,
            )
        if 400 <= status < 500:
            return ContactInvalid(info.code or f"HTTP{status}", message)
        return Failed(f"unexpected answer to {what}: {_describe(status, info)}", status=status)

    # ---------------------------------------------------------------------------- plumbing

    def _url(self, path: str) -> httpx.URL:
        # Parsed once per path: httpx's URL parsing is a visible share of a request's CPU.
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) > 1000:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(self.base_url + path)
        return url

    def _headers(self) -> dict[str, str]:
        return {
            "apikey": self._key.get(),
            "User-Agent": self.user_agent,
            # On every request, GET and DELETE too: without it Engage answers 500.
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    # ------------------------------------------------------------------------- stopping

    def stop(self) -> None:
        """Stop trying: from now on no request starts, and every wait ends at once.

        Waits for a connection slot, for a token or a 429 pause of the limiter, and back-off
        sleeps end with ``ClientStopped``; requests in flight are abandoned at once (their
        connection closed). ``deliver_interaction`` then returns ``Failed`` (with
        ``maybe_delivered=True`` when a POST may have reached Voyado); the other methods
        raise ``ClientStopped`` (``lookup_contact`` returns ``Failed``). Idempotent. Call it
        from the event loop's thread (a ``loop.add_signal_handler`` callback is); from another
        thread use ``loop.call_soon_threadsafe(client.stop)``. Meant for SIGTERM and Ctrl-C:
        whatever the server does, the client's calls return within moments.
        """
        self._stopping = True
        if not self._scopes:
            return
        now = asyncio.get_running_loop().time()
        for scope in list(self._scopes):
            scope.reschedule(now)

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopping

    @asynccontextmanager
    async def _stoppable(
        self, seconds: float | None, *, may_have_left: bool = False
    ) -> AsyncIterator[asyncio.Timeout]:
        """A scope that ``stop()`` ends at once, and that ends by itself after ``seconds``
        (the yielded timeout may be rescheduled).

        Ended by ``stop()``: ``ClientStopped``. Ended by time: ``TimeoutError``.
        """
        if self._stopping:
            raise ClientStopped("the client was stopped", may_have_left=False)
        try:
            async with asyncio.timeout(seconds) as scope:
                self._scopes.add(scope)
                try:
                    yield scope
                finally:
                    self._scopes.discard(scope)
        except TimeoutError:
            if self._stopping:
                raise ClientStopped("the client was stopped", may_have_left=may_have_left) from None
            raise

    # ---------------------------------------------------------------------------- sending

    async def _send(
        self,
        kind: RequestKind,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One exchange: a slot, a token, the request, within ``deadline`` seconds in all.

        Transport errors propagate; a request that has no complete answer by its deadline
        raises ``httpx.ReadTimeout`` (it may have reached Voyado). ``ClientStopped`` after
        ``stop()``.
        """
        content = None if json_body is None else _encode(json_body)
        loop = asyncio.get_running_loop()
        # Take the slot first, then the token: a token spent while waiting for a slot would
        # let requests leave in a clump when slots free up. On the project's transport the
        # token is taken once a connection is ready (BEFORE_WRITE), so that requests waiting
        # for a new connection do not leave bunched.
        async with contextlib.AsyncExitStack() as stack:
            async with self._stoppable(None):
                slot = await stack.enter_async_context(self.window.slot())
            granted: list[float] = []
            try:
                async with self._stoppable(None, may_have_left=True) as scope:

                    async def take_token() -> None:
                        granted.append(await self.limiter.acquire())
                        slot.sent(granted[0])
                        # The deadline runs from when the request may leave, not through a
                        # 429 pause it waited out for its token.
                        scope.reschedule(loop.time() + self.deadline)

                    extensions = {BEFORE_WRITE: take_token} if self._token_on_write else None
                    if extensions is None:
                        await take_token()
                    resp = await self._http.request(
                        method,
                        self._url(path),
                        params=params,
                        content=content,
                        headers=self._headers(),
                        extensions=extensions,
                    )
            except TimeoutError:
                self.stats.record(kind, "network")
                # httpx's own transport times each read, not the whole answer: a response
                # dripped one byte at a time would outlive any timeout. This is the whole
                # exchange's.
                raise httpx.ReadTimeout(
                    f"no complete answer within the request's deadline ({self.deadline:g} s)"
                ) from None
            except ClientStopped as exc:
                self.stats.record(kind, "network")
                if not granted:  # stopped while waiting for its token: it never left
                    raise ClientStopped(str(exc), may_have_left=False) from None
                raise
            except httpx.TransportError:
                self.stats.record(kind, "network")
                raise
            slot.answered(self._clock())
            sent_at = granted[0]
        self.stats.record(kind, resp.status_code)
        resp.extensions[_SENT_AT] = sent_at  # for the limiter, should this be a 429
        return resp

    async def _idempotent(
        self,
        kind: RequestKind,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request that is safe to repeat until it gets a non-retryable answer.

        Returns any 2xx/3xx/4xx answer other than 401/403/429 (those raise or retry), and a
        5xx carrying a configuration error code; raises ``RetryableApiError`` when the
        attempts or the throttle budget are used up.
        """
        attempts = 0
        throttled = 0.0
        while True:
            try:
                resp = await self._send(kind, method, path, params=params)
            except httpx.TransportError as exc:
                attempts += 1
                if attempts >= self.retry.max_attempts:
                    raise self._network_error(exc, what, attempts) from exc
                await self._backoff(attempts)
                self.stats.retries += 1
                continue
            if resp.status_code == 429:
                throttled = self._throttle_or_raise(resp, throttled, what)
                continue
            self._raise_for_fatal(resp)
            if resp.status_code >= 500:
                if self._error_info(resp).code in _CONFIG_ERROR_CODES:
                    return resp
                attempts += 1
                if attempts >= self.retry.max_attempts:
                    raise self._retryable_error(resp, what, attempts)
                await self._backoff(attempts)
                self.stats.retries += 1
                continue
            return resp

    async def _backoff(self, attempt: int) -> None:
        # Full jitter: concurrent senders that failed together do not come back together.
        ceiling = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1))
        async with self._stoppable(None):
            await self._sleep(self._random() * ceiling)

    def _throttle(self, resp: httpx.Response, throttled: float) -> float:
        """Apply a 429 to the limiter; return the request's total throttle wait so far."""
        # Capped, and ignored when absurd, by the limiter too (shared limiters included).
        retry_after = sane_retry_after(_retry_after(resp.headers.get("Retry-After")))
        if retry_after is not None:
            # A Retry-After beyond our whole budget would stall every sender for nothing.
            retry_after = min(retry_after, self.retry.throttle_max_wait)
        pause = self.limiter.on_throttled(retry_after, resp.extensions.get(_SENT_AT))
        self.stats.throttle_wait += pause
        total = throttled + pause
        if total > self.retry.throttle_max_wait:
            raise _ThrottleBudgetExceeded(total)
        self.stats.retries += 1
        return total

    def _throttle_or_raise(self, resp: httpx.Response, throttled: float, what: str) -> float:
        try:
            return self._throttle(resp, throttled)
        except _ThrottleBudgetExceeded as exc:
            info = self._error_info(resp)
            raise RetryableApiError(
                f"Could not {what}: throttled by Voyado (429) for {exc.waited:.0f} s in total",
                status=429,
                error_code=info.code,
                body=info.body,
            ) from None

    def _raise_for_fatal(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status not in (401, 403, 407) and not 300 <= status < 400:
            return
        info = self._error_info(resp)
        if status == 407:
            text = (
                "the HTTP proxy refused its credentials (407 Proxy Authentication Required): "
                "check the user and password in HTTPS_PROXY / HTTP_PROXY"
            )
        elif status == 401:
            text = "Voyado rejected the API key (401): check VOYADO_API_KEY"
        elif status == 403:
            text = (
                "Voyado refused access (403): the key lacks permission, the IP is not "
                "allow-listed, or the interactions add-on (Loyalty and Retention) is not licensed"
            )
        else:
            location = self._redact(resp.headers.get("Location", "?"))
            text = f"Voyado answered with a redirect ({status}) to {location}: check the base URL"
        _fatal(text, info, status)

    def _api_error(self, resp: httpx.Response, what: str) -> ApiError:
        info = self._error_info(resp)
        return ApiError(
            f"Could not {what}: Voyado answered {_describe(resp.status_code, info)}",
            status=resp.status_code,
            error_code=info.code,
            body=info.body,
        )

    def _retryable_error(self, resp: httpx.Response, what: str, attempts: int) -> RetryableApiError:
        info = self._error_info(resp)
        return RetryableApiError(
            f"Could not {what}: Voyado answered {_describe(resp.status_code, info)} "
            f"{attempts} times",
            status=resp.status_code,
            error_code=info.code,
            body=info.body,
        )

    def _network_error(
        self, exc: httpx.TransportError, what: str, attempts: int
    ) -> RetryableApiError:
        detail = self._redact(str(exc)) or type(exc).__name__
        return RetryableApiError(
            f"Could not {what}: network error after {attempts} attempts "
            f"({type(exc).__name__}: {detail})"
        )

    def _error_info(self, resp: httpx.Response) -> _ErrorInfo:
        """Voyado's error code and message, read defensively from a body of unknown shape."""
        # Only the start of a huge page is read: what is kept is 500 characters of it.
        raw = resp.text[:_SCAN]
        # Parsed before redaction, so an escaped key cannot break the JSON; every string taken
        # from it is redacted below in its decoded form.
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = None
        text = self._redact(raw)
        code: str | None = None
        message = ""
        if isinstance(data, Mapping):
            for key in ("errorCode", "code", "error", "title"):
                value = data.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                    code = str(value)
                    break
            for key in ("message", "detail", "errorMessage"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    message = value
                    break
            if not message and code is not None:
                message = code
        elif isinstance(data, str):
            message = data
        elif text.strip():
            message = text.strip()
        if code is not None:
            code = self._redact(code)[:200]
        return _ErrorInfo(code, self._redact(message)[:_MAX_BODY], text[:_MAX_BODY])

    def _redact(self, text: str) -> str:
        """``text`` with the API key and proxy credentials masked, in every encoding."""
        return self._redactor(text)

    def _keep(self, text: str) -> str:
        # Redacted before it is cut to size, so no cut can leave part of a secret.
        return self._redact(text[:_SCAN])[:_MAX_BODY]

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise ApiError(
                f"Could not {what}: Voyado's answer is not JSON",
                status=resp.status_code,
                body=self._keep(resp.text),
            ) from None


def _fatal(text: str, info: _ErrorInfo, status: int) -> NoReturn:
    if info.code:
        text = f"{text} [{info.code}]"
    raise FatalApiError(text, status=status, error_code=info.code, body=info.body)


def _describe(status: int, info: _ErrorInfo) -> str:
    parts = [f"HTTP {status}"]
    if info.code:
        parts.append(info.code)
    if info.message and info.message != info.code:
        parts.append(info.message[:200])
    return ": ".join(parts)


def _proxied(url: httpx.URL) -> bool:
    """Whether a proxy environment variable applies to ``url`` (as httpx reads them)."""
    import urllib.request  # 40 ms of imports, paid only when a client is made

    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


def _encode(body: Any) -> bytes:
    # allow_nan=False: NaN is not JSON, and Voyado would drop such a row silently.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _schema_path(schema_id: str) -> str:
    return f"{_SCHEMAS}/{quote(schema_id, safe='')}"


def _can_reconcile(body: Mapping[str, Any]) -> bool:
    return bool(body.get("contactId")) and bool(body.get("schemaId"))


def _interaction_id(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return ""
    if isinstance(data, Mapping):
        for key in ("id", "interactionId"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return ""


def _is_json(resp: httpx.Response) -> bool:
    try:
        json.loads(resp.content)
    except ValueError:
        return False
    return True


# What a contact id can look like (a GUID in practice): never a page's text.
_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _contact_id(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        # Tolerate a bare, unquoted id, but not a one-word HTML page.
        if "html" in resp.headers.get("Content-Type", "").lower():
            return ""
        data = resp.text
    value: Any = data
    if isinstance(data, Mapping):
        value = next(
            (data[k] for k in ("contactId", "id") if isinstance(data.get(k), str) and data[k]),
            "",
        )
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value if _ID_SHAPE.fullmatch(value) else ""


def _ambiguous_ids(resp: httpx.Response) -> tuple[str, ...]:
    try:
        data = resp.json()
    except ValueError:
        return ()
    if isinstance(data, Mapping):
        preferred = data.get("multipleMatchesFound")
        if isinstance(preferred, list):
            return tuple(x for x in preferred if isinstance(x, str))
        for value in data.values():
            if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
                return tuple(value)
    if isinstance(data, list):
        return tuple(x for x in data if isinstance(x, str))
    return ()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_ITEM_KEYS = ("items", "data", "value", "interactions", "results")
_NEXT_KEYS = ("nextPage", "next", "nextLink", "@odata.nextLink", "continuationToken")
_NO_JSON = object()


def _listing_page(data: Any) -> list[dict[str, Any]] | None:
    """The interactions on one listing page, or None when the shape is not one we know."""
    page: Any
    if isinstance(data, list):
        page = data
    elif isinstance(data, Mapping):
        key = next((k for k in _ITEM_KEYS if k in data), None)
        if key is None:
            return None
        # .NET serialisers write an empty collection as null.
        page = data[key] if data[key] is not None else []
    else:
        return None
    if not isinstance(page, list):
        return None
    return [x for x in page if isinstance(x, dict)]


def _next_page(data: Any, contact_id: str, schema_id: str) -> tuple[str, dict[str, str]] | None:
    """Path and params of the next listing page, or None on the last page.

    Only the path and query are taken from a link: the request goes to our own base URL, so
    the API key is never sent to a host named in a response.
    """
    if not isinstance(data, Mapping):
        return None
    links = data.get("links")
    target: Any = None
    if isinstance(links, list):
        target = _next_link(links)
    elif isinstance(links, Mapping):
        target = links.get("next")
    if target is None:
        target = next((data[k] for k in _NEXT_KEYS if data.get(k) not in (None, "")), None)
    if isinstance(target, Mapping):
        target = target.get("href")
    if target is None or target is False or target == "":
        return None
    params: dict[str, str]
    if isinstance(target, bool):
        return None
    if isinstance(target, int):
        params, path = {"page": str(target)}, _INTERACTIONS
    elif isinstance(target, str) and ("/" in target or "?" in target):
        href = httpx.URL(target)
        params = dict(href.params.items())
        if "continuation" in params and not params["continuation"]:
            return None
        path = href.path if href.path.startswith("/api/") else _INTERACTIONS
    elif isinstance(target, str):
        params, path = {"continuation": target}, _INTERACTIONS
    else:
        return None
    params.setdefault("contactId", contact_id)
    params.setdefault("schemaId", schema_id)
    return path, params


def _next_link(links: list[Any]) -> str | None:
    candidates = [x for x in links if isinstance(x, Mapping) and isinstance(x.get("href"), str)]
    chosen = next((x for x in candidates if str(x.get("rel", "")).lower() == "next"), None)
    if chosen is None:
        chosen = next(
            (
                x
                for x in candidates
                if "rel" not in x and "continuation" in httpx.URL(x["href"]).params
            ),
            None,
        )
    return None if chosen is None else str(chosen["href"])
