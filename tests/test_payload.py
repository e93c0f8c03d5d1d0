"""From a warehouse row to the payload Voyado receives: conversions and local validation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from voyado_sync.exceptions import RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.spec import Relation, parse_spec, resolve

COLUMNS = {
    "review_id": "INTEGER",
    "contact_id": "VARCHAR",
    "reviewed_at": "TIMESTAMP",
    "price": "DECIMAL(10,2)",
    "amount": "DECIMAL(10,0)",
    "rating": "INTEGER",
    "title": "VARCHAR",
    "sku": "INTEGER",
    "review_day": "DATE",
    "verified": "BOOLEAN",
    "score": "DOUBLE",
}
PROPERTIES: dict[str, Any] = {
    "price": "price",
    "amount": {"column": "amount", "type": "number"},
    "rating": {"column": "rating", "required": True},
    "title": "title",
    "productSku": {"column": "sku", "type": "string"},
    "reviewedAt": "reviewed_at",
    "reviewDay": "review_day",
    "verified": "verified",
    "score": "score",
}
ROW: dict[str, Any] = {
    "review_id": 1,
    "contact_id": "c-1",
    "reviewed_at": datetime(2024, 5, 1, 12, 30, 1, 123456),
    "price": Decimal("249.50"),
    "amount": Decimal("49.00"),
    "rating": 4,
    "title": "Great jeans",
    "sku": 5,
    "review_day": date(2024, 1, 2),
    "verified": True,
    "score": 0.25,
}


def _builder(created_date: str | None = "reviewed_at") -> PayloadBuilder:
    raw: dict[str, Any] = {
        "schema_id": "productReview",
        "unique_key": "review_id",
        "contact": {"column": "contact_id"},
        "properties": PROPERTIES,
    }
    if created_date:
        raw["created_date"] = created_date
    model = resolve(
        model="reviews",
        unique_id="model.shop.reviews",
        relation=Relation(None, "main", "reviews"),
        spec=parse_spec("reviews", raw),
        columns=COLUMNS,
    )
    return PayloadBuilder(model)


@pytest.fixture(scope="module")
def builder() -> PayloadBuilder:
    return _builder()


def _row(**changes: Any) -> dict[str, Any]:
    return {**ROW, **changes}


def _rejection(builder: PayloadBuilder, row: Mapping[str, Any]) -> str:
    with pytest.raises(RowRejected) as info:
        builder.payload(row)
    return info.value.reason


def test_full_row_becomes_native_json(builder: PayloadBuilder) -> None:
    payload = builder.payload(ROW)
    assert payload == {
        "price": 249.5,
        "amount": 49,
        "rating": 4,
        "title": "Great jeans",
        "productSku": "5",
        "reviewedAt": "2024-05-01T12:30:01.123Z",
        "reviewDay": "2024-01-02T00:00:00.000Z",
        "verified": True,
        "score": 0.25,
    }
    # What goes over the wire: numbers stay JSON numbers, never strings.
    assert json.loads(json.dumps(payload))["price"] == 249.5
    assert '"price": 249.5' in json.dumps(payload)
    assert '"amount": 49,' in json.dumps(payload)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 5, 1, 12, 30), "2024-05-01T12:30:00.000Z"),  # naive: assumed UTC
        (datetime(2024, 5, 1, 12, 30, 0, 999999), "2024-05-01T12:30:00.999Z"),
        (
            datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T12:30:00.000Z",
        ),
        (
            datetime(2024, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "2023-12-31T23:30:00.000Z",
        ),
        (
            datetime(2024, 5, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2024-05-01T12:00:00.000Z",
        ),
        (datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "2024-05-01T12:30:00.000Z"),
        (date(2024, 2, 29), "2024-02-29T00:00:00.000Z"),
    ],
)
def test_timestamps_are_sent_as_utc_with_milliseconds(
    builder: PayloadBuilder, value: datetime | date, expected: str
) -> None:
    assert builder.payload(_row(reviewed_at=value))["reviewedAt"] == expected
    assert builder.created_date(_row(reviewed_at=value)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00.000Z"),
        ("2024-05-01T08:00:00Z", "2024-05-01T08:00:00.000Z"),
        ("2024-05-01", "2024-05-01T00:00:00.000Z"),
    ],
)
def test_created_date_from_iso_text(builder: PayloadBuilder, value: str, expected: str) -> None:
    assert builder.created_date(_row(reviewed_at=value)) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "created_date column reviewed_at is NULL"),
        ("yesterday", "'yesterday' is not an ISO 8601 date-time"),
        (5, "5 is not a timestamp or date"),
    ],
)
def test_bad_created_date_rejects_the_row(
    builder: PayloadBuilder, value: object, says: str
) -> None:
    with pytest.raises(RowRejected) as info:
        builder.created_date(_row(reviewed_at=value))
    assert says in info.value.reason
    assert "reviewed_at" in info.value.reason


def test_no_created_date_column_lets_voyado_set_it() -> None:
    assert _builder(created_date=None).created_date(ROW) is None


@pytest.mark.parametrize(
    ("prop", "column", "value", "expected"),
    [
        ("price", "price", Decimal("249.50"), 249.5),
        ("price", "price", Decimal("0.10"), 0.1),
        ("price", "price", 7, 7),
        ("amount", "amount", Decimal("49.00"), 49),
        ("amount", "amount", Decimal("-3"), -3),
        ("rating", "rating", Decimal("4.0"), 4),
        ("rating", "rating", 5.0, 5),
        ("score", "score", 1e-3, 0.001),
        ("productSku", "sku", 5, "5"),
        ("title", "title", 42, "42"),
        ("title", "title", Decimal("1.50"), "1.50"),
        ("title", "title", False, "false"),
        ("verified", "verified", False, False),
    ],
)
def test_values_are_converted_to_the_property_type(
    builder: PayloadBuilder, prop: str, column: str, value: object, expected: object
) -> None:
    got = builder.payload(_row(**{column: value}))[prop]
    assert got == expected
    assert type(got) is type(expected)


def test_null_omits_the_property(builder: PayloadBuilder) -> None:
    payload = builder.payload(_row(title=None, price=None, reviewed_at=None))
    assert {"title", "price", "reviewedAt"}.isdisjoint(payload)
    assert payload["rating"] == 4


def test_null_on_required_property_names_property_and_column(builder: PayloadBuilder) -> None:
    reason = _rejection(builder, _row(rating=None))
    assert reason == "property rating is required by the schema but column rating is NULL"


def test_missing_column_in_row_counts_as_null(builder: PayloadBuilder) -> None:
    row = {k: v for k, v in ROW.items() if k != "rating"}
    assert "property rating is required" in _rejection(builder, row)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("rating", "5", "property rating (column rating): '5' is not an integer"),
        ("rating", 4.5, "property rating (column rating): 4.5 is not an integer"),
        ("rating", Decimal("4.5"), "property rating (column rating): 4.5 is not an integer"),
        ("rating", True, "true is a boolean, not a integer"),
        ("price", True, "property price (column price): true is a boolean, not a number"),
        ("price", "249.50", "'249.50' is not a number"),
        ("price", float("nan"), "nan is not a finite number"),
        ("price", float("inf"), "inf is not a finite number"),
        ("price", float("-inf"), "-inf is not a finite number"),
        ("price", Decimal("NaN"), "NaN is not a finite number"),
        ("price", Decimal("Infinity"), "Infinity is not a finite number"),
        ("rating", float("nan"), "nan is not an integer"),
        ("verified", "yes", "property verified (column verified): 'yes' is not a boolean"),
        ("verified", 1, "1 is not a boolean"),
        ("reviewed_at", "not a date", "property reviewedAt (column reviewed_at): 'not a date'"),
    ],
)
def test_wrong_values_are_rejected_with_property_rule_and_value(
    builder: PayloadBuilder, column: str, value: object, says: str
) -> None:
    assert says in _rejection(builder, _row(**{column: value}))


def test_type_rejection_says_what_the_schema_wants(builder: PayloadBuilder) -> None:
    assert _rejection(builder, _row(rating="5")).endswith("the schema says type integer")


def test_date_time_text_that_is_not_iso_is_rejected(builder: PayloadBuilder) -> None:
    reason = _rejection(builder, _row(reviewed_at="2024-05-01 10:00"))
    assert "is not a valid date-time" in reason


def test_long_values_are_truncated_in_the_reason(builder: PayloadBuilder) -> None:
    reason = _rejection(builder, _row(rating="x" * 500))
    assert "..." in reason
    assert len(reason) < 200


def test_a_payload_is_checked_against_the_schema_voyado_holds_too(builder: PayloadBuilder) -> None:
    """Voyado accepts and ignores an interaction that breaks its stored schema: a stricter
    stored rule rejects the row here, naming it, instead of a silent loss there."""
    import copy
    import dataclasses

    stored = copy.deepcopy(builder.schema)
    stored["properties"]["title"]["maxLength"] = 5
    strict = PayloadBuilder(dataclasses.replace(builder.model, stored_json_schema=stored))
    reason = _rejection(strict, _row())
    assert reason.startswith("Voyado's stored schema:") and "title" in reason
    assert strict.payload(_row(title="Great"))["title"] == "Great"
    same = PayloadBuilder(dataclasses.replace(builder.model, stored_json_schema=builder.schema))
    assert same.payload(_row())["title"] == "Great jeans"
