"""The HTTP client for Voyado Engage API v3: headers, pacing, retries, exactly-once POSTs.

Every request goes through one path (``_send``): a concurrency slot, a token from the shared
``RateLimiter``, the three headers Voyado requires, and a count in ``RequestStats``. On top of
it, two retry disciplines:

* idempotent requests (GET, DELETE) are simply repeated on 429, 5xx and network errors;
* ``POST /api/v3/interactions`` is never repeated blindly. Voyado has no idempotency key, so a
  POST whose outcome is unknown (5xx, read timeout, dropped connection) is followed by a listing
  of the contact's interactions; it is resent only when the interaction is not there.

The API key lives in a request header only: never in a URL, a message, a repr or the stats,
and it is replaced by ``***`` in any response body that is kept.
"""

from __future__ import annotations

import asyncio
import json
import math
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from voyado_sync import __version__
from voyado_sync.exceptions import ApiError, FatalApiError, RetryableApiError
from voyado_sync.voyado.models import (
    ContactAmbiguous,
    ContactFound,
    ContactInvalid,
    ContactNotFound,
    Delivered,
    DeliveryOutcome,
    Failed,
    LookupOutcome,
    Rejected,
    RequestKind,
    RequestStats,
    SchemaSummary,
)
from voyado_sync.voyado.pacing import RateLimiter
from voyado_sync.voyado.reconcile import find_match
from voyado_sync.voyado.transport import BEFORE_WRITE, Http11Transport
from voyado_sync.voyado.window import DEFAULT_CAP, ConcurrencyWindow

__all__ = ["LOOKUP_KEYS", "RetryPolicy", "VoyadoClient"]

#: Keys ``lookup_contact`` accepts. ``any`` is left out on purpose: Voyado stops at the first
#: attribute the value is valid for, even without a match, so it can miss a contact.
LOOKUP_KEYS = frozenset({"email", "mobilePhone", "customKey", "socialSecurityNumber"})

_INTERACTIONS = "/api/v3/interactions"
_SCHEMAS = "/api/v3/interactionschemas"
_CONTACT_ID = "/api/v3/contacts/id"

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
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# An error code that no amount of retrying fixes, even though it comes with a 500.
_CONFIG_ERROR_CODES = frozenset({"InvalidSystemConfiguration"})
_MAX_BODY = 500
_MAX_PAGES = 10_000
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
    connections are opened only as the window needs them; ``timeout``
    applies to connect, read, write and pool waits alike. ``transport`` is for tests
    (``httpx.MockTransport``), as are ``sleep``, ``clock`` and ``random``, which drive every
    back-off and pause.
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
        self.base_url = str(url).rstrip("/")
        self._key = _Secret(api_key.strip())
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
        resp = await self._idempotent("schema", "GET", _schema_path(schema_id), what=what)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
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

        Any 2xx is success. A 4xx raises ``FatalApiError`` carrying Voyado's status and error
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
                return
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
            raise FatalApiError(
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
        raise FatalApiError(
            f"Voyado refused to {what} ({_describe(resp.status_code, info)})",
            status=resp.status_code,
            error_code=info.code,
            body=info.body,
        )

    # ----------------------------------------------------------------------- interactions

    async def deliver_interaction(
        self, body: dict[str, Any], *, claimed: set[str] | None = None
    ) -> DeliveryOutcome:
        """POST one interaction so that it is stored exactly once.

        * 2xx: ``Delivered(id)``; 429: pause (see ``RateLimiter``) and resend, which is safe as
          Voyado did not process it, without spending an attempt.
        * The request never left (connect error, pool timeout): back off and resend.
        * Unknown outcome (5xx, read/write timeout, dropped connection): back off, then list
          the contact's interactions of the schema; a match is ``Delivered(id,
          reconciled=True)`` and nothing is resent, otherwise resend.
        * Other 4xx: ``Rejected``, not retried. 401/403 raise ``FatalApiError``.
        * Attempts used up: ``Failed``, with ``maybe_delivered`` set when the last outcome
          could not be checked.

        ``claimed`` holds interaction ids already accounted to other rows; pass one set for a
        whole run. Every id this call delivers or reconciles is added to it, so two identical
        rows can never both claim the same stored interaction. Matching is precise only when
        the body has a ``createdDate`` (the engine always sets one).
        """
        if claimed is None:
            claimed = set()
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
                    if interaction_id:
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
            if attempts >= self.retry.max_attempts:
                return Failed(
                    f"{unknown} (after {attempts} attempts; not stored)",
                    status=status,
                    error_code=code,
                )
            self.stats.retries += 1

    async def find_delivered(self, body: Mapping[str, Any], *, claimed: set[str]) -> str | None:
        """The id of a stored interaction matching ``body`` and not in ``claimed``, or None.

        For rows whose POST outcome is unknown (e.g. left in flight by a crashed run). The id
        found is added to ``claimed``. Lists afresh on every call. Raises ``ApiError``
        (``RetryableApiError`` for 429/5xx/network) when the listing cannot be read: the row
        must then stay in flight, neither resent nor given up.
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
            found = find_match(listings[key], body, exclude_ids=claimed)
            if found is not None:
                claimed.add(found)
                self.stats.reconciled += 1
            out.append(found)
        return out

    async def list_interactions(self, contact_id: str, schema_id: str) -> list[dict[str, Any]]:
        """Every interaction of one contact and schema, following continuation links."""
        what = "list interactions"
        params: dict[str, str] = {"contactId": contact_id, "schemaId": schema_id}
        path = _INTERACTIONS
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            resp = await self._idempotent("interaction_list", "GET", path, params=params, what=what)
            if resp.status_code >= 400:
                raise self._api_error(resp, what)
            data = self._json(resp, what)
            page: Any
            links: Any
            if isinstance(data, list):
                page, links = data, []
            elif isinstance(data, Mapping):
                page = data.get("items") or []
                links = data.get("links") or []
            else:
                page, links = [], []
            if not isinstance(page, list):
                raise ApiError(f"Could not {what}: 'items' is not a list", status=resp.status_code)
            items.extend(x for x in page if isinstance(x, dict))
            nxt = _next_page(links, contact_id, schema_id)
            if nxt is None:
                return items
            path, params = nxt
            token = f"{path}?{sorted(params.items())}"
            if token in seen:
                raise RetryableApiError(f"Could not {what}: Voyado repeated a continuation token")
            seen.add(token)
        raise RetryableApiError(f"Could not {what}: more than {_MAX_PAGES} pages")

    # --------------------------------------------------------------------------- contacts

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
            return ContactAmbiguous(_ambiguous_ids(resp), message)
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

    async def _send(
        self,
        kind: RequestKind,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """One exchange: a slot, a token, the request. Transport errors propagate."""
        content = None if json_body is None else _encode(json_body)
        # Take the slot first, then the token: a token spent while waiting for a slot would
        # let requests leave in a clump when slots free up.
        async with self.window.slot() as slot:
            granted: list[float] = []

            async def take_token() -> None:
                granted.append(await self.limiter.acquire())
                slot.sent(granted[0])

            extensions = {BEFORE_WRITE: take_token} if self._token_on_write else None
            if extensions is None:
                await take_token()
            try:
                resp = await self._http.request(
                    method,
                    self._url(path),
                    params=params,
                    content=content,
                    headers=self._headers(),
                    extensions=extensions,
                )
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
        await self._sleep(self._random() * ceiling)

    def _throttle(self, resp: httpx.Response, throttled: float) -> float:
        """Apply a 429 to the limiter; return the request's total throttle wait so far."""
        retry_after = _retry_after(resp.headers.get("Retry-After"))
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
        if status not in (401, 403) and not 300 <= status < 400:
            return
        info = self._error_info(resp)
        if status == 401:
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
        text = self._redact(resp.text)
        code: str | None = None
        message = ""
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
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
        return _ErrorInfo(code, message[:_MAX_BODY], text[:_MAX_BODY])

    def _redact(self, text: str) -> str:
        return text.replace(self._key.get(), "***")

    def _keep(self, text: str) -> str:
        return self._redact(text)[:_MAX_BODY]

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
            if isinstance(value, str) and value:
                return value
    return ""


def _contact_id(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        # Tolerate a bare, unquoted id.
        text = resp.text.strip()
        return text if text and " " not in text else ""
    if isinstance(data, str):
        return data.strip()
    if isinstance(data, Mapping):
        for key in ("contactId", "id"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


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


def _next_page(links: Any, contact_id: str, schema_id: str) -> tuple[str, dict[str, str]] | None:
    """Path and params of the next page, from a ``links`` list, or None on the last page.

    Only the continuation token and the path are taken from the link: the request goes to our
    own base URL, so the API key is never sent to a host named in a response.
    """
    if not isinstance(links, list):
        return None
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
    if chosen is None:
        return None
    href = httpx.URL(chosen["href"])
    params = dict(href.params.items())
    if "continuation" in params and not params["continuation"]:
        return None
    params.setdefault("contactId", contact_id)
    params.setdefault("schemaId", schema_id)
    path = href.path if href.path.startswith("/api/") else _INTERACTIONS
    return path, params
