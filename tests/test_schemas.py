"""Schema drift: each difference from Voyado's stored schema, classified by its safe way out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from voyado_sync.schemas import COMPATIBLE, INCOMPATIBLE, NEW_ID, describe_drift, diff_schemas


def _prop(
    type_: str = "integer",
    *,
    display_name: str = "Rating",
    segmentable: object = "false",
    show: object = "true",
    sort_order: object = "0",
    fmt: str | None = None,
) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": type_}
    if fmt:
        prop["format"] = fmt
    prop.update(
        displayName=display_name,
        showInContactCard=show,
        addToSegmentation=segmentable,
        sortOrder=sort_order,
    )
    return prop


def _schema(
    properties: dict[str, dict[str, Any]],
    *,
    required: list[str] | None = None,
    display_name: str = "Product review",
) -> dict[str, Any]:
    json_schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
    }
    if required:
        json_schema["required"] = required
    return {"id": "productReview", "displayName": display_name, "jsonSchema": json_schema}


EXISTING = _schema(
    {
        "rating": _prop(),
        "reviewedAt": _prop("string", display_name="Reviewed at", fmt="date-time", sort_order="1"),
    }
)


def _with(**changes: dict[str, Any] | None) -> dict[str, Any]:
    wanted = copy.deepcopy(EXISTING)
    props = wanted["jsonSchema"]["properties"]
    for name, prop in changes.items():
        if prop is None:
            del props[name]
        else:
            props[name] = prop
    return wanted


def _summary(wanted: dict[str, Any], existing: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c.property, c.kind, c.classification) for c in diff_schemas(wanted, existing)]


def test_identical_schemas_have_no_changes() -> None:
    assert diff_schemas(copy.deepcopy(EXISTING), EXISTING) == []
    assert describe_drift(copy.deepcopy(EXISTING), EXISTING) == []


def test_metadata_as_booleans_and_numbers_equals_metadata_as_strings() -> None:
    # Voyado's examples use "true"/"0"; a stored schema may come back with native JSON values.
    native = _schema(
        {
            "rating": _prop(show=True, segmentable=False, sort_order=0),
            "reviewedAt": _prop(
                "string", display_name="Reviewed at", fmt="date-time", show=True, sort_order=1
            ),
        }
    )
    assert diff_schemas(EXISTING, native) == []
    assert diff_schemas(native, EXISTING) == []


def test_absent_add_to_segmentation_means_false() -> None:
    existing = copy.deepcopy(EXISTING)
    del existing["jsonSchema"]["properties"]["rating"]["addToSegmentation"]
    assert diff_schemas(EXISTING, existing) == []


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (
            _with(store=_prop("string", display_name="Store", sort_order="2")),
            [("store", "added", COMPATIBLE)],
        ),
        (
            _with(store=_prop("string", display_name="Store", segmentable="true")),
            [("store", "added", NEW_ID)],
        ),
        (_with(reviewedAt=None), [("reviewedAt", "removed", INCOMPATIBLE)]),
        (_with(rating=_prop("number")), [("rating", "type changed", INCOMPATIBLE)]),
        (_with(rating=_prop("string")), [("rating", "type changed", INCOMPATIBLE)]),
        (
            _with(reviewedAt=_prop("string", display_name="Reviewed at", sort_order="1")),
            [("reviewedAt", "type changed", INCOMPATIBLE)],
        ),
        (
            _with(rating=_prop(segmentable="true")),
            [("rating", "metadata changed", NEW_ID)],
        ),
        (
            _with(rating=_prop(segmentable=True)),
            [("rating", "metadata changed", NEW_ID)],
        ),
        (
            _with(rating=_prop(display_name="Stars")),
            [("rating", "metadata changed", COMPATIBLE)],
        ),
        (
            _with(rating=_prop(show="false")),
            [("rating", "metadata changed", COMPATIBLE)],
        ),
        (
            _with(rating=_prop(sort_order="5")),
            [("rating", "metadata changed", COMPATIBLE)],
        ),
        (
            _schema(EXISTING["jsonSchema"]["properties"], display_name="Reviews"),
            [(None, "display name", COMPATIBLE)],
        ),
        (
            _schema(EXISTING["jsonSchema"]["properties"], required=["rating"]),
            [(None, "required", COMPATIBLE)],
        ),
    ],
)
def test_each_difference_is_classified(
    wanted: dict[str, Any], expected: list[tuple[Any, ...]]
) -> None:
    assert _summary(wanted, EXISTING) == expected


def test_turning_segmentation_off_is_compatible() -> None:
    existing = _with(rating=_prop(segmentable="true"))
    assert _summary(EXISTING, existing) == [("rating", "metadata changed", COMPATIBLE)]


def test_several_changes_are_all_listed_and_described() -> None:
    wanted = _with(
        rating=_prop("number", display_name="Stars"),
        reviewedAt=None,
        store=_prop("string", display_name="Store", segmentable="true"),
    )
    assert _summary(wanted, EXISTING) == [
        ("rating", "metadata changed", COMPATIBLE),
        ("rating", "type changed", INCOMPATIBLE),
        ("reviewedAt", "removed", INCOMPATIBLE),
        ("store", "added", NEW_ID),
    ]
    lines = describe_drift(wanted, EXISTING)
    assert "property rating: type changed: integer -> number [incompatible]" in lines
    assert (
        "property rating: metadata changed: displayName 'Rating' -> 'Stars' [compatible]" in lines
    )
    assert any(
        line.startswith("property store: added: type string, segmentable [needs a new schema id]")
        for line in lines
    )
    assert any("backward compatibility" in line for line in lines)


def test_required_change_detail_names_the_properties() -> None:
    wanted = _schema(EXISTING["jsonSchema"]["properties"], required=["rating"])
    existing = _schema(EXISTING["jsonSchema"]["properties"], required=["reviewedAt"])
    (change,) = diff_schemas(wanted, existing)
    assert change.detail == "now required: rating; no longer required: reviewedAt"
