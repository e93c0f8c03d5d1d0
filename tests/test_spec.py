"""The meta.voyado block: parsing, Voyado's rules, type inference and the schema it implies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from voyado_sync.exceptions import ConfigError, ConfigProblem
from voyado_sync.spec import (
    InteractionModel,
    Relation,
    VoyadoSpec,
    check_project_rules,
    parse_spec,
    resolve,
)

MODEL = "voyado_product_reviews"
ROOT = "config.meta.voyado"
RELATION = Relation("analytics", "main", "voyado_product_reviews")


def _raw(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "schema_id": "productReview",
        "unique_key": "review_id",
        "contact": {"column": "contact_id"},
        "properties": {"rating": "rating"},
    }
    raw.update(overrides)
    return raw


def _problems(raw: object, model: str = MODEL) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_spec(model, raw)
    return info.value.problems


def _by_key(problems: list[ConfigProblem]) -> dict[str | None, str]:
    return {p.key: p.message for p in problems}


def _resolve(
    properties: Mapping[str, Any], columns: Mapping[str, str], **overrides: Any
) -> InteractionModel:
    spec = parse_spec(MODEL, _raw(properties=dict(properties), **overrides))
    return resolve(
        model=MODEL,
        unique_id=f"model.shop.{MODEL}",
        relation=RELATION,
        spec=spec,
        columns=columns,
    )


def _resolve_problems(
    properties: Mapping[str, Any], columns: Mapping[str, str], **overrides: Any
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        _resolve(properties, columns, **overrides)
    return info.value.problems


BASE_COLUMNS = {"review_id": "INTEGER", "contact_id": "VARCHAR"}


# ---- parse_spec: valid input -----------------------------------------------------------------


def test_minimal_spec_parses_with_defaults() -> None:
    spec = parse_spec(MODEL, _raw(unique_key=["order_id", "line"]))
    assert spec.schema_id == "productReview"
    assert spec.unique_key_columns == ("order_id", "line")
    assert spec.contact.key == "contactId"
    assert spec.contact.not_found_retry_days == 7


@pytest.mark.parametrize("schema_id", ["Autumn-campaign_2023", "productReview", "a", "A-1_b"])
def test_schema_id_with_voyado_charset_is_accepted(schema_id: str) -> None:
    assert parse_spec(MODEL, _raw(schema_id=schema_id)).schema_id == schema_id


def test_six_segmentable_properties_are_the_limit() -> None:
    props = {f"p{i}": {"add_to_segmentation": True} for i in range(6)}
    assert len(parse_spec(MODEL, _raw(properties=props)).properties) == 6


# ---- parse_spec: problems ----------------------------------------------------------------------


def test_unknown_keys_at_every_level_are_all_reported_at_once() -> None:
    raw = _raw(
        uniqe_key="review_id",
        contact={"column": "contact_id", "kee": "email"},
        properties={"rating": {"column": "rating", "tpye": "integer"}},
    )
    problems = _problems(raw)
    by_key = _by_key(problems)
    assert set(by_key) == {
        f"{ROOT}.uniqe_key",
        f"{ROOT}.contact.kee",
        f"{ROOT}.properties.rating.tpye",
    }
    assert all(p.model == MODEL for p in problems)
    # Each says what is allowed at that level, so the typo is easy to fix.
    assert "unique_key" in by_key[f"{ROOT}.uniqe_key"]
    assert "default_country" in by_key[f"{ROOT}.contact.kee"]
    assert "type" in by_key[f"{ROOT}.properties.rating.tpye"]
    assert "add_to_segmentation" in by_key[f"{ROOT}.properties.rating.tpye"]
    # The message the user sees names model and key for every problem.
    text = str(ConfigError(problems))
    assert text.startswith("3 configuration problems")
    assert f"model {MODEL}, key {ROOT}.contact.kee" in text


def test_every_missing_required_key_is_reported() -> None:
    problems = _problems({"display_name": "Reviews"})
    by_key = _by_key(problems)
    assert set(by_key) == {
        f"{ROOT}.schema_id",
        f"{ROOT}.unique_key",
        f"{ROOT}.contact",
        f"{ROOT}.properties",
    }
    assert all("required" in m for m in by_key.values())
    assert all(p.model == MODEL for p in problems)


def test_missing_contact_column_is_reported_under_contact() -> None:
    assert _by_key(_problems(_raw(contact={"key": "email"}))) == {
        f"{ROOT}.contact.column": "is required"
    }


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        ({"schema_id": "Höst-kampanj"}, "schema_id", "a-z, A-Z, 0-9, underscore and dash"),
        ({"schema_id": "product review"}, "schema_id", "a-z, A-Z, 0-9, underscore and dash"),
        (
            {"properties": {"rating": {"type": "float"}}},
            "properties.rating.type",
            "'string', 'number', 'integer' or 'boolean'",
        ),
        (
            {"properties": {"rating": {"format": "datetime"}}},
            "properties.rating.format",
            "date-time, date, email, uri",
        ),
        (
            {"contact": {"column": "c", "key": "phone"}},
            "contact.key",
            "'contactId', 'email', 'mobilePhone', 'customKey' or 'socialSecurityNumber'",
        ),
        (
            {"contact": {"column": "c", "default_country": "Sweden"}},
            "contact.default_country",
            "two-letter country code such as SE",
        ),
        (
            {"contact": {"column": "c", "default_country": "se"}},
            "contact.default_country",
            "two-letter country code such as SE",
        ),
        ({"properties": {}}, "properties", "at least one property"),
        ({"properties": {"2nd rating": "x"}}, "properties", "must start with a letter"),
        ({"unique_key": []}, "unique_key", "at least one column"),
        ({"unique_key": ["id", "id"]}, "unique_key", "lists a column twice"),
        (
            {"properties": {"rating": {"sort_order": -1}}},
            "properties.rating.sort_order",
            "greater than or equal to 0",
        ),
    ],
)
def test_invalid_value_names_key_and_what_is_allowed(
    overrides: dict[str, Any], key: str, says: str
) -> None:
    problems = _problems(_raw(**overrides))
    assert [(p.model, p.key) for p in problems] == [(MODEL, f"{ROOT}.{key}")]
    assert says in problems[0].message


def test_rejected_value_is_quoted_back() -> None:
    (problem,) = _problems(_raw(properties={"rating": {"type": "float"}}))
    assert "'float'" in problem.message


def test_seven_segmentable_properties_are_refused() -> None:
    props = {f"p{i}": {"add_to_segmentation": True} for i in range(7)}
    (problem,) = _problems(_raw(properties=props))
    assert problem.key == f"{ROOT}.properties"
    assert "7 properties" in problem.message and "at most 6" in problem.message
    assert "p6" in problem.message


def test_product_sku_must_be_a_string() -> None:
    (problem,) = _problems(_raw(properties={"productSku": {"type": "integer"}}))
    assert problem.key == f"{ROOT}.properties.productSku.type"
    assert "must be a string" in problem.message


def test_format_on_non_string_type_is_refused() -> None:
    (problem,) = _problems(_raw(properties={"rating": {"type": "integer", "format": "date-time"}}))
    assert problem.key == f"{ROOT}.properties.rating.format"
    assert "only applies to type string" in problem.message


def test_rule_problems_of_several_properties_are_reported_together() -> None:
    props: dict[str, Any] = {f"p{i}": {"add_to_segmentation": True} for i in range(7)}
    props["productSku"] = {"type": "number"}
    props["when"] = {"type": "boolean", "format": "date"}
    assert set(_by_key(_problems(_raw(properties=props)))) == {
        f"{ROOT}.properties",
        f"{ROOT}.properties.productSku.type",
        f"{ROOT}.properties.when.format",
    }


def test_structural_and_rule_problems_are_reported_in_one_go() -> None:
    props: dict[str, Any] = {f"p{i}": {"add_to_segmentation": True} for i in range(7)}
    assert set(_by_key(_problems(_raw(uniqe_key="x", properties=props)))) == {
        f"{ROOT}.uniqe_key",
        f"{ROOT}.properties",
    }


def test_non_mapping_block_is_refused() -> None:
    (problem,) = _problems(["schema_id", "x"])
    assert (problem.model, problem.key) == (MODEL, ROOT)
    assert "mapping" in problem.message


# ---- resolve: type inference -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column_type", "expected_type", "expected_format"),
    [
        ("INTEGER", "integer", None),
        ("BIGINT", "integer", None),
        ("HUGEINT", "integer", None),
        ("integer", "integer", None),
        ("DECIMAL(10,2)", "number", None),
        ("DECIMAL(10,0)", "integer", None),
        ("numeric", "number", None),
        ("numeric(12, 2)", "number", None),
        ("DOUBLE", "number", None),
        ("double precision", "number", None),
        ("REAL", "number", None),
        ("BOOLEAN", "boolean", None),
        ("VARCHAR", "string", None),
        ("character varying", "string", None),
        ("character varying(255)", "string", None),
        ("TEXT", "string", None),
        ("UUID", "string", None),
        ("TIMESTAMP", "string", "date-time"),
        ("TIMESTAMP WITH TIME ZONE", "string", "date-time"),
        ("timestamp without time zone", "string", "date-time"),
        ("timestamp with time zone", "string", "date-time"),
        ("DATE", "string", "date-time"),
    ],
)
def test_property_type_is_inferred_from_column_type(
    column_type: str, expected_type: str, expected_format: str | None
) -> None:
    model = _resolve({"value": "value"}, {**BASE_COLUMNS, "value": column_type})
    (prop,) = model.properties
    assert (prop.type, prop.format) == (expected_type, expected_format)
    assert prop.column_type == column_type


@pytest.mark.parametrize(
    "column_type",
    ["INTEGER[]", "VARCHAR[]", "STRUCT(a INTEGER)", "MAP(VARCHAR, INTEGER)", "JSON", "BLOB"],
)
def test_unsupported_column_type_names_column_and_suggests_cast(column_type: str) -> None:
    (problem,) = _resolve_problems({"tags": "tags"}, {**BASE_COLUMNS, "tags": column_type})
    assert problem.model == MODEL
    assert problem.key == f"{ROOT}.properties.tags"
    assert "'tags'" in problem.message and column_type in problem.message
    assert "cast(tags as varchar)" in problem.message


def test_all_unsupported_columns_are_reported_together() -> None:
    problems = _resolve_problems(
        {"a": "a", "b": "b", "ok": "ok"},
        {**BASE_COLUMNS, "a": "JSON", "b": "BLOB", "ok": "VARCHAR"},
    )
    assert [p.key for p in problems] == [f"{ROOT}.properties.a", f"{ROOT}.properties.b"]


def test_missing_columns_are_named_with_the_available_ones() -> None:
    problems = _resolve_problems(
        {"rating": {"column": "ratng"}, "title": "title"},
        {**BASE_COLUMNS, "rating": "INTEGER"},
        created_date="reviewed_at",
    )
    by_key = _by_key(problems)
    assert set(by_key) == {
        f"{ROOT}.properties.rating.column",
        f"{ROOT}.properties.title.column",
        f"{ROOT}.created_date",
    }
    message = by_key[f"{ROOT}.properties.rating.column"]
    assert "'ratng'" in message
    assert str(RELATION) in message
    assert "contact_id, rating, review_id" in message


def test_missing_key_and_contact_columns_are_reported() -> None:
    problems = _resolve_problems({"rating": "rating"}, {"rating": "INTEGER"})
    assert set(_by_key(problems)) == {f"{ROOT}.unique_key", f"{ROOT}.contact.column"}


@pytest.mark.parametrize(
    ("declared", "column_type"),
    [("boolean", "VARCHAR"), ("integer", "VARCHAR"), ("number", "BOOLEAN"), ("integer", "DATE")],
)
def test_declared_type_incompatible_with_column_is_refused(declared: str, column_type: str) -> None:
    (problem,) = _resolve_problems(
        {"flag": {"column": "v", "type": declared}}, {**BASE_COLUMNS, "v": column_type}
    )
    assert problem.key == f"{ROOT}.properties.flag.type"
    assert f"type {declared} does not fit column 'v' of type {column_type}" in problem.message


@pytest.mark.parametrize(
    ("declared", "column_type"),
    [("string", "INTEGER"), ("number", "INTEGER"), ("integer", "DOUBLE"), ("string", "BOOLEAN")],
)
def test_declared_type_that_the_column_converts_to_is_kept(declared: str, column_type: str) -> None:
    model = _resolve({"v": {"type": declared}}, {**BASE_COLUMNS, "v": column_type})
    assert model.properties[0].type == declared


def test_inferred_product_sku_must_be_a_string() -> None:
    (problem,) = _resolve_problems({"productSku": "sku"}, {**BASE_COLUMNS, "sku": "INTEGER"})
    assert "productSku" in problem.message and "set type: string" in problem.message


def test_columns_match_case_insensitively_and_keep_the_warehouse_spelling() -> None:
    model = _resolve(
        {"rating": "Rating", "title": {"column": "TITLE"}},
        {
            "REVIEW_ID": "INTEGER",
            "Contact_Id": "VARCHAR",
            "RATING": "INTEGER",
            "title": "TEXT",
            "Reviewed_At": "TIMESTAMP",
        },
        created_date="reviewed_AT",
    )
    assert model.unique_key == ("REVIEW_ID",)
    assert model.contact_column == "Contact_Id"
    assert model.created_date_column == "Reviewed_At"
    assert [(p.name, p.column) for p in model.properties] == [
        ("rating", "RATING"),
        ("title", "title"),
    ]


def test_defaults_are_applied() -> None:
    model = _resolve(
        {
            "productSku": {"column": "sku"},
            "purchase-timestamp": "bought_at",
            "store_id": {"column": "store", "sort_order": 10, "show_in_contact_card": False},
            "rating": {"display_name": "Stars", "add_to_segmentation": True, "required": True},
        },
        {
            **BASE_COLUMNS,
            "sku": "VARCHAR",
            "bought_at": "TIMESTAMP",
            "store": "INTEGER",
            "rating": "INTEGER",
        },
    )
    got = {
        p.name: (p.display_name, p.sort_order, p.show_in_contact_card, p.add_to_segmentation)
        for p in model.properties
    }
    assert got == {
        "productSku": ("Product sku", 0, True, False),
        "purchase-timestamp": ("Purchase timestamp", 1, True, False),
        "store_id": ("Store id", 10, False, False),
        "rating": ("Stars", 3, True, True),
    }
    assert model.display_name == "productReview"  # schema_id when no display_name is given
    assert model.contact_key == "contactId"


def test_columns_used_lists_each_column_once_in_order() -> None:
    model = _resolve(
        {"review": "review_id", "rating": "rating"},
        {**BASE_COLUMNS, "rating": "INTEGER", "reviewed_at": "TIMESTAMP"},
        created_date="reviewed_at",
    )
    assert model.columns_used == ("review_id", "contact_id", "reviewed_at", "rating")


# ---- schema_body -------------------------------------------------------------------------------


def test_schema_body_is_what_voyado_expects() -> None:
    model = _resolve(
        {
            "rating": {"column": "rating", "required": True, "add_to_segmentation": True},
            "reviewedAt": "reviewed_at",
            "verified": {"column": "verified", "show_in_contact_card": False},
        },
        {
            **BASE_COLUMNS,
            "rating": "INTEGER",
            "reviewed_at": "TIMESTAMP",
            "verified": "BOOLEAN",
        },
        display_name="Product review",
    )
    assert model.schema_body() == {
        "id": "productReview",
        "displayName": "Product review",
        "jsonSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "rating": {
                    "type": "integer",
                    "displayName": "Rating",
                    "showInContactCard": "true",
                    "addToSegmentation": "true",
                    "sortOrder": "0",
                },
                "reviewedAt": {
                    "type": "string",
                    "format": "date-time",
                    "displayName": "Reviewed at",
                    "showInContactCard": "true",
                    "addToSegmentation": "false",
                    "sortOrder": "1",
                },
                "verified": {
                    "type": "boolean",
                    "displayName": "Verified",
                    "showInContactCard": "false",
                    "addToSegmentation": "false",
                    "sortOrder": "2",
                },
            },
            "required": ["rating"],
        },
    }


def test_schema_body_has_no_required_list_when_nothing_is_required() -> None:
    model = _resolve({"rating": "rating"}, {**BASE_COLUMNS, "rating": "INTEGER"})
    assert "required" not in model.schema_body()["jsonSchema"]


# ---- check_project_rules -----------------------------------------------------------------------


def _spec(schema_id: str, properties: dict[str, Any] | None = None) -> VoyadoSpec:
    return parse_spec(MODEL, _raw(schema_id=schema_id, properties=properties or {"r": "r"}))


def test_fifteen_schemas_are_allowed_sixteen_refused() -> None:
    fifteen = [(f"m{i}", _spec(f"schema{i}")) for i in range(15)]
    assert check_project_rules(fifteen) == []
    (problem,) = check_project_rules([*fifteen, ("m15", _spec("schema15"))])
    assert "16 interaction schemas" in problem.message
    assert "at most 15" in problem.message


def test_same_schema_in_two_models_with_different_properties_is_refused() -> None:
    problems = check_project_rules(
        [
            ("reviews_se", _spec("productReview", {"rating": {"type": "integer"}})),
            ("reviews_no", _spec("productReview", {"rating": {"type": "number"}})),
        ]
    )
    assert [(p.model, p.key) for p in problems] == [("reviews_no", f"{ROOT}.schema_id")]
    assert "reviews_se" in problems[0].message and "'productReview'" in problems[0].message


def test_same_schema_with_same_properties_from_other_columns_is_allowed() -> None:
    assert (
        check_project_rules(
            [
                ("reviews_se", _spec("productReview", {"rating": {"column": "stars"}})),
                ("reviews_no", _spec("productReview", {"rating": {"column": "score"}})),
            ]
        )
        == []
    )


def test_same_schema_with_shorthand_properties_from_other_columns_is_allowed() -> None:
    assert (
        check_project_rules(
            [
                ("reviews_se", _spec("productReview", {"rating": "stars"})),
                ("reviews_no", _spec("productReview", {"rating": "score"})),
            ]
        )
        == []
    )


@pytest.mark.parametrize("column_type", ["DECIMAL(10,2)", "numeric(12, 4)", "NUMBER(38,2)"])
def test_integer_on_a_column_with_decimal_places_is_refused(column_type: str) -> None:
    (problem,) = _resolve_problems(
        {"cost": {"column": "cost", "type": "integer"}}, {**BASE_COLUMNS, "cost": column_type}
    )
    assert problem.model == MODEL
    assert problem.key == f"{ROOT}.properties.cost.type"
    assert column_type in problem.message and "decimal place" in problem.message
    assert "type number" in problem.message


@pytest.mark.parametrize("column_type", ["DECIMAL(10,0)", "numeric(12)", "NUMBER(38,0)", "BIGINT"])
def test_integer_on_a_whole_number_column_is_kept(column_type: str) -> None:
    model = _resolve({"cost": {"type": "integer"}}, {**BASE_COLUMNS, "cost": column_type})
    assert model.properties[0].type == "integer"


def test_decimal_places_number_on_a_decimal_column_is_kept() -> None:
    model = _resolve({"cost": "cost"}, {**BASE_COLUMNS, "cost": "DECIMAL(10,2)"})
    assert model.properties[0].type == "number"
