"""The Voyado Engage emulator against Voyado's documented rules, over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from voyado_sync.emulator import (
    Contact,
    Emulator,
    EmulatorConfig,
    EmulatorHandle,
    load_contacts,
    run_emulator_in_thread,
)
from voyado_sync.emulator.command import emulator_command

KEY = "emulator-key"
HEADERS = {"apikey": KEY, "User-Agent": "voyado-sync-tests/1.0", "Content-Type": "application/json"}
DRAFT = "https://json-schema.org/draft/2020-12/schema"
VOYADO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def prop(kind: str | list[str] = "string", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "displayName": "A property", "showInContactCard": "true", **extra}


def schema_body(
    schema_id: str = "reviews",
    properties: dict[str, Any] | None = None,
    required: list[str] | None = None,
) -> dict[str, Any]:
    json_schema: dict[str, Any] = {
        "$schema": DRAFT,
        "type": "object",
        "properties": properties
        if properties is not None
        else {
            "name": prop(sortOrder="0"),
            "price": prop("integer", sortOrder="1"),
            "score": prop("number"),
            "verified": prop("boolean"),
            "reviewedAt": prop(format="date-time"),
        },
    }
    if required is not None:
        json_schema["required"] = required
    return {"id": schema_id, "displayName": "Product reviews", "jsonSchema": json_schema}


@pytest.fixture
def contact(fresh_emulator: EmulatorHandle) -> str:
    """A contact id the emulator knows (unique per test: contacts survive resets)."""
    contact_id = str(uuid.uuid4())
    fresh_emulator.add_contacts([Contact(contact_id)])
    return contact_id


@pytest.fixture
def api(fresh_emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fresh_emulator.url, headers=HEADERS, timeout=10) as client:
        yield client


@pytest.fixture
def reviews(api: httpx.Client) -> str:
    response = api.post("/api/v3/interactionschemas", json=schema_body(required=["name"]))
    assert response.status_code == 200, response.text
    return "reviews"


def post_interaction(
    api: httpx.Client, contact_id: str, payload: dict[str, Any], **extra: Any
) -> httpx.Response:
    body = {"contactId": contact_id, "schemaId": "reviews", "payload": payload, **extra}
    return api.post("/api/v3/interactions", json=body)


# ---- interaction schemas -------------------------------------------------------------------


def test_a_created_schema_can_be_read_back_and_listed(api: httpx.Client) -> None:
    body = schema_body(required=["name"])
    created = api.post("/api/v3/interactionschemas", json=body)
    assert created.status_code == 200
    assert created.json()["id"] == "reviews"
    assert created.json()["self"]["href"].endswith("/api/v3/interactionschemas/reviews")
    assert VOYADO_TIME.fullmatch(created.json()["self"]["created"])

    fetched = api.get("/api/v3/interactionschemas/reviews")
    assert fetched.status_code == 200
    assert fetched.json() == body
    listed = api.get("/api/v3/interactionschemas")
    assert listed.json() == [{"id": "reviews", "displayName": "Product reviews"}]
    assert api.get("/api/v3/interactionschemas/absent").status_code == 404


def test_voyado_documentation_examples_are_accepted(api: httpx.Client) -> None:
    # The example from Voyado's interactions page, and one of its use cases without sortOrder.
    reuse = {
        "id": "Reuse-Spring-2023",
        "displayName": "Reuse Spring Sale",
        "jsonSchema": {
            "$schema": DRAFT,
            "type": "object",
            "properties": {
                "price": prop("integer", displayName="Price", sortOrder="1"),
                "purchase-timestamp": prop(format="date-time", sortOrder="2"),
                "name": prop(displayName="Name", sortOrder="0"),
            },
            "required": ["name"],
        },
    }
    wishlist = {
        "id": "wishlist",
        "displayName": "Wishlist",
        "jsonSchema": {
            "$schema": DRAFT,
            "type": "object",
            "properties": {
                "date": prop(format="date-time", displayName="Date"),
                "productSku": prop(displayName="SKU"),
            },
        },
    }
    for body in (reuse, wishlist):
        response = api.post("/api/v3/interactionschemas", json=body)
        assert response.status_code == 200, response.text


def _with_property(spec: dict[str, Any]) -> dict[str, Any]:
    return schema_body(properties={"p": spec})


INVALID_SCHEMAS = [
    ("non-ASCII id", {**schema_body(), "id": "Höst-kampanj_2023"}, "may only contain"),
    ("space in id", {**schema_body(), "id": "two words"}, "may only contain"),
    ("no id", {k: v for k, v in schema_body().items() if k != "id"}, "id"),
    ("no displayName", {k: v for k, v in schema_body().items() if k != "displayName"}, "display"),
    (
        "draft 7",
        {**schema_body(), "jsonSchema": {**schema_body()["jsonSchema"], "$schema": "draft-07"}},
        "$schema",
    ),
    (
        "array root",
        {**schema_body(), "jsonSchema": {**schema_body()["jsonSchema"], "type": "array"}},
        "type",
    ),
    (
        "no properties",
        {**schema_body(), "jsonSchema": {"$schema": DRAFT, "type": "object"}},
        "properties",
    ),
    ("object property", _with_property(prop("object")), "only string"),
    ("array property", _with_property(prop("array")), "only string"),
    ("type list", _with_property(prop(["string", "null"])), "only string"),
    ("nested properties", _with_property(prop(properties={"x": prop()})), "nested"),
    ("nested items", _with_property(prop(items=prop())), "nested"),
    ("anyOf", _with_property(prop(anyOf=[{"type": "object"}])), "anyOf"),
    ("property without displayName", _with_property({"type": "string"}), "displayName"),
    ("boolean showInContactCard", _with_property(prop(showInContactCard=True)), "showInContact"),
    ("numeric sortOrder", _with_property(prop(sortOrder=1)), "sortOrder"),
    ("word sortOrder", _with_property(prop(sortOrder="first")), "sortOrder"),
    ("yes addToSegmentation", _with_property(prop(addToSegmentation="yes")), "addToSegmentation"),
    ("unknown required", schema_body(required=["nope"]), "unknown properties"),
    ("required not a list", schema_body(required="name"), "required"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in INVALID_SCHEMAS], ids=[c[0] for c in INVALID_SCHEMAS]
)
def test_a_schema_breaking_a_rule_is_refused_naming_the_rule(
    api: httpx.Client, body: dict[str, Any], message: str
) -> None:
    response = api.post("/api/v3/interactionschemas", json=body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "InvalidInteractionSchema"
    assert message in response.json()["message"]
    assert api.get("/api/v3/interactionschemas").json() == []


def test_at_most_six_properties_may_be_segmentable(api: httpx.Client) -> None:
    def body(schema_id: str, segmentable: int) -> dict[str, Any]:
        properties = {f"p{i}": prop(addToSegmentation="true") for i in range(segmentable)}
        properties["other"] = prop(addToSegmentation="false")
        return schema_body(schema_id, properties)

    assert api.post("/api/v3/interactionschemas", json=body("six", 6)).status_code == 200
    refused = api.post("/api/v3/interactionschemas", json=body("seven", 7))
    assert refused.status_code == 400
    assert "at most 6" in refused.json()["message"]


def test_at_most_fifteen_schemas(api: httpx.Client) -> None:
    for i in range(15):
        response = api.post("/api/v3/interactionschemas", json=schema_body(f"s{i}"))
        assert response.status_code == 200
    refused = api.post("/api/v3/interactionschemas", json=schema_body("s15"))
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "TooManyInteractionSchemas"
    assert len(api.get("/api/v3/interactionschemas").json()) == 15


def test_a_schema_cannot_be_created_twice(api: httpx.Client, reviews: str) -> None:
    again = api.post("/api/v3/interactionschemas", json=schema_body(reviews))
    assert again.status_code == 409
    assert again.json()["errorCode"] == "InteractionSchemaAlreadyExists"


def test_deleting_a_schema_deletes_its_interactions(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    ids = [post_interaction(api, contact, {"name": f"r{i}"}).json()["id"] for i in range(3)]
    assert fresh_emulator.stats()["stored"] == 3

    assert api.delete(f"/api/v3/interactionschemas/{reviews}").status_code == 204
    assert all(api.get(f"/api/v3/interactions/{i}").status_code == 404 for i in ids)
    assert fresh_emulator.stats()["stored"] == 0
    assert api.delete(f"/api/v3/interactionschemas/{reviews}").status_code == 404
    # Recreating the schema does not bring the interactions back.
    assert api.post("/api/v3/interactionschemas", json=schema_body(reviews)).status_code == 200
    listing = api.get("/api/v3/interactions", params={"contactId": contact, "schemaId": reviews})
    assert listing.json()["items"] == []


# ---- interactions --------------------------------------------------------------------------


def test_a_stored_interaction_reads_back_with_its_date_in_utc(
    api: httpx.Client, reviews: str, contact: str
) -> None:
    payload = {"name": "Jeans", "price": 100, "score": 4.5, "verified": True}
    response = post_interaction(api, contact, payload, createdDate="2024-03-01T10:00:00+01:00")
    assert response.status_code == 201
    body = response.json()
    uuid.UUID(body["id"])
    assert body["self"]["contactId"] == contact
    assert body["self"]["href"].endswith(f"/api/v3/interactions/{body['id']}")

    fetched = api.get(f"/api/v3/interactions/{body['id']}").json()
    assert fetched == {
        "id": body["id"],
        "contactId": contact,
        "schemaId": reviews,
        "createdDate": "2024-03-01T09:00:00.000Z",
        "payload": payload,
    }


def test_created_date_defaults_to_now_in_voyado_format(
    api: httpx.Client, reviews: str, contact: str
) -> None:
    before = datetime.now(UTC)
    interaction_id = post_interaction(api, contact, {"name": "x"}).json()["id"]
    created = api.get(f"/api/v3/interactions/{interaction_id}").json()["createdDate"]
    assert VOYADO_TIME.fullmatch(created)
    moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert abs((moment - before).total_seconds()) < 5


def test_a_property_missing_from_the_schema_is_dropped_and_counted(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    response = post_interaction(api, contact, {"name": "x", "colour": "blue"})
    fetched = api.get(f"/api/v3/interactions/{response.json()['id']}").json()
    assert fetched["payload"] == {"name": "x"}
    assert fresh_emulator.stats()["dropped_properties"] == 1
    assert fresh_emulator.interactions()[0]["droppedProperties"] == ["colour"]


BREAKING_INTERACTIONS = [
    ("string for integer", {"name": "x", "price": "100"}, {}, "'price' must be of type integer"),
    ("boolean for integer", {"name": "x", "price": True}, {}, "'price' must be of type integer"),
    ("boolean for number", {"name": "x", "score": False}, {}, "'score' must be of type number"),
    ("number for boolean", {"name": "x", "verified": 1}, {}, "'verified' must be of type boolean"),
    ("null value", {"name": None}, {}, "'name' must be of type string"),
    ("nested object", {"name": {"first": "x"}}, {}, "'name' must be of type string"),
    ("array value", {"name": ["x"]}, {}, "'name' must be of type string"),
    ("missing required", {"price": 1}, {}, "required property 'name' is missing"),
    ("date without offset", {"name": "x", "reviewedAt": "2024-03-01T10:00:00"}, {}, "date-time"),
    ("not a date", {"name": "x", "reviewedAt": "yesterday"}, {}, "date-time"),
    ("Voyado's typo", {"name": "x"}, {"createdDate": "2023-05-23711:13:42.074Z"}, "createdDate"),
    ("createdDate no zone", {"name": "x"}, {"createdDate": "2024-03-01T10:00:00"}, "createdDate"),
    ("createdDate number", {"name": "x"}, {"createdDate": 1700000000}, "createdDate"),
]


@pytest.mark.parametrize(
    ("payload", "extra", "reason"),
    [c[1:] for c in BREAKING_INTERACTIONS],
    ids=[c[0] for c in BREAKING_INTERACTIONS],
)
def test_an_interaction_breaking_its_schema_is_accepted_but_silently_ignored(
    api: httpx.Client,
    reviews: str,
    contact: str,
    fresh_emulator: EmulatorHandle,
    payload: dict[str, Any],
    extra: dict[str, Any],
    reason: str,
) -> None:
    response = post_interaction(api, contact, payload, **extra)
    assert response.status_code == 201
    interaction_id = response.json()["id"]
    assert api.get(f"/api/v3/interactions/{interaction_id}").status_code == 404
    listing = api.get("/api/v3/interactions", params={"contactId": contact, "schemaId": reviews})
    assert listing.json()["items"] == []
    stats = fresh_emulator.stats()
    assert (stats["stored"], stats["ignored"]) == (0, 1)
    (ignored,) = fresh_emulator.ignored()
    assert ignored["id"] == interaction_id
    assert reason in ignored["reason"]


def test_a_valid_date_time_property_is_stored_as_sent(
    api: httpx.Client, reviews: str, contact: str
) -> None:
    payload = {"name": "x", "reviewedAt": "2018-11-13T20:20:39+00:00"}
    interaction_id = post_interaction(api, contact, payload).json()["id"]
    assert api.get(f"/api/v3/interactions/{interaction_id}").json()["payload"] == payload


def test_an_interaction_needs_a_known_schema_and_contact(
    api: httpx.Client, reviews: str, contact: str
) -> None:
    unknown_schema = api.post(
        "/api/v3/interactions",
        json={"contactId": contact, "schemaId": "nope", "payload": {"name": "x"}},
    )
    assert unknown_schema.status_code == 404
    assert unknown_schema.json()["errorCode"] == "InteractionSchemaNotFound"
    unknown_contact = post_interaction(api, str(uuid.uuid4()), {"name": "x"})
    assert unknown_contact.status_code == 404
    assert unknown_contact.json()["errorCode"] == "ContactNotFound"


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"schemaId": "reviews", "payload": {}}',
        b'{"contactId": "c", "payload": {}}',
        b'{"contactId": "c", "schemaId": "reviews"}',
        b'{"contactId": "c", "schemaId": "reviews", "payload": "name=x"}',
    ],
)
def test_a_malformed_interaction_is_refused(
    api: httpx.Client, reviews: str, content: bytes
) -> None:
    response = api.post("/api/v3/interactions", content=content)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "InvalidInteraction"


def test_listing_pages_by_fifty_with_continuation_links(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    other = str(uuid.uuid4())
    fresh_emulator.add_contacts([Contact(other)])
    sent = [post_interaction(api, contact, {"name": f"n{i}"}).json()["id"] for i in range(120)]
    post_interaction(api, other, {"name": "someone else"})

    pages = []
    response = api.get("/api/v3/interactions", params={"contactId": contact, "schemaId": reviews})
    while True:
        assert response.status_code == 200
        page = response.json()
        pages.append(page["items"])
        nexts = [link for link in page["links"] if link["rel"] == "next"]
        if not nexts:
            break
        assert nexts[0]["method"] == "GET"
        assert "continuation=" in nexts[0]["href"]
        response = api.get(nexts[0]["href"])
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i["id"] for p in pages for i in p] == sent
    assert pages[2][-1]["payload"] == {"name": "n119"}


def test_listing_needs_both_contact_and_schema(api: httpx.Client, reviews: str) -> None:
    response = api.get("/api/v3/interactions", params={"schemaId": reviews})
    assert response.status_code == 400
    assert set(response.json()) >= {"errorCode", "message"}


def test_an_interaction_can_be_deleted_once(api: httpx.Client, reviews: str, contact: str) -> None:
    interaction_id = post_interaction(api, contact, {"name": "x"}).json()["id"]
    assert api.delete(f"/api/v3/interactions/{interaction_id}").status_code == 204
    assert api.get(f"/api/v3/interactions/{interaction_id}").status_code == 404
    assert api.delete(f"/api/v3/interactions/{interaction_id}").status_code == 404


def test_the_same_interaction_posted_twice_is_stored_twice_and_counted_as_duplicate(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    for _ in range(2):
        post_interaction(api, contact, {"name": "x"}, createdDate="2024-01-01T00:00:00Z")
    post_interaction(api, contact, {"name": "y"}, createdDate="2024-01-01T00:00:00Z")
    stats = fresh_emulator.stats()
    assert (stats["stored"], stats["duplicates"]) == (3, 1)


# ---- contact lookup ------------------------------------------------------------------------

LOOKUP_CONTACTS = [
    Contact("lookup-anna", email="Anna@Example.se", mobile_phone="+46701234567", custom_key="M1"),
    Contact("lookup-erik", email="erik@example.se", social_security_number="19900101-1234"),
    Contact("lookup-twin-1", email="twin@example.se"),
    Contact("lookup-twin-2", email="TWIN@example.se"),
]

LOOKUPS = [
    ("email, other case", "email=anna%40example.SE", 200, "lookup-anna"),
    ("phone, + encoded", "mobilePhone=%2B46701234567", 200, "lookup-anna"),
    ("customKey", "customKey=M1", 200, "lookup-anna"),
    ("ssn", "socialSecurityNumber=19900101-1234", 200, "lookup-erik"),
    ("bad email", "email=anna.example.se", 400, "InvalidEmailAddress"),
    ("phone, + not encoded", "mobilePhone=+46701234567", 400, "InvalidPhoneNumber"),
    ("phone, national", "mobilePhone=0701234567", 400, "InvalidPhoneNumber"),
    ("ssn, nine digits", "socialSecurityNumber=123456789", 400, "InvalidSocialSecurityNumber"),
    ("no parameter", "", 400, "InvalidSearchQuery"),
    ("two parameters", "email=erik%40example.se&customKey=M1", 400, "InvalidSearchQuery"),
    ("any", "any=erik%40example.se", 400, "InvalidSearchQuery"),
    ("unknown", "email=nobody%40example.se", 404, "ContactNotFound"),
    ("unknown key", "customKey=M404", 404, "ContactNotFound"),
    ("two matches", "email=twin%40example.se", 409, "MultipleMatches"),
]


@pytest.mark.parametrize(
    ("query", "status", "expected"), [c[1:] for c in LOOKUPS], ids=[c[0] for c in LOOKUPS]
)
def test_contact_lookup(
    api: httpx.Client, fresh_emulator: EmulatorHandle, query: str, status: int, expected: str
) -> None:
    fresh_emulator.add_contacts(LOOKUP_CONTACTS)
    response = api.get(f"/api/v3/contacts/id?{query}")
    assert response.status_code == status
    if status == 200:
        assert response.text == json.dumps(expected)  # a bare JSON string
    else:
        assert response.json()["errorCode"] == expected
    if status == 409:
        assert sorted(response.json()["multipleMatchesFound"]) == ["lookup-twin-1", "lookup-twin-2"]


def test_contacts_load_from_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "contactId,email,mobilePhone,customKey,socialSecurityNumber\n"
        "c1,a@example.se,+46701234567,,\n"
        "c2,,,K2,199001011234\n"
    )
    json_file = tmp_path / "contacts.json"
    json_file.write_text(json.dumps([{"contactId": "c3", "email": "c@example.se"}]))
    assert load_contacts(csv_file) == [
        Contact("c1", email="a@example.se", mobile_phone="+46701234567"),
        Contact("c2", custom_key="K2", social_security_number="199001011234"),
    ]
    assert load_contacts(json_file) == [Contact("c3", email="c@example.se")]
    (tmp_path / "bad.csv").write_text("email\na@example.se\n")
    with pytest.raises(ValueError, match="contactId"):
        load_contacts(tmp_path / "bad.csv")


def test_contacts_can_be_added_over_the_admin_endpoint(
    api: httpx.Client, fresh_emulator: EmulatorHandle
) -> None:
    added = httpx.post(
        f"{fresh_emulator.url}/_emulator/contacts",
        json=[{"contactId": "admin-added", "customKey": "ADM-1"}],
    )
    assert added.status_code == 200
    assert api.get("/api/v3/contacts/id?customKey=ADM-1").json() == "admin-added"
    refused = httpx.post(f"{fresh_emulator.url}/_emulator/contacts", json=[{"email": "x@y.se"}])
    assert refused.status_code == 400


def test_a_removed_contact_is_gone_like_a_merged_one(
    api: httpx.Client, reviews: str, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.add_contacts([Contact("merged-away", email="merged@example.se")])
    assert api.get("/api/v3/contacts/id?email=merged%40example.se").json() == "merged-away"

    removed = httpx.delete(f"{fresh_emulator.url}/_emulator/contacts/merged-away")

    assert removed.status_code == 200
    lookup = api.get("/api/v3/contacts/id?email=merged%40example.se")
    assert (lookup.status_code, lookup.json()["errorCode"]) == (404, "ContactNotFound")
    post = post_interaction(api, "merged-away", {"name": "x"})
    assert (post.status_code, post.json()["errorCode"]) == (404, "ContactNotFound")
    again = httpx.delete(f"{fresh_emulator.url}/_emulator/contacts/merged-away")
    assert again.status_code == 404
    fresh_emulator.add_contacts([Contact("merged-into", email="merged@example.se")])
    assert fresh_emulator.remove_contacts(["merged-into", "never-known"]) == 1


# ---- request hygiene -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"apikey": "wrong"}, 401, "Unauthorized"),
        ({"apikey": None}, 401, "Unauthorized"),
        ({"User-Agent": None}, 400, "MissingUserAgent"),
        ({"User-Agent": None, "apikey": "wrong"}, 400, "MissingUserAgent"),
        ({"Content-Type": None, "apikey": "wrong"}, 500, None),
        ({"Content-Type": "text/plain"}, 500, None),
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_request_hygiene(
    fresh_emulator: EmulatorHandle,
    method: str,
    headers: dict[str, str | None],
    status: int,
    code: str | None,
) -> None:
    sent = {k: v for k, v in {**HEADERS, **headers}.items() if v is not None}
    with httpx.Client(base_url=fresh_emulator.url) as client:
        # httpx adds its own User-Agent unless the header is removed from the client.
        client.headers.pop("User-Agent")
        response = client.request(method, "/api/v3/interactionschemas/x", headers=sent)
    assert response.status_code == status
    if code is None:
        assert response.json() == {"message": "An error has occurred"}
    else:
        assert response.json()["errorCode"] == code


def test_admin_endpoints_need_no_headers(fresh_emulator: EmulatorHandle) -> None:
    with httpx.Client(base_url=fresh_emulator.url) as client:
        client.headers.pop("User-Agent")
        assert client.get("/_emulator/stats").status_code == 200
        assert client.get("/_emulator/interactions").json() == []
        assert client.get("/_emulator/ignored").json() == []
        assert client.post("/_emulator/config", json={"latency_ms": 0}).status_code == 200
        bad = client.post("/_emulator/config", json={"error_rate": 2, "colour": "red"})
        assert bad.status_code == 400
        assert "error_rate" in bad.json()["message"] and "colour" in bad.json()["message"]
        assert client.post("/_emulator/reset").status_code == 200


def test_stats_count_requests_by_status_and_endpoint(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    post_interaction(api, contact, {"name": "x"})
    api.get("/api/v3/interactionschemas/absent")
    stats = httpx.get(f"{fresh_emulator.url}/_emulator/stats").json()
    assert stats["requests_by_status"] == {"200": 1, "201": 1, "404": 1}
    assert stats["requests_by_endpoint"]["POST /api/v3/interactions"] == 1
    assert stats["total_requests"] == 3
    assert stats["peak_requests_per_second"] >= 1
    assert stats["schemas"] == 1


def test_chunked_bodies_are_refused_and_connection_close_is_honoured(
    fresh_emulator: EmulatorHandle,
) -> None:
    host, port = fresh_emulator.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v3/interactions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n0\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 411 ")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /_emulator/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk  # the server closes, so this loop ends
    assert received.startswith(b"HTTP/1.1 200 ")


# ---- rate limit and faults -----------------------------------------------------------------


def test_above_the_rate_limit_requests_get_429_and_are_not_processed(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(rate_limit=5, retry_after=2)
    statuses = [post_interaction(api, contact, {"name": f"n{i}"}) for i in range(20)]
    throttled = [r for r in statuses if r.status_code == 429]
    accepted = [r for r in statuses if r.status_code == 201]
    assert throttled and accepted
    assert len(accepted) + len(throttled) == 20
    assert throttled[0].json()["errorCode"] == "TooManyRequests"
    assert throttled[0].headers["Retry-After"] == "2"
    assert fresh_emulator.stats()["stored"] == len(accepted)
    time.sleep(1.1)  # the window slides: a patient client gets through again
    assert post_interaction(api, contact, {"name": "later"}).status_code == 201


def test_without_retry_after_setting_429_has_no_header(
    api: httpx.Client, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(rate_limit=1)
    responses = [api.get("/api/v3/interactionschemas") for _ in range(3)]
    assert responses[-1].status_code == 429
    assert "Retry-After" not in responses[-1].headers


def test_injected_gateway_errors_process_nothing(
    api: httpx.Client, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(error_rate=1.0)
    statuses = {api.post("/api/v3/interactionschemas", json=schema_body()).status_code}
    statuses |= {api.get("/api/v3/interactionschemas").status_code for _ in range(20)}
    assert statuses <= {502, 503, 504} and len(statuses) > 1
    fresh_emulator.configure(error_rate=0.0)
    assert api.get("/api/v3/interactionschemas").json() == []
    assert fresh_emulator.stats()["faults"]["injected_errors"] == 21


def test_ambiguous_faults_store_the_interaction_but_the_client_sees_an_error(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(ambiguous_rate=1.0)
    outcomes: list[int | str] = []
    for i in range(20):
        try:
            outcomes.append(post_interaction(api, contact, {"name": f"n{i}"}).status_code)
        except httpx.TransportError:  # the connection dropped with no answer at all
            outcomes.append("dropped")
    assert set(outcomes) == {503, "dropped"}
    stats = fresh_emulator.stats()
    assert stats["stored"] == 20
    assert stats["faults"]["ambiguous_503"] + stats["faults"]["dropped_connections"] == 20
    # Only successful POSTs are affected: other endpoints answer normally.
    assert api.get("/api/v3/interactionschemas").status_code == 200


def test_latency_is_added_without_serialising_requests(
    fresh_emulator: EmulatorHandle,
) -> None:
    fresh_emulator.configure(latency_ms=300)

    def one(_: int) -> int:
        with httpx.Client(base_url=fresh_emulator.url, headers=HEADERS) as client:
            return client.get("/api/v3/interactionschemas").status_code

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 8 * 0.3 * 0.75


def test_latency_spread_and_slow_tail_follow_the_seed() -> None:
    config = EmulatorConfig(
        seed=5, latency_ms=200, latency_jitter=0.5, slow_rate=0.05, slow_ms=2000
    )
    emulator = Emulator(config)
    draws = [emulator.latency() for _ in range(4000)]
    fast = [d for d in draws if d < 1.0]
    slow = [d for d in draws if d >= 1.0]
    assert min(fast) >= 0.1 and max(fast) <= 0.3, "200 ms spread by half either way"
    assert 0.19 <= sum(fast) / len(fast) <= 0.21
    assert all(2.1 <= d <= 2.3 for d in slow), "the slow tail: 2 s more"
    assert 0.035 <= len(slow) / len(draws) <= 0.065
    same, other = Emulator(config), Emulator(replace(config, seed=6))
    assert [same.latency() for _ in range(50)] == draws[:50], "same seed"
    assert [other.latency() for _ in range(50)] != draws[:50]
    emulator.reset()
    assert [emulator.latency() for _ in range(50)] == draws[:50], "reset re-seeds"
    # Without a spread or a tail every answer waits the same.
    assert {Emulator(EmulatorConfig(seed=5, latency_ms=30)).latency() for _ in range(20)} == {0.03}


def test_latency_settings_are_checked_and_shown(fresh_emulator: EmulatorHandle) -> None:
    with pytest.raises(ValueError, match=r"latency_jitter.*slow_rate.*slow_ms"):
        fresh_emulator.configure(latency_jitter=1.5, slow_rate=-0.1, slow_ms=-1)
    fresh_emulator.configure(latency_jitter=0.5, slow_rate=0.05, slow_ms=2000)
    try:
        with httpx.Client(base_url=fresh_emulator.url) as client:
            settings = client.get("/_emulator/config").json()
        assert settings["latency_jitter"] == 0.5
        assert (settings["slow_rate"], settings["slow_ms"]) == (0.05, 2000)
    finally:
        fresh_emulator.configure(latency_jitter=0.0, slow_rate=0.0, slow_ms=0.0)
    ctx = emulator_command.make_context(
        "emulator", ["--latency-ms", "250", "--latency-jitter", "0.5", "--slow-rate", "0.05",
                     "--slow-ms", "2000"]
    )  # fmt: skip
    assert ctx.params["latency_jitter"] == 0.5 and ctx.params["slow_ms"] == 2000
    with pytest.raises(click.BadParameter):
        emulator_command.make_context("emulator", ["--latency-jitter", "1.5"])


def test_requests_are_limited_when_they_arrive_and_answered_after_the_latency(
    fresh_emulator: EmulatorHandle,
) -> None:
    fresh_emulator.configure(rate_limit=5, latency_ms=300)

    def one(_: int) -> tuple[int, float]:
        started = time.monotonic()
        with httpx.Client(base_url=fresh_emulator.url, headers=HEADERS) as client:
            status = client.get("/api/v3/interactionschemas").status_code
        return status, time.monotonic() - started

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert sorted(status for status, _ in answers) == [200] * 5 + [429] * 3
    assert all(took >= 0.3 for _, took in answers), "429s wait for the latency too"
    stats = fresh_emulator.stats()
    assert stats["peak_requests_in_any_second"] == 8


# ---- persistence and process ---------------------------------------------------------------


def test_state_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "emulator-state.json"
    config = EmulatorConfig(state_file=state, contacts=[Contact("persisted-contact")])
    with run_emulator_in_thread(config) as first:
        with httpx.Client(base_url=first.url, headers=HEADERS) as api:
            api.post("/api/v3/interactionschemas", json=schema_body())
            response = post_interaction(api, "persisted-contact", {"name": "kept", "x": 1})
            interaction_id = response.json()["id"]
        first.add_contacts([Contact("added-at-runtime")])
    assert state.exists()

    with run_emulator_in_thread(EmulatorConfig(state_file=state)) as second:
        with httpx.Client(base_url=second.url, headers=HEADERS) as api:
            assert api.get("/api/v3/interactionschemas/reviews").status_code == 200
            fetched = api.get(f"/api/v3/interactions/{interaction_id}").json()
            assert fetched["payload"] == {"name": "kept"}
            post_interaction(api, "added-at-runtime", {"name": "new"})
        stats = second.stats()
        assert (stats["stored"], stats["dropped_properties"]) == (2, 1)


def test_a_damaged_state_file_stops_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json"):
        run_emulator_in_thread(EmulatorConfig(state_file=state))


@pytest.mark.slow
def test_throughput_smoke_2000_posts_with_keep_alive(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(rate_limit=0)

    def send(worker: int) -> list[int]:
        with httpx.Client(base_url=fresh_emulator.url, headers=HEADERS) as client:
            return [
                post_interaction(client, contact, {"name": f"{worker}-{i}"}).status_code
                for i in range(500)
            ]

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for batch in pool.map(send, range(4)) for s in batch]
    assert statuses == [201] * 2000
    assert fresh_emulator.stats()["stored"] == 2000


@pytest.mark.slow
def test_the_command_serves_until_sigint_then_prints_a_summary(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("contactId,email,mobilePhone,customKey,socialSecurityNumber\nc1,,,,\n")
    secret = "secret-" + uuid.uuid4().hex
    env = {**os.environ, "VOYADO_EMULATOR_API_KEY": secret}
    code = "from voyado_sync.emulator.command import emulator_command; emulator_command()"
    args = ["--port", "0", "--contacts", str(contacts), "--rate-limit", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"Voyado emulator listening on (http://127\.0\.0\.1:\d+) \(1 contacts\)\n", line
        )
        assert match, line
        headers = {**HEADERS, "apikey": secret}
        response = httpx.get(f"{match[1]}/api/v3/contacts/id?customKey=nope", headers=headers)
        assert response.status_code == 404
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "404: 1" in out and "peak requests/s" in out
    assert secret not in line + out + err
    assert "API key: set" in err


def test_handle_helpers_are_thread_safe_while_serving(
    api: httpx.Client, reviews: str, contact: str, fresh_emulator: EmulatorHandle
) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(len(fresh_emulator.interactions()))
            fresh_emulator.stats()
            time.sleep(0.001)  # leave the GIL to the server thread now and then

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            assert post_interaction(api, contact, {"name": f"n{i}"}).status_code == 201
    finally:
        stop.set()
        reader.join()
    assert seen == sorted(seen) and fresh_emulator.stats()["stored"] == 100


@pytest.mark.slow
def test_the_banner_says_the_default_key_and_what_to_export() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOYADO_EMULATOR_API_KEY"}
    code = "from voyado_sync.emulator.command import emulator_command; emulator_command()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--rate-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("Voyado emulator")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "API key: emulator-key (the default)" in err
    assert "VOYADO_API_KEY=emulator-key" in err and "VOYADO_BASE_URL=http://127.0.0.1:" in err
