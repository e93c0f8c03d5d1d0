"""``voyado-sync validate``: every meta.voyado block against Voyado's rules and the built models.

Never talks to Voyado. Column checks read the built relations in the warehouse; when the
warehouse cannot be opened (dbt or a run holds the DuckDB file, the wrong directory, a bad
profile) the columns are not checked and validate says so with exit 2, instead of guessing
from YAML and reporting columns that do exist as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voyado_sync.exceptions import ConfigError, ConfigProblem, VoyadoSyncError, error_kind
from voyado_sync.project import load_manifest_of, open_warehouse
from voyado_sync.settings import RunOptions
from voyado_sync.spec import VoyadoSpec, check_project_rules, parse_spec, resolve
from voyado_sync.warehouse.base import Warehouse


@dataclass
class ValidationReport:
    """Problems (exit 1), warnings (exit 0), and whether the columns could be checked at all
    (exit 2 when not: the check is incomplete, so it cannot say OK)."""

    models: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    columns_from: str = ""
    #: Why the columns were not checked (the warehouse could not be opened), or None.
    unchecked: str | None = None
    unchecked_kind: str | None = None

    @property
    def exit_code(self) -> int:
        if self.unchecked:
            return 2
        return 1 if self.problems else 0

    def as_dict(self) -> dict[str, Any]:
        error = (
            {"message": self.unchecked, "kind": self.unchecked_kind or "WarehouseError"}
            if self.unchecked
            else None
        )
        return {
            "exit_code": self.exit_code,
            "error": error,
            "models": self.models,
            "problems": [
                {"model": p.model, "key": p.key, "message": p.message} for p in self.problems
            ],
            "warnings": self.warnings,
            "columns_from": self.columns_from,
            "columns_checked": self.unchecked is None,
            "ok": self.exit_code == 0,
        }

    def lines(self) -> list[str]:
        out = [f"Checked {len(self.models)} model(s): {', '.join(self.models) or 'none'}"]
        if self.columns_from:
            out.append(f"  columns read from {self.columns_from}")
        out.extend(f"  problem: {p}" for p in self.problems)
        out.extend(f"  warning: {w}" for w in self.warnings)
        if self.unchecked:
            out.append(f"Could not check columns: {self.unchecked}")
        elif self.problems:
            out.append(f"{len(self.problems)} problem(s) found")
        else:
            out.append("OK")
        return out


def shared_key_spaces(models: Sequence[tuple[str, VoyadoSpec]]) -> list[str]:
    """A warning for each schema_id used by more than one model: a row is identified by its
    schema_id and key, so those models share one key space (a key sent by one is sent)."""
    by_schema: dict[str, list[str]] = {}
    for model, spec in models:
        by_schema.setdefault(spec.schema_id, []).append(model)
    return [
        f"models {', '.join(names)} share schema_id {schema_id!r} and so one key space: a row "
        "is identified by schema_id and unique_key, so a key one of them sent is sent for all "
        "(make the keys distinct, for example by prefixing them, if they are different rows)"
        for schema_id, names in sorted(by_schema.items())
        if len(names) > 1
    ]


def validate_project(options: RunOptions) -> ValidationReport:
    """Check the selected models' meta.voyado; problems are collected, never raised."""
    manifest = load_manifest_of(options)
    nodes, near_misses = manifest.pick(options.select, exclude=options.exclude)
    report = ValidationReport(models=[n.name for n in nodes], problems=list(near_misses))
    specs: dict[str, VoyadoSpec] = {}
    for node in nodes:
        try:
            specs[node.name] = parse_spec(node.name, node.voyado)
        except ConfigError as exc:
            report.problems.extend(exc.problems)
        if node.materialized == "ephemeral":
            report.problems.append(
                ConfigProblem("is ephemeral: materialize it as a table or view", node.name)
            )
    everything: list[tuple[str, VoyadoSpec]] = []
    for m in manifest.voyado_models:
        try:
            everything.append((m.name, specs.get(m.name) or parse_spec(m.name, m.voyado)))
        except ConfigError:
            continue
    report.problems.extend(check_project_rules(everything))
    report.warnings.extend(shared_key_spaces(everything))

    warehouse: Warehouse | None = None
    try:
        warehouse = open_warehouse(options)
        report.columns_from = warehouse.description
    except VoyadoSyncError as exc:
        report.unchecked = (
            f"could not open the warehouse, so no column was checked: {exc}. The meta.voyado "
            "blocks themselves were checked; run validate again when the warehouse is free "
            "(dbt or a voyado-sync run may hold the DuckDB file), from the directory you run "
            "dbt from"
        )
        report.unchecked_kind = error_kind(exc)
        return report
    try:
        for node in nodes:
            spec = specs.get(node.name)
            if spec is None:
                continue
            columns = warehouse.columns(node.relation)
            if columns is None:
                report.problems.append(
                    ConfigProblem(
                        f"relation {node.relation} does not exist in the "
                        f"{warehouse.description}: run dbt build",
                        node.name,
                    )
                )
                continue
            try:
                resolve(
                    model=node.name,
                    unique_id=node.unique_id,
                    relation=node.relation,
                    spec=spec,
                    columns=columns,
                )
            except ConfigError as exc:
                report.problems.extend(exc.problems)
            untested = [
                c for c in spec.unique_key_columns if c.lower() not in node.unique_tested_columns
            ]
            if len(spec.unique_key_columns) == 1 and untested:
                report.warnings.append(
                    f"model {node.name}: unique_key {untested[0]} has no dbt `unique` test; add "
                    f"`data_tests: [unique]` to column {untested[0]} so duplicates fail the build "
                    "instead of being rejected at sync time"
                )
    finally:
        warehouse.close()
    return report
