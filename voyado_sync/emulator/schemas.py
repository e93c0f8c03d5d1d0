"""Voyado's interaction-schema rules and the check of one interaction against a schema.

The rules come from Voyado's interactions page: an id of ``[A-Za-z0-9_-]``, draft 2020-12,
a flat object of string/number/integer/boolean properties, string-valued metadata, at most six
segmentable properties. The payload check is a real JSON Schema validation (with ``date-time``
checked through rfc3339-validator), limited to the keywords that describe properties, because
that is what Engage enforces before it silently ignores an interaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMAS = 15
MAX_SEGMENTABLE = 6
SCALAR_TYPES = ("string", "number", "integer", "boolean")

_SCHEMA_ID = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]+")
# Keywords that would describe a nested structure; Engage supports one level only.
_NESTING_KEYWORDS = (
    "properties",
    "items",
    "prefixItems",
    "additionalProperties",
    "patternProperties",
)
# References and combinators could smuggle in nested or non-scalar structures (and a $ref
# would need a resolver); Voyado's format has no use for them.
_COMPOSITION_KEYWORDS = ("$ref", "$dynamicRef", "allOf", "anyOf", "oneOf", "not", "if", "then")
_FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER


class SchemaRuleError(ValueError):
    """A posted interaction schema breaks one of Voyado's rules; the message names it."""


@dataclass(frozen=True)
class InteractionSchema:
    """An accepted schema: what was posted, plus the validator built from it."""

    id: str
    display_name: str
    json_schema: dict[str, Any]
    created: str
    validator: Any  # jsonschema has no type hints

    @property
    def property_names(self) -> frozenset[str]:
        return frozenset(self.json_schema["properties"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.display_name, "jsonSchema": self.json_schema}


def now_iso() -> str:
    """The current time as Engage writes it: UTC, milliseconds, ``Z``."""
    return format_timestamp(datetime.now(UTC))


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def normalise_date_time(value: object) -> str | None:
    """An RFC 3339 date-time as UTC with milliseconds and ``Z``; None when it is not one.

    RFC 3339 demands an offset, so ``2024-03-01T10:00:00`` (local time of unknown zone) is
    refused rather than guessed.
    """
    if not isinstance(value, str) or not _FORMAT_CHECKER.conforms(value, "date-time"):
        return None
    try:
        # fromisoformat wants upper-case separators; RFC 3339 allows "t" and "z" too.
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:  # e.g. a leap second, which RFC 3339 allows and Python does not
        return None
    if parsed.tzinfo is None:
        return None
    return format_timestamp(parsed)


def parse_schema(body: object, *, created: str) -> InteractionSchema:
    """Check a POST /api/v3/interactionschemas body against Voyado's rules.

    Raises SchemaRuleError with a message naming the first broken rule (and the property).
    """
    if not isinstance(body, dict):
        raise SchemaRuleError("the body must be a JSON object with id, displayName and jsonSchema")
    schema_id = body.get("id")
    if not isinstance(schema_id, str) or not schema_id:
        raise SchemaRuleError("id is required and must be a non-empty string")
    if not _SCHEMA_ID.fullmatch(schema_id):
        raise SchemaRuleError(
            f"id {schema_id!r} may only contain a-z, A-Z, 0-9, underscore (_) and dash (-)"
        )
    display_name = body.get("displayName")
    if not isinstance(display_name, str) or not display_name.strip():
        raise SchemaRuleError("displayName is required and must be a non-empty string")
    json_schema = body.get("jsonSchema")
    if not isinstance(json_schema, dict):
        raise SchemaRuleError("jsonSchema is required and must be an object")
    if json_schema.get("$schema") != DRAFT_2020_12:
        raise SchemaRuleError(f"jsonSchema.$schema must be {DRAFT_2020_12!r}")
    if json_schema.get("type") != "object":
        raise SchemaRuleError('jsonSchema.type must be "object"')
    properties = json_schema.get("properties")
    if not isinstance(properties, dict):
        raise SchemaRuleError("jsonSchema.properties is required and must be an object")
    segmentable = 0
    for name, spec in properties.items():
        if _check_property(name, spec):
            segmentable += 1
    if segmentable > MAX_SEGMENTABLE:
        raise SchemaRuleError(
            f'{segmentable} properties have addToSegmentation "true"; '
            f"a schema may have at most {MAX_SEGMENTABLE}"
        )
    required = json_schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaRuleError("jsonSchema.required must be a list of property names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise SchemaRuleError(f"jsonSchema.required names unknown properties: {unknown}")
    if len(set(required)) != len(required):
        raise SchemaRuleError("jsonSchema.required lists a property twice")
    # Validate payloads against the property definitions only: the metadata keywords
    # (displayName, sortOrder...) are annotations that a validator ignores anyway.
    validation_schema = {"type": "object", "properties": properties, "required": required}
    try:
        Draft202012Validator.check_schema(validation_schema)
    except SchemaError as e:
        raise SchemaRuleError(f"jsonSchema is not a valid JSON Schema: {e.message}") from e
    validator = Draft202012Validator(validation_schema, format_checker=_FORMAT_CHECKER)
    return InteractionSchema(
        id=schema_id,
        display_name=display_name,
        json_schema=json_schema,
        created=created,
        validator=validator,
    )


def _check_property(name: str, spec: object) -> bool:
    """Raise SchemaRuleError if the property breaks a rule; return whether it is segmentable."""
    where = f"property {name!r}"
    if not name:
        raise SchemaRuleError("property names must not be empty")
    if not isinstance(spec, dict):
        raise SchemaRuleError(f"{where} must be an object")
    kind = spec.get("type")
    if kind not in SCALAR_TYPES:
        raise SchemaRuleError(
            f"{where} has type {kind!r}; only {', '.join(SCALAR_TYPES)} are allowed "
            "(no objects, arrays or nesting)"
        )
    nested = [k for k in _NESTING_KEYWORDS if k in spec]
    if nested:
        raise SchemaRuleError(f"{where} must not be nested (found {', '.join(nested)})")
    composed = [k for k in _COMPOSITION_KEYWORDS if k in spec]
    if composed:
        raise SchemaRuleError(f"{where} must be a plain scalar (found {', '.join(composed)})")
    fmt = spec.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise SchemaRuleError(f"{where}: format must be a string")
    display_name = spec.get("displayName")
    if not isinstance(display_name, str) or not display_name.strip():
        raise SchemaRuleError(f"{where}: displayName is required and must be a non-empty string")
    # Voyado documents the metadata as strings ("true", "0") in every example; a client that
    # sends JSON booleans or numbers is relying on undocumented leniency.
    for flag in ("showInContactCard", "addToSegmentation"):
        if flag in spec and spec[flag] not in ("true", "false"):
            raise SchemaRuleError(f'{where}: {flag} must be the string "true" or "false"')
    if "sortOrder" in spec:
        order = spec["sortOrder"]
        if not isinstance(order, str) or not _DIGITS.fullmatch(order):
            raise SchemaRuleError(f'{where}: sortOrder must be a string of digits such as "0"')
    return bool(spec.get("addToSegmentation") == "true")


@dataclass(frozen=True)
class PayloadCheck:
    """The outcome of checking one payload: what Engage keeps, or why it ignores it."""

    payload: dict[str, Any]
    dropped: tuple[str, ...]
    reason: str | None  # None: valid
    errors: tuple[str, ...] = ()


def check_payload(schema: InteractionSchema, payload: Mapping[str, Any]) -> PayloadCheck:
    """Drop properties the schema does not define, then validate what remains."""
    known = schema.property_names
    kept = {k: v for k, v in payload.items() if k in known}
    dropped = tuple(k for k in payload if k not in known)
    errors = sorted(schema.validator.iter_errors(kept), key=lambda e: list(e.path))
    if not errors:
        return PayloadCheck(payload=kept, dropped=dropped, reason=None)
    messages = tuple(_describe(e, kept) for e in errors)
    details = tuple(str(e.message) for e in errors)
    return PayloadCheck(payload=kept, dropped=dropped, reason=messages[0], errors=details)


def _describe(error: Any, payload: Mapping[str, Any]) -> str:
    # A short reason without the offending value, so that equal problems group together in the
    # summary; the full jsonschema message (with the value) is kept next to it.
    prop = str(error.path[0]) if error.path else None
    keyword = error.validator
    if keyword == "required":
        missing = [r for r in error.validator_value if r not in payload]
        return f"required property {missing[0]!r} is missing" if missing else "required"
    if keyword == "type" and prop is not None:
        return f"property {prop!r} must be of type {error.validator_value}"
    if keyword == "format" and prop is not None:
        return f"property {prop!r} must be a valid {error.validator_value}"
    if prop is not None:
        return f"property {prop!r} fails {keyword}"
    return str(keyword)
