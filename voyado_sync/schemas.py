"""Comparing the interaction schema a model implies with the one stored in Voyado. Pure.

Voyado has no update: any difference means delete and re-create (which deletes every stored
interaction of the schema) or a new schema id. Each change is classified so the user sees the
safe way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMPATIBLE = "compatible"
NEW_ID = "needs a new schema id"
INCOMPATIBLE = "incompatible"
_META = ("displayName", "showInContactCard", "addToSegmentation", "sortOrder")
#: The keywords voyado-sync writes and understands, per property and for the whole schema.
#: Any other keyword Voyado holds (``maxLength``, ``enum``, ``pattern``, ``minimum``, ...) may
#: make Voyado ignore rows voyado-sync thinks valid: it is drift, never passed over.
PROPERTY_KEYWORDS = frozenset({"type", "format", *_META})
SCHEMA_KEYWORDS = frozenset({"$schema", "type", "properties", "required"})


@dataclass(frozen=True)
class Change:
    """One difference between the generated schema and Voyado's."""

    property: str | None
    # added | removed | type changed | metadata changed | display name | required |
    # unknown keyword
    kind: str
    detail: str
    classification: str

    def __str__(self) -> str:
        where = f"property {self.property}: " if self.property else ""
        return f"{where}{self.kind}: {self.detail} [{self.classification}]"


def _flag(value: Any) -> str:
    if value is None:
        return "false"
    return str(value).strip().lower()


def _norm(prop: dict[str, Any]) -> dict[str, str]:
    return {
        "type": str(prop.get("type")),
        "format": str(prop.get("format") or ""),
        "displayName": str(prop.get("displayName") or ""),
        "showInContactCard": _flag(prop.get("showInContactCard")),
        "addToSegmentation": _flag(prop.get("addToSegmentation")),
        "sortOrder": str(prop.get("sortOrder") if prop.get("sortOrder") is not None else ""),
    }


def diff_schemas(wanted: dict[str, Any], existing: dict[str, Any]) -> list[Change]:
    """Changes needed to turn ``existing`` (Voyado's) into ``wanted`` (the model's)."""
    changes: list[Change] = []
    if str(wanted.get("displayName")) != str(existing.get("displayName")):
        changes.append(
            Change(
                None,
                "display name",
                f"{existing.get('displayName')!r} -> {wanted.get('displayName')!r}",
                COMPATIBLE,
            )
        )
    w_schema = wanted.get("jsonSchema") or {}
    e_schema = existing.get("jsonSchema") or {}
    w_props = {k: _norm(v) for k, v in (w_schema.get("properties") or {}).items()}
    e_props = {k: _norm(v) for k, v in (e_schema.get("properties") or {}).items()}
    for name in w_props.keys() - e_props.keys():
        segmentable = w_props[name]["addToSegmentation"] == "true"
        changes.append(
            Change(
                name,
                "added",
                f"type {w_props[name]['type']}" + (", segmentable" if segmentable else ""),
                NEW_ID if segmentable else COMPATIBLE,
            )
        )
    for name in e_props.keys() - w_props.keys():
        changes.append(
            Change(
                name,
                "removed",
                "a re-created schema must keep every property (backward compatibility)",
                INCOMPATIBLE,
            )
        )
    for name in sorted(w_props.keys() & e_props.keys()):
        w, e = w_props[name], e_props[name]
        if (w["type"], w["format"]) != (e["type"], e["format"]):
            old = e["type"] + (f"/{e['format']}" if e["format"] else "")
            new = w["type"] + (f"/{w['format']}" if w["format"] else "")
            changes.append(Change(name, "type changed", f"{old} -> {new}", INCOMPATIBLE))
        for key in _META:
            if w[key] != e[key]:
                turned_on = key == "addToSegmentation" and w[key] == "true"
                changes.append(
                    Change(
                        name,
                        "metadata changed",
                        f"{key} {e[key]!r} -> {w[key]!r}",
                        NEW_ID if turned_on else COMPATIBLE,
                    )
                )
    for name, raw in sorted((e_schema.get("properties") or {}).items()):
        extra = sorted(set(raw) - PROPERTY_KEYWORDS) if isinstance(raw, dict) else []
        for keyword in extra:
            changes.append(
                Change(
                    name,
                    "unknown keyword",
                    f"Voyado's schema has {keyword}={raw[keyword]!r}, which voyado-sync does not "
                    "generate or check: Voyado may ignore rows that break it",
                    INCOMPATIBLE,
                )
            )
    for keyword in sorted(set(e_schema) - SCHEMA_KEYWORDS):
        changes.append(
            Change(
                None,
                "unknown keyword",
                f"Voyado's jsonSchema has {keyword}={e_schema[keyword]!r}, which voyado-sync "
                "does not generate or check",
                INCOMPATIBLE,
            )
        )
    w_req = set(w_schema.get("required") or [])
    e_req = set(e_schema.get("required") or [])
    if w_req != e_req:
        detail = []
        if w_req - e_req:
            detail.append(f"now required: {', '.join(sorted(w_req - e_req))}")
        if e_req - w_req:
            detail.append(f"no longer required: {', '.join(sorted(e_req - w_req))}")
        changes.append(Change(None, "required", "; ".join(detail), COMPATIBLE))
    return sorted(changes, key=lambda c: (c.property or "", c.kind))


def describe_drift(wanted: dict[str, Any], existing: dict[str, Any]) -> list[str]:
    """Human-readable lines for every difference; empty when the schemas agree."""
    return [str(c) for c in diff_schemas(wanted, existing)]
