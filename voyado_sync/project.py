"""The one way every command loads the dbt project and opens its warehouse.

``load_project`` reads the manifest, applies the selection and parses every selected model's
``meta.voyado`` (all problems at once); ``open_warehouse`` opens the target's warehouse;
``resolve_models`` checks each spec against the built relation's columns. ``opened`` does all
three and closes the warehouse afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


def load_manifest_of(options: RunOptions) -> Manifest:
    return load_manifest(manifest_path(options.project_dir, options.target_path))


def select_nodes(manifest: Manifest, options: RunOptions) -> list[ModelNode]:
    """The models ``--select``/``--exclude`` name (every ``meta.voyado`` model by default)."""
    return manifest.select(options.select, exclude=options.exclude)


def load_project(options: RunOptions) -> Project:
    """Read the manifest, select models and parse every meta.voyado (all problems at once)."""
    manifest = load_manifest_of(options)
    nodes = select_nodes(manifest, options)
    problems: list[ConfigProblem] = []
    specs: dict[str, VoyadoSpec] = {}
    for node in nodes:
        if node.materialized == "ephemeral":
            problems.append(
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
            problems.extend(exc.problems)
    every = [
        (m.name, parse_spec(m.name, m.voyado)) for m in manifest.voyado_models if m.name in specs
    ]
    problems.extend(check_project_rules(every))
    if problems:
        raise ConfigError(problems)
    return Project(manifest=manifest, nodes=[n for n in nodes if n.name in specs], specs=specs)


def open_warehouse(options: RunOptions) -> Warehouse:
    """The warehouse of the options' dbt project, profile and target."""
    from voyado_sync.warehouse.adapter import DbtWarehouse

    return DbtWarehouse(
        project_dir=options.project_dir, profiles_dir=options.profiles_dir, target=options.target
    )


def resolve_models(project: Project, warehouse: Warehouse) -> list[InteractionModel]:
    """Resolve each spec against the built model's columns; every problem at once."""
    problems: list[ConfigProblem] = []
    models: list[InteractionModel] = []
    for node in project.nodes:
        columns = warehouse.columns(node.relation)
        if columns is None:
            problems.append(
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
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return models


@contextmanager
def opened(options: RunOptions) -> Iterator[tuple[list[InteractionModel], Warehouse]]:
    """The selected models, resolved against an open warehouse that is closed afterwards."""
    project = load_project(options)
    warehouse = open_warehouse(options)
    try:
        yield resolve_models(project, warehouse), warehouse
    finally:
        warehouse.close()
