"""The one way every command loads the dbt project and opens its warehouse.

``load_project`` reads the manifest, applies the selection and parses every selected model's
``meta.voyado``; ``open_warehouse`` opens the target's warehouse; ``resolve_models`` checks each
spec against the built relation's columns. Problems are collected per model (all at once), as
dbt isolates failures per node: a run reports and skips a broken model and syncs the others,
while ``opened`` (for commands that work on the project as a whole) refuses any problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from voyado_sync.exceptions import ConfigError, ConfigProblem
from voyado_sync.manifest import Manifest, ModelNode, load_manifest, manifest_path
from voyado_sync.settings import RunOptions
from voyado_sync.spec import InteractionModel, VoyadoSpec, check_project_rules, parse_spec, resolve
from voyado_sync.warehouse.base import Warehouse


@dataclass(frozen=True)
class Project:
    """The selected models of a dbt project with their parsed ``meta.voyado``."""

    manifest: Manifest
    nodes: list[ModelNode]
    specs: dict[str, VoyadoSpec]
    #: Selected models that cannot be synced, with every problem found in each.
    broken: dict[str, list[ConfigProblem]] = field(default_factory=dict)
    #: Models whose meta key looks like a typo of ``voyado`` (not synced, reported).
    typos: list[ConfigProblem] = field(default_factory=list)

    def raise_problems(self) -> None:
        """For commands that need every selected model: all problems as one ConfigError."""
        problems = [p for found in self.broken.values() for p in found]
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True)
class Resolved:
    """The selected models resolved against the warehouse, and those that could not be."""

    models: list[InteractionModel]
    broken: dict[str, list[ConfigProblem]]

    def raise_problems(self) -> None:
        problems = [p for found in self.broken.values() for p in found]
        if problems:
            raise ConfigError(problems)


def load_manifest_of(options: RunOptions) -> Manifest:
    return load_manifest(manifest_path(options.project_dir, options.target_path))


def select_nodes(manifest: Manifest, options: RunOptions) -> list[ModelNode]:
    """The models ``--select``/``--exclude`` name (every ``meta.voyado`` model by default)."""
    return manifest.select(options.select, exclude=options.exclude)


def load_project(options: RunOptions) -> Project:
    """Read the manifest, select models and parse every meta.voyado.

    A problem that names no model (the project breaks a rule as a whole) is raised; the
    others are kept per model in ``Project.broken``.
    """
    manifest = load_manifest_of(options)
    nodes, typos = manifest.pick(options.select, exclude=options.exclude)
    broken: dict[str, list[ConfigProblem]] = {}
    specs: dict[str, VoyadoSpec] = {}
    for node in nodes:
        if node.materialized == "ephemeral":
            broken.setdefault(node.name, []).append(
                ConfigProblem(
                    "is ephemeral, so there is no table to read: materialize it as a table, "
                    "view or incremental model",
                    node.name,
                    "config.materialized",
                )
            )
            continue
        try:
            specs[node.name] = parse_spec(node.name, node.voyado)
        except ConfigError as exc:
            broken.setdefault(node.name, []).extend(exc.problems)
    every = [(name, spec) for name, spec in specs.items()]
    general: list[ConfigProblem] = []
    for problem in check_project_rules(every):
        if problem.model in specs:
            broken.setdefault(problem.model, []).append(problem)
        else:
            general.append(problem)
    if general:
        raise ConfigError(general)
    return Project(
        manifest=manifest,
        nodes=[n for n in nodes if n.name in specs and n.name not in broken],
        specs=specs,
        broken=broken,
        typos=typos,
    )


def open_warehouse(options: RunOptions) -> Warehouse:
    """The warehouse of the options' dbt project, profile and target."""
    from voyado_sync.warehouse.adapter import DbtWarehouse

    return DbtWarehouse(
        project_dir=options.project_dir, profiles_dir=options.profiles_dir, target=options.target
    )


def resolve_models(project: Project, warehouse: Warehouse) -> Resolved:
    """Resolve each spec against the built model's columns; every problem, per model."""
    broken = {name: list(found) for name, found in project.broken.items()}
    models: list[InteractionModel] = []
    for node in project.nodes:
        columns = warehouse.columns(node.relation)
        if columns is None:
            broken.setdefault(node.name, []).append(
                ConfigProblem(
                    f"relation {node.relation} does not exist in the {warehouse.description}: "
                    "run dbt build for this target first",
                    node.name,
                )
            )
            continue
        try:
            models.append(
                resolve(
                    model=node.name,
                    unique_id=node.unique_id,
                    relation=node.relation,
                    spec=project.specs[node.name],
                    columns=columns,
                )
            )
        except ConfigError as exc:
            broken.setdefault(node.name, []).extend(exc.problems)
    return Resolved(models, broken)


@contextmanager
def opened(options: RunOptions) -> Iterator[tuple[list[InteractionModel], Warehouse]]:
    """The selected models, resolved against an open warehouse that is closed afterwards."""
    project = load_project(options)
    project.raise_problems()
    warehouse = open_warehouse(options)
    try:
        resolved = resolve_models(project, warehouse)
        resolved.raise_problems()
        yield resolved.models, warehouse
    finally:
        warehouse.close()
