"""HTTP behaviour of the emulator: Voyado's request hygiene, limits, faults and routes.

Order for ``/api/v3`` requests, as Engage behaves and as the spec asks: Content-Type (500),
User-Agent (400), API key (401), rate limit (429, nothing processed), injected gateway errors
(nothing processed), the endpoint itself, the ambiguous fault on a successful interaction POST
or DELETE (stored or deleted, but the client gets a 503 or no answer), and last the added
latency. A request is counted and limited when it arrives and answered after the latency
(with its spread and slow tail): the round trip a client sees, while the server's one-second
counts are the client's own sending pattern.
``/_emulator`` admin routes skip all of that.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from voyado_sync.emulator.config import Contact
from voyado_sync.emulator.server import Request, Response
from voyado_sync.emulator.state import Emulator
from voyado_sync.emulator.wire import Reply, error_reply

API_PREFIX = "/api/v3/"
ADMIN_PREFIX = "/_emulator/"
INTERACTIONS_POST = "POST /api/v3/interactions"
INTERACTION_DELETE = "DELETE /api/v3/interactions/{id}"

# Engage's answer to a request without Content-Type: application/json, GET and DELETE included.
_NO_CONTENT_TYPE = Reply(500, {"message": "An error has occurred"})
_NOT_JSON = object()


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body) if request.body else _NOT_JSON
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _NOT_JSON


def _to_response(reply: Reply) -> Response:
    body = b"" if reply.body is None else json.dumps(reply.body, ensure_ascii=False).encode()
    return Response(reply.status, body, list(reply.headers))


def _format_seconds(seconds: float) -> str:
    # Whole seconds as HTTP defines Retry-After; a fraction is kept (e.g. "0.2") so that tests
    # can ask for short waits.
    return f"{seconds:g}"


class EmulatorApp:
    """The request handler given to :class:`~voyado_sync.emulator.server.HttpServer`."""

    def __init__(self, emulator: Emulator, *, default_host: str = "127.0.0.1") -> None:
        self.emulator = emulator
        self.default_host = default_host

    async def __call__(self, request: Request) -> Response | None:
        if request.path.startswith(ADMIN_PREFIX):
            return _to_response(self._admin(request))
        return await self._api(request)

    # ---- /api/v3 -----------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response | None:
        emulator = self.emulator
        arrived = time.monotonic()
        emulator.arrived(arrived)
        endpoint, action = self._route(request)
        reply = self._guarded(request, endpoint, action)
        delay = emulator.latency()
        if delay > 0:
            await asyncio.sleep(delay)
        emulator.record_request(endpoint, None if reply is None else reply.status, arrived)
        return None if reply is None else _to_response(reply)

    def _guarded(
        self, request: Request, endpoint: str, action: Callable[[], Reply] | None
    ) -> Reply | None:
        emulator = self.emulator
        config = emulator.config
        headers = request.headers
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return _NO_CONTENT_TYPE
        if not headers.get("user-agent", "").strip():
            return error_reply(400, "MissingUserAgent", "a User-Agent header is required")
        key = headers.get("apikey", "")
        if not key or not hmac.compare_digest(key.encode(), config.api_key.encode()):
            return error_reply(401, "Unauthorized", "missing or wrong apikey header")
        wait = emulator.admit(key, time.monotonic())
        if wait is not None:
            emulator.count("rate_limited")
            extra: tuple[tuple[str, str], ...] = ()
            if config.retry_after is not None:
                extra = (("Retry-After", _format_seconds(config.retry_after)),)
            body = {
                "errorCode": "TooManyRequests",
                "message": f"more than {config.rate_limit:g} requests per second",
            }
            return Reply(429, body, extra)
        if config.error_rate > 0 and emulator.draw() < config.error_rate:
            emulator.count("injected_errors")
            status = (502, 503, 504)[int(emulator.draw() * 3) % 3]
            return error_reply(status, "InjectedFault", f"emulated gateway error {status}")
        if action is None:
            return error_reply(404, "NotFound", f"no endpoint {request.method} {request.path}")
        reply = action()
        if (
            (
                (endpoint == INTERACTIONS_POST and reply.status == 201)
                or (endpoint == INTERACTION_DELETE and reply.status == 204)
            )
            and config.ambiguous_rate > 0
            and emulator.draw() < config.ambiguous_rate
        ):
            # Stored (or deleted) already: the client cannot know, which is the point of this
            # fault.
            if emulator.draw() < 0.5:
                emulator.count("dropped_connections")
                return None
            emulator.count("ambiguous_503")
            return error_reply(503, "ServiceUnavailable", "emulated failure after storing")
        return reply

    def _route(self, request: Request) -> tuple[str, Callable[[], Reply] | None]:
        """The endpoint's label for statistics and the action that answers it."""
        method = request.method
        if not request.path.startswith(API_PREFIX):
            return f"{method} (unknown)", None
        parts = [unquote(p) for p in request.path[len(API_PREFIX) :].strip("/").split("/")]
        em = self.emulator
        base = f"http://{request.headers.get('host') or self.default_host}"
        match parts, method:
            case ["interactionschemas"], "GET":
                return "GET /api/v3/interactionschemas", em.list_schemas
            case ["interactionschemas"], "POST":

                def create_schema() -> Reply:
                    body = _json_body(request)
                    if body is _NOT_JSON:
                        return error_reply(
                            400, "InvalidInteractionSchema", "the body is not valid JSON"
                        )
                    return em.create_schema(body, base_url=base)

                return "POST /api/v3/interactionschemas", create_schema
            case ["interactionschemas", schema_id], "GET":
                return "GET /api/v3/interactionschemas/{id}", lambda: em.get_schema(schema_id)
            case ["interactionschemas", schema_id], "DELETE":
                return "DELETE /api/v3/interactionschemas/{id}", lambda: em.delete_schema(schema_id)
            case ["interactions"], "GET":
                return "GET /api/v3/interactions", lambda: em.list_interactions(request.query)
            case ["interactions"], "POST":

                def create_interaction() -> Reply:
                    body = _json_body(request)
                    if body is _NOT_JSON:
                        return error_reply(400, "InvalidInteraction", "the body is not valid JSON")
                    return em.create_interaction(body, base_url=base)

                return INTERACTIONS_POST, create_interaction
            case ["interactions", interaction_id], "GET":
                return "GET /api/v3/interactions/{id}", lambda: em.get_interaction(interaction_id)
            case ["interactions", interaction_id], "DELETE":
                return INTERACTION_DELETE, lambda: em.delete_interaction(interaction_id)
            case ["contacts", "id"], "GET":
                return "GET /api/v3/contacts/id", lambda: em.lookup_contact(request.query)
            case ["contacts", "changes"], "GET":
                return "GET /api/v3/contacts/changes", lambda: em.contact_changes(request.query)
        return f"{method} (unknown)", None

    # ---- /_emulator ---------------------------------------------------------------------------

    def _admin(self, request: Request) -> Reply:
        em = self.emulator
        name = request.path[len(ADMIN_PREFIX) :].strip("/")
        match name, request.method:
            case "stats", "GET":
                return Reply(200, em.stats())
            case "interactions", "GET":
                return Reply(200, em.interactions())
            case "ignored", "GET":
                return Reply(200, em.ignored())
            case "contacts", "GET":
                return Reply(200, [c.to_json() for c in em.contacts()])
            case "contacts", "POST":
                return self._add_contacts(request)
            case str() as path, "DELETE" if path.startswith("contacts/"):
                contact_id = unquote(path.removeprefix("contacts/"))
                if not em.remove_contacts([contact_id]):
                    return error_reply(404, "ContactNotFound", f"no contact with id {contact_id!r}")
                return Reply(200, {"removed": contact_id, "contacts": len(em.contacts())})
            case "config", "GET":
                return Reply(200, em.config.runtime_settings())
            case "config", "POST":
                changes = _json_body(request)
                if not isinstance(changes, dict):
                    return error_reply(400, "InvalidConfig", "the body must be a JSON object")
                try:
                    em.configure(**changes)
                except ValueError as e:
                    return error_reply(400, "InvalidConfig", str(e))
                return Reply(200, em.config.runtime_settings())
            case "reset", "POST":
                em.reset()
                return Reply(200, {"reset": True})
        return error_reply(404, "NotFound", f"no admin endpoint {request.method} {request.path}")

    def _add_contacts(self, request: Request) -> Reply:
        data = _json_body(request)
        if not isinstance(data, list):
            return error_reply(400, "InvalidContacts", "the body must be a JSON list of contacts")
        try:
            contacts = [Contact.from_json(c, where=f"item {i}") for i, c in enumerate(data)]
        except ValueError as e:
            return error_reply(400, "InvalidContacts", str(e))
        self.emulator.add_contacts(contacts)
        return Reply(200, {"added": len(contacts), "contacts": len(self.emulator.contacts())})
