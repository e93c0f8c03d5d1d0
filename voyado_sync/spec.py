"""The ``meta.voyado`` block of a dbt model: parsing, Voyado's rules, and the schema it implies.

Pure: no I/O. Parsing happens in two steps because a property's type may be inferred from the
column's type in the warehouse:

1. :func:`parse_spec` turns the raw YAML dict into a :class:`VoyadoSpec`, collecting every
   problem (unknown keys, wrong types, Voyado's charset and limits) at once.
2. :func:`resolve` combines the spec with the model's columns into an :class:`InteractionModel`,
   the fully typed description the engine works from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voyado_sync.exceptions import ConfigError, ConfigProblem

PropertyType = Literal["string", "number", "integer", "boolean"]
ContactKey = Literal["contactId", "email", "mobilePhone", "customKey", "socialSecurityNumber"]

PROPERTY_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean")
CONTACT_KEYS: tuple[str, ...] = (
    "contactId",
    "email",
    "mobilePhone",
    "customKey",
    "socialSecurityNumber",
)
FORMATS: tuple[str, ...] = ("date-time", "date", "email", "uri")
SCHEMA_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
PROPERTY_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_SCHEMAS = 15
MAX_SEGMENTABLE = 6
RESERVED_SKU = "productSku"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
META_ROOT = "config.meta.voyado"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class PropertySpec(_Strict):
    """A full property spec: ``properties.<name>: {column: ..., type: ..., ...}``."""

    column: str | None = None
    type: PropertyType | None = None
    format: str | None = None
    display_name: str | None = None
    show_in_contact_card: bool = True
    add_to_segmentation: bool = False
    sort_order: int | None = Field(default=None, ge=0)
    required: bool = False

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in FORMATS:
            raise ValueError(f"must be one of {', '.join(FORMATS)}")
        return value


class ContactSpec(_Strict):
    """``contact:``: which column identifies the Voyado contact, and how."""

    column: str
    key: ContactKey = "contactId"
    default_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    not_found_retry_days: int = Field(default=7, ge=0)


class SinceSpec(_Strict):
    """``first_run: {since: DATE}``: rows created at or after it are sent, earlier ones
    baselined."""

    since: datetime | date


SyncMode = Literal["append", "mirror"]
FirstRunChoice = Literal["backfill", "baseline"]
FIRST_RUN_CHOICES = ("backfill", "baseline")
FIRST_RUN_HELP = "backfill, baseline or {since: DATE} (an ISO date or timestamp)"


class VoyadoSpec(_Strict):
    """The whole ``config.meta.voyado`` block of one model, as written."""

    schema_id: str
    display_name: str | None = None
    unique_key: str | list[str]
    contact: ContactSpec
    created_date: str | None = None
    properties: dict[str, str | PropertySpec]
    #: What the first sync of this schema_id sends (None: ask, through the first-run guard).
    first_run: FirstRunChoice | SinceSpec | None = None
    #: append never deletes; mirror keeps Voyado holding exactly the model's rows.
    mode: SyncMode = "append"

    @field_validator("schema_id")
    @classmethod
    def _schema_id_charset(cls, value: str) -> str:
        if not SCHEMA_ID_RE.match(value):
            raise ValueError(
                f"{value!r} may only contain a-z, A-Z, 0-9, underscore and dash (Voyado's rule)"
            )
        return value

    @field_validator("unique_key")
    @classmethod
    def _non_empty_key(cls, value: str | list[str]) -> str | list[str]:
        columns = [value] if isinstance(value, str) else value
        if not columns or any(not c for c in columns):
            raise ValueError("needs at least one column name")
        if len(set(columns)) != len(columns):
            raise ValueError("lists a column twice")
        return value

    @field_validator("properties")
    @classmethod
    def _property_names(cls, value: dict[str, str | PropertySpec]) -> dict[str, Any]:
        if not value:
            raise ValueError("needs at least one property")
        bad = [name for name in value if not PROPERTY_NAME_RE.match(name)]
        if bad:
            raise ValueError(
                f"property name(s) {', '.join(map(repr, bad))} must start with a letter or "
                "underscore and contain only letters, digits, underscore and dash"
            )
        return value

    @field_validator("first_run", mode="before")
    @classmethod
    def _first_run_shape(cls, value: object) -> object:
        if value is None or value in FIRST_RUN_CHOICES:
            return value
        if isinstance(value, Mapping) and set(value) == {"since"}:
            since = value["since"]
            if isinstance(since, date):
                return value
            try:
                parse_first_run(f"since:{since}")
            except ValueError:
                raise ValueError(
                    f"since must be an ISO date or timestamp such as 2026-11-01 (got {since!r})"
                ) from None
            return value
        raise ValueError(f"must be {FIRST_RUN_HELP} (got {value!r})")

    @property
    def unique_key_columns(self) -> tuple[str, ...]:
        return (self.unique_key,) if isinstance(self.unique_key, str) else tuple(self.unique_key)


@dataclass(frozen=True)
class FirstRun:
    """What a model's first sync for its ``schema_id`` sends: ``backfill`` (every row),
    ``baseline`` (none: every current row is recorded ``baselined``) or ``since`` (rows whose
    createdDate is at or after ``since``, an instant as Voyado writes it; earlier ones
    baselined)."""

    policy: Literal["backfill", "baseline", "since"]
    since: str | None = None

    def __str__(self) -> str:
        return f"since:{self.since}" if self.policy == "since" else self.policy


def instant(value: date | datetime) -> str:
    """A date (midnight UTC) or timestamp (naive: UTC) as Voyado writes instants."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0), tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_first_run(text: str) -> FirstRun:
    """``backfill``, ``baseline`` or ``since:DATE`` (``--first-run``); ValueError otherwise."""
    raw = text.strip()
    if raw in FIRST_RUN_CHOICES:
        return FirstRun(raw)  # type: ignore[arg-type]
    if raw.startswith("since:"):
        stamp = raw.removeprefix("since:").strip()
        try:
            moment: date | datetime = (
                date.fromisoformat(stamp) if len(stamp) == 10 else datetime.fromisoformat(stamp)
            )
        except ValueError:
            raise ValueError(
                f"since:{stamp}: not an ISO date or timestamp (e.g. since:2026-11-01)"
            ) from None
        return FirstRun("since", instant(moment))
    raise ValueError(f"must be backfill, baseline or since:DATE (got {text!r})")


def first_run_of(spec: VoyadoSpec) -> FirstRun | None:
    if spec.first_run is None:
        return None
    if isinstance(spec.first_run, SinceSpec):
        return FirstRun("since", instant(spec.first_run.since))
    return FirstRun(spec.first_run)


_ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    "": tuple(VoyadoSpec.model_fields),
    "contact": tuple(ContactSpec.model_fields),
    "property": tuple(PropertySpec.model_fields),
    "first_run": tuple(SinceSpec.model_fields),
}


_UNION_ARMS = ("str", "PropertySpec", "list[str]", "SinceSpec")


def _key_path(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in _UNION_ARMS]
    return ".".join([META_ROOT, *parts])


def _explain(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    loc = [p for p in error.get("loc", ()) if p not in _UNION_ARMS]
    if kind == "extra_forbidden":
        scope = "property" if loc and loc[0] == "properties" else (loc[0] if len(loc) > 1 else "")
        allowed = _ALLOWED_KEYS.get(str(scope), _ALLOWED_KEYS[""])
        return f"unknown key {loc[-1]!r}; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected} (got {error.get('input')!r})"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error.get("msg", "")))
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "default_country":
        return (
            f"must be an ISO 3166 two-letter country code such as SE (got {error.get('input')!r})"
        )
    return f"{error.get('msg', 'is invalid')} (got {error.get('input')!r})"


def parse_spec(model: str, raw: object) -> VoyadoSpec:
    """Parse one model's ``meta.voyado`` dict; raise ConfigError listing every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [ConfigProblem(f"must be a mapping, got {type(raw).__name__}", model, META_ROOT)]
        )
    try:
        spec = VoyadoSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems: list[ConfigProblem] = []
        seen: set[tuple[str, str]] = set()
        for err in exc.errors():
            # A shorthand-or-full property reports one error per union arm; keep the useful one.
            loc = tuple(err.get("loc", ()))
            if "str" in loc and err["type"] in ("string_type",):
                continue
            item = (_key_path(loc), _explain(err))
            if item not in seen:
                seen.add(item)
                problems.append(ConfigProblem(item[1], model, item[0]))
        # Voyado's limits are checked on the raw block too, so one typo does not hide them.
        problems.extend(_raw_rules(model, raw))
        raise ConfigError(problems) from None
    _check_rules(model, spec)
    return spec


def _raw_rules(model: str, raw: Mapping[str, Any]) -> list[ConfigProblem]:
    properties = raw.get("properties")
    if not isinstance(properties, Mapping):
        return []
    segmentable = [
        str(name)
        for name, prop in properties.items()
        if isinstance(prop, Mapping) and prop.get("add_to_segmentation") is True
    ]
    if len(segmentable) <= MAX_SEGMENTABLE:
        return []
    return [_too_many_segmentable(model, segmentable)]


def _too_many_segmentable(model: str, names: list[str]) -> ConfigProblem:
    return ConfigProblem(
        f"{len(names)} properties have add_to_segmentation: true ({', '.join(names)}); Voyado "
        f"allows at most {MAX_SEGMENTABLE} per schema",
        model,
        f"{META_ROOT}.properties",
    )


def _check_rules(model: str, spec: VoyadoSpec) -> None:
    problems: list[ConfigProblem] = []
    segmentable = [
        name
        for name, prop in spec.properties.items()
        if isinstance(prop, PropertySpec) and prop.add_to_segmentation
    ]
    if len(segmentable) > MAX_SEGMENTABLE:
        problems.append(_too_many_segmentable(model, segmentable))
    if isinstance(spec.first_run, SinceSpec) and not spec.created_date:
        problems.append(
            ConfigProblem(
                "first_run since needs created_date: without it a row's createdDate is the "
                "time it is sent, so no row is older than the date",
                model,
                f"{META_ROOT}.first_run.since",
            )
        )
    for name, prop in spec.properties.items():
        if isinstance(prop, PropertySpec) and prop.format and prop.type not in (None, "string"):
            problems.append(
                ConfigProblem(
                    f"format {prop.format!r} only applies to type string, not {prop.type}",
                    model,
                    f"{META_ROOT}.properties.{name}.format",
                )
            )
        if (
            name == RESERVED_SKU
            and isinstance(prop, PropertySpec)
            and prop.type not in (None, "string")
        ):
            problems.append(
                ConfigProblem(
                    f"{RESERVED_SKU} is Voyado's reserved product property and must be a string",
                    model,
                    f"{META_ROOT}.properties.{name}.type",
                )
            )
    if problems:
        raise ConfigError(problems)


# ---------------------------------------------------------------------------------------------
# Resolution against the model's columns
# ---------------------------------------------------------------------------------------------

_INTEGER_TYPES = re.compile(
    r"^(u?tinyint|u?smallint|u?integer|u?int|u?bigint|u?hugeint|int[1248]|long|short|byte"
    r"|serial|bigserial|smallserial|int64|integer\(.*\))$"
)
_FLOAT_TYPES = re.compile(r"^(float[48]?|double( precision)?|real|float64|numeric|decimal|number)$")
_DECIMAL = re.compile(r"^(decimal|numeric|number)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")
_BOOL_TYPES = re.compile(r"^(bool|boolean)$")
_STRING_TYPES = re.compile(
    r"^(varchar|text|string|char|bpchar|character( varying)?|nvarchar|nchar|uuid|enum|name"
    r"|citext)(\s*\(.*\))?$"
)
_DATETIME_TYPES = re.compile(
    r"^(timestamp|timestamptz|datetime|date|timestamp_[a-z]+|timestamp\s*\(\d\)"
    r"|timestamp( \(\d\))? with(out)? time zone)( with(out)? time zone)?$"
)
_UNSUPPORTED = re.compile(
    r"(\[\]|^struct|^map|^list|^array|^json|^jsonb|^blob|^bytea|^binary|^varbinary|^bytes"
    r"|^union|^variant|^object|^geography|^geometry|^interval|^bit)"
)


@dataclass(frozen=True)
class InferredType:
    """A column type mapped onto Voyado's four scalar types."""

    type: str
    format: str | None = None


def infer_type(data_type: str) -> InferredType | None:
    """Map a warehouse column type to a Voyado property type; None when Voyado cannot hold it."""
    t = " ".join(data_type.strip().lower().split())
    if _UNSUPPORTED.search(t):
        return None
    if _INTEGER_TYPES.match(t):
        return InferredType("integer")
    decimal = _DECIMAL.match(t)
    if decimal:
        scale = int(decimal.group(3) or 0)
        return InferredType("integer" if scale == 0 and decimal.group(1) != "number" else "number")
    if _FLOAT_TYPES.match(t):
        return InferredType("number")
    if _BOOL_TYPES.match(t):
        return InferredType("boolean")
    if _DATETIME_TYPES.match(t):
        return InferredType("string", "date-time")
    if t == "time" or t.startswith("time "):
        return InferredType("string")
    if _STRING_TYPES.match(t):
        return InferredType("string")
    return None


def decimal_places(data_type: str) -> int:
    """The scale of ``decimal(p, s)`` / ``numeric(p, s)`` / ``number(p, s)``; 0 otherwise."""
    match = _DECIMAL.match(" ".join(data_type.strip().lower().split()))
    return int(match.group(3) or 0) if match else 0


# Which declared types a column of a given inferred type can be converted to without guessing.
_COMPATIBLE: dict[str, set[str]] = {
    "integer": {"integer", "number", "string"},
    "number": {"number", "integer", "string"},
    "boolean": {"boolean", "string"},
    "string": {"string"},
}


@dataclass(frozen=True)
class ResolvedProperty:
    """One payload property with every default applied."""

    name: str
    column: str
    type: str
    format: str | None
    display_name: str
    show_in_contact_card: bool
    add_to_segmentation: bool
    sort_order: int
    required: bool
    column_type: str

    def json_schema(self) -> dict[str, Any]:
        """The property as Voyado expects it (metadata as strings, like Voyado's examples)."""
        out: dict[str, Any] = {"type": self.type}
        if self.format:
            out["format"] = self.format
        out["displayName"] = self.display_name
        out["showInContactCard"] = "true" if self.show_in_contact_card else "false"
        out["addToSegmentation"] = "true" if self.add_to_segmentation else "false"
        out["sortOrder"] = str(self.sort_order)
        return out


@dataclass(frozen=True)
class Relation:
    """A warehouse relation, database.schema.identifier (dbt's vocabulary)."""

    database: str | None
    schema: str
    identifier: str
    #: The manifest's ``relation_name``: dbt's rendering under the adapter's quoting policy,
    #: which is how the warehouse knows the relation (None for a relation built by hand).
    rendered: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return ".".join(p for p in (self.database, self.schema, self.identifier) if p)


@dataclass(frozen=True)
class InteractionModel:
    """A dbt model whose rows are Voyado interactions, fully resolved."""

    model: str
    unique_id: str
    relation: Relation
    schema_id: str
    display_name: str
    unique_key: tuple[str, ...]
    contact_column: str
    contact_key: str
    default_country: str | None
    not_found_retry_days: int
    created_date_column: str | None
    properties: tuple[ResolvedProperty, ...]
    column_types: dict[str, str] = field(default_factory=dict)
    #: ``append`` (never deletes) or ``mirror`` (rows that leave, or change, are deleted).
    mode: str = "append"
    #: The first sync's policy from the YAML (None: the first-run guard decides).
    first_run: FirstRun | None = None
    #: The ``jsonSchema`` Voyado holds for ``schema_id``, once the schema gate has read it:
    #: payloads are validated against it as well as against the one generated here.
    stored_json_schema: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def mirror(self) -> bool:
        return self.mode == "mirror"

    def schema_body(self) -> dict[str, Any]:
        """The body of ``POST /api/v3/interactionschemas`` for this model."""
        json_schema: dict[str, Any] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": {p.name: p.json_schema() for p in self.properties},
        }
        required = [p.name for p in self.properties if p.required]
        if required:
            json_schema["required"] = required
        return {"id": self.schema_id, "displayName": self.display_name, "jsonSchema": json_schema}

    @property
    def columns_used(self) -> tuple[str, ...]:
        """Every column the sync reads, each once, in a stable order."""
        seen: dict[str, None] = {}
        for col in (
            *self.unique_key,
            self.contact_column,
            *([self.created_date_column] if self.created_date_column else []),
            *(p.column for p in self.properties),
        ):
            seen.setdefault(col, None)
        return tuple(seen)


def display_name_for(name: str) -> str:
    """``productSku`` -> ``Product sku``; ``purchase-timestamp`` -> ``Purchase timestamp``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    text = " ".join(words.split()).lower()
    return text[:1].upper() + text[1:]


def resolve(
    *,
    model: str,
    unique_id: str,
    relation: Relation,
    spec: VoyadoSpec,
    columns: Mapping[str, str],
) -> InteractionModel:
    """Apply defaults and infer types from ``columns`` (name -> warehouse type).

    Column names are matched case-insensitively, as most warehouses fold them. Every problem
    is collected and raised together as one ConfigError.
    """
    by_lower = {name.lower(): (name, dtype) for name, dtype in columns.items()}
    problems: list[ConfigProblem] = []

    def column(name: str, key: str) -> tuple[str, str] | None:
        found = by_lower.get(name.lower())
        if found is None:
            available = ", ".join(sorted(columns)) or "none"
            problems.append(
                ConfigProblem(
                    f"column {name!r} does not exist in {relation} (columns: {available})",
                    model,
                    key,
                )
            )
        return found

    key_cols: list[str] = []
    for col in spec.unique_key_columns:
        found = column(col, f"{META_ROOT}.unique_key")
        if found:
            key_cols.append(found[0])
            if infer_type(found[1]) is None:
                problems.append(
                    ConfigProblem(
                        f"unique key column {found[0]!r} has type {found[1]}, which cannot "
                        "identify a row; cast it to a string or integer in the model",
                        model,
                        f"{META_ROOT}.unique_key",
                    )
                )
    contact = column(spec.contact.column, f"{META_ROOT}.contact.column")
    if contact and (infer_type(contact[1]) or InferredType("")).type not in ("string", "integer"):
        problems.append(
            ConfigProblem(
                f"contact column {contact[0]!r} has type {contact[1]}; it must hold text",
                model,
                f"{META_ROOT}.contact.column",
            )
        )
    created: tuple[str, str] | None = None
    if spec.created_date:
        created = column(spec.created_date, f"{META_ROOT}.created_date")
        if created:
            inferred = infer_type(created[1])
            if inferred is None or (inferred.format != "date-time" and inferred.type != "string"):
                problems.append(
                    ConfigProblem(
                        f"created_date column {created[0]!r} has type {created[1]}; it must be "
                        "a timestamp or date (or an ISO 8601 string)",
                        model,
                        f"{META_ROOT}.created_date",
                    )
                )

    resolved: list[ResolvedProperty] = []
    for position, (name, raw) in enumerate(spec.properties.items()):
        prop = PropertySpec(column=raw) if isinstance(raw, str) else raw
        key = f"{META_ROOT}.properties.{name}"
        found = column(prop.column or name, f"{key}.column" if prop.column else key)
        if not found:
            continue
        col_name, col_type = found
        inferred = infer_type(col_type)
        if inferred is None:
            problems.append(
                ConfigProblem(
                    f"column {col_name!r} has type {col_type}, which Voyado cannot hold (only "
                    "string, number, integer, boolean; no lists, structs, maps, JSON or blobs): "
                    f"cast it in the model, for example cast({col_name} as varchar)",
                    model,
                    key,
                )
            )
            continue
        ptype = prop.type or inferred.type
        if ptype not in _COMPATIBLE.get(inferred.type, set()):
            problems.append(
                ConfigProblem(
                    f"type {ptype} does not fit column {col_name!r} of type {col_type}: cast the "
                    "column in the model or change the property type",
                    model,
                    f"{key}.type",
                )
            )
            continue
        places = decimal_places(col_type)
        if ptype == "integer" and places:
            # Voyado cannot change a schema once created: refuse before one is, instead of
            # rejecting every row with a fraction afterwards.
            problems.append(
                ConfigProblem(
                    f"type integer does not fit column {col_name!r} of type {col_type}: it has "
                    f"{places} decimal place(s), so every row with a fraction would be rejected "
                    "and the schema cannot be changed once created; use type number, or cast "
                    f"the column in the model (cast({col_name} as integer))",
                    model,
                    f"{key}.type",
                )
            )
            continue
        fmt = prop.format
        if fmt is None and ptype == "string" and inferred.format:
            fmt = inferred.format
        if name == RESERVED_SKU and ptype != "string":
            problems.append(
                ConfigProblem(
                    f"{RESERVED_SKU} is Voyado's reserved product property and must be a string; "
                    f"column {col_name!r} is {col_type}: set type: string",
                    model,
                    key,
                )
            )
        resolved.append(
            ResolvedProperty(
                name=name,
                column=col_name,
                type=ptype,
                format=fmt,
                display_name=prop.display_name or display_name_for(name),
                show_in_contact_card=prop.show_in_contact_card,
                add_to_segmentation=prop.add_to_segmentation,
                sort_order=prop.sort_order if prop.sort_order is not None else position,
                required=prop.required,
                column_type=col_type,
            )
        )
    if problems:
        raise ConfigError(problems)
    assert contact is not None
    return InteractionModel(
        model=model,
        unique_id=unique_id,
        relation=relation,
        schema_id=spec.schema_id,
        display_name=spec.display_name or spec.schema_id,
        unique_key=tuple(key_cols),
        contact_column=contact[0],
        contact_key=spec.contact.key,
        default_country=spec.contact.default_country,
        not_found_retry_days=spec.contact.not_found_retry_days,
        created_date_column=created[0] if created else None,
        properties=tuple(resolved),
        column_types={name: dtype for name, dtype in columns.items()},
        mode=spec.mode,
        first_run=first_run_of(spec),
    )


def check_project_rules(models: Sequence[tuple[str, VoyadoSpec]]) -> list[ConfigProblem]:
    """Rules across models: the 15-schema budget and one definition per schema id."""
    problems: list[ConfigProblem] = []
    by_schema: dict[str, list[str]] = {}
    for model, spec in models:
        by_schema.setdefault(spec.schema_id, []).append(model)
    if len(by_schema) > MAX_SCHEMAS:
        problems.append(
            ConfigProblem(
                f"the project declares {len(by_schema)} interaction schemas "
                f"({', '.join(sorted(by_schema))}); Voyado allows at most {MAX_SCHEMAS} per "
                "environment"
            )
        )
    specs = dict(models)
    for schema_id, names in by_schema.items():
        if len(names) > 1:
            first = specs[names[0]]
            for other in names[1:]:
                if _shape(specs[other]) != _shape(first):
                    problems.append(
                        ConfigProblem(
                            f"schema_id {schema_id!r} is also used by model {names[0]} with "
                            "different properties; one schema id needs one definition",
                            other,
                            f"{META_ROOT}.schema_id",
                        )
                    )
    return problems


def _shape(spec: VoyadoSpec) -> dict[str, Any]:
    # The columns may differ between models; the schema they imply must not.
    return {
        name: (PropertySpec() if isinstance(raw, str) else raw).model_dump(exclude={"column"})
        for name, raw in spec.properties.items()
    } | {"__display_name": spec.display_name}
