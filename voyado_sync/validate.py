"""``voyado-sync validate``: every meta.voyado block against Voyado's rules and the built models.

Never talks to Voyado. Column checks read the warehouse when it can be opened (a local DuckDB
file always can) and fall back to the column types declared in dbt YAML otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voyado_sync.exceptions import ConfigError, ConfigProblem, VoyadoSyncError
from voyado_sync.project import load_manifest_of, open_warehouse, select_nodes
from voyado_sync.settings import RunOptions
from voyado_sync.spec import VoyadoSpec, check_project_rules, parse_spec, resolve
from voyado_sync.warehouse.base import Warehouse


@dataclass
class ValidationReport:
    """Problems (exit 1) and warnings (exit 0) found by validate."""

    models: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    columns_from: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "problems": [
                {"model": p.model, "key": p.key, "message": p.message} for p in self.problems
            ],
            "warnings": self.warnings,
            "columns_from": self.columns_from,
            "ok": not self.problems,
        }

    def lines(self) -> list[str]:
        out = [f"Checked {len(self.models)} model(s): {', '.join(self.models) or 'none'}"]
        if self.columns_from:
            out.append(f"  columns read from {self.columns_from}")
        out.extend(f"  problem: {p}" for p in self.problems)
        out.extend(f"  warning: {w}" for w in self.warnings)
        out.append("OK" if not self.problems else f"{len(self.problems)} problem(s) found")
        return out


def validate_project(options: RunOptions) -> ValidationReport:
    """Check the selected models' meta.voyado; problems are collected, never raised."""
    manifest = load_manifest_of(options)
    nodes = select_nodes(manifest, options)
    report = ValidationReport(models=[n.name for n in nodes])
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

    warehouse: Warehouse | None = None
    try:
        warehouse = open_warehouse(options)
        report.columns_from = warehouse.description
    except VoyadoSyncError as exc:
        report.warnings.append(
            f"could not open the warehouse ({exc}); checked columns against the data_type "
            "declared in dbt YAML instead"
        )
        report.columns_from = "dbt YAML (declared columns)"
    try:
        for node in nodes:
            spec = specs.get(node.name)
            if spec is None:
                continue
            columns: dict[str, str] | None
            if warehouse is not None:
                columns = warehouse.columns(node.relation)
                if columns is None:
                    report.problems.append(
                        ConfigProblem(
                            f"relation {node.relation} does not exist: run dbt build", node.name
                        )
                    )
                    continue
            else:
                columns = {k: v or "varchar" for k, v in node.declared_columns.items()}
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
        if warehouse is not None:
            warehouse.close()
    return report
