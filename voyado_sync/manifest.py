"""Reading dbt's ``target/manifest.json`` as a versioned artifact, without importing dbt-core.

dbt writes the manifest on every parse, compile, run and build; it reflects the target it was
built with. We only need the models: their ``config.meta.voyado``, relation, columns, tags, and
the ``unique`` data tests declared on them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voyado_sync.exceptions import ConfigError, ConfigProblem, ManifestError
from voyado_sync.spec import Relation

SUPPORTED_VERSIONS = range(10, 13)  # v10 (dbt 1.6) .. v12 (dbt 1.8 - 1.12)
_VERSION_RE = re.compile(r"/manifest/v(\d+)\.json$")


@dataclass(frozen=True)
class ModelNode:
    """One dbt model as the manifest describes it."""

    unique_id: str
    name: str
    relation: Relation
    materialized: str
    tags: tuple[str, ...]
    voyado: object | None
    declared_columns: dict[str, str | None] = field(default_factory=dict)
    unique_tested_columns: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Manifest:
    """The parts of manifest.json voyado-sync uses."""

    path: Path
    schema_version: int
    dbt_version: str
    adapter_type: str | None
    models: tuple[ModelNode, ...]

    @property
    def voyado_models(self) -> tuple[ModelNode, ...]:
        return tuple(m for m in self.models if m.voyado is not None)

    def select(self, selectors: Sequence[str]) -> list[ModelNode]:
        """dbt-style selection among models with ``meta.voyado``: names and ``tag:NAME``.

        Selectors may be given separately or space/comma separated. No selector selects every
        model with ``meta.voyado``. A selector that matches nothing is an error: a typo must not
        turn into a silent no-op in production.
        """
        candidates = self.voyado_models
        tokens = [t for s in selectors for t in re.split(r"[\s,]+", s) if t]
        if not tokens:
            return list(candidates)
        chosen: dict[str, ModelNode] = {}
        problems: list[ConfigProblem] = []
        for token in tokens:
            if token.startswith("tag:"):
                tag = token[4:]
                hits = [m for m in candidates if tag in m.tags]
            else:
                name = token.split(".")[-1]
                hits = [m for m in candidates if m.name == name]
            if not hits:
                known = ", ".join(sorted(m.name for m in candidates)) or "none"
                not_voyado = any(m.name == token for m in self.models)
                why = (
                    f"model {token!r} has no config.meta.voyado"
                    if not_voyado
                    else f"--select {token!r} matches no model with config.meta.voyado"
                )
                problems.append(ConfigProblem(f"{why} (models with meta.voyado: {known})"))
            for m in hits:
                chosen.setdefault(m.unique_id, m)
        if problems:
            raise ConfigError(problems)
        return list(chosen.values())


def manifest_path(project_dir: Path, target_path: str | None = None) -> Path:
    """Where dbt wrote the manifest: ``<project>/<target-path>/manifest.json``."""
    target = Path(target_path) if target_path else Path("target")
    if not target.is_absolute():
        target = project_dir / target
    return target / "manifest.json"


def load_manifest(path: Path) -> Manifest:
    """Read and check a manifest; raise ManifestError with the next step for the user."""
    if not path.exists():
        raise ManifestError(
            f"no dbt manifest at {path}: run dbt build first (or pass --project-dir to the "
            "dbt project you built)"
        )
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read the dbt manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a dbt manifest (expected a JSON object)")
    metadata = data.get("metadata") or {}
    version_url = str(metadata.get("dbt_schema_version", ""))
    match = _VERSION_RE.search(version_url)
    if not match:
        raise ManifestError(
            f"{path} has no recognisable metadata.dbt_schema_version ({version_url!r}): is it a "
            "dbt manifest?"
        )
    version = int(match.group(1))
    if version < SUPPORTED_VERSIONS.start:
        raise ManifestError(
            f"{path} is a v{version} manifest (dbt {metadata.get('dbt_version', '?')}); "
            f"voyado-sync reads v{SUPPORTED_VERSIONS.start} to v{SUPPORTED_VERSIONS.stop - 1}: "
            "rebuild with dbt 1.6 or later"
        )
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise ManifestError(f"{path} has no 'nodes' section")
    unique_tests = _unique_tests(nodes.values())
    models = tuple(
        _model(node, unique_tests.get(str(node.get("unique_id")), frozenset()))
        for node in nodes.values()
        if isinstance(node, dict) and node.get("resource_type") == "model"
    )
    return Manifest(
        path=path,
        schema_version=version,
        dbt_version=str(metadata.get("dbt_version", "")),
        adapter_type=metadata.get("adapter_type"),
        models=models,
    )


def _unique_tests(nodes: Iterable[Any]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for node in nodes:
        if not isinstance(node, dict) or node.get("resource_type") != "test":
            continue
        meta = node.get("test_metadata") or {}
        if meta.get("name") != "unique":
            continue
        column = node.get("column_name") or (meta.get("kwargs") or {}).get("column_name")
        attached = node.get("attached_node")
        if not attached:
            refs = (node.get("depends_on") or {}).get("nodes") or []
            attached = refs[0] if refs else None
        if attached and column:
            found.setdefault(str(attached), set()).add(str(column).strip('"`').lower())
    return {k: frozenset(v) for k, v in found.items()}


def _model(node: dict[str, Any], unique_tested: frozenset[str]) -> ModelNode:
    config = node.get("config") or {}
    meta = config.get("meta") or {}
    voyado = meta.get("voyado")
    if voyado is None:
        # Older projects put meta at the top level; dbt copies it, but read both to be safe.
        voyado = (node.get("meta") or {}).get("voyado")
    if config.get("enabled") is False:
        voyado = None
    columns = {
        str(name): (col.get("data_type") if isinstance(col, dict) else None)
        for name, col in (node.get("columns") or {}).items()
    }
    tags = tuple(dict.fromkeys([*(node.get("tags") or []), *(config.get("tags") or [])]))
    return ModelNode(
        unique_id=str(node.get("unique_id")),
        name=str(node.get("name")),
        relation=Relation(
            database=node.get("database") or None,
            schema=str(node.get("schema")),
            identifier=str(node.get("alias") or node.get("name")),
        ),
        materialized=str(config.get("materialized", "")),
        tags=tags,
        voyado=voyado,
        declared_columns=columns,
        unique_tested_columns=unique_tested,
    )
