"""Reading dbt's ``target/manifest.json`` as a versioned artifact, without importing dbt-core.

dbt writes the manifest on every parse, compile, run and build; it reflects the target it was
built with. We only need the models: their ``config.meta.voyado``, relation, columns, tags, and
the ``unique`` data tests declared on them; and dbt's graph of every node, so that ``--select``
and ``--exclude`` mean what they mean to dbt (see :mod:`voyado_sync.selection`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voyado_sync.exceptions import ConfigError, ConfigProblem, ManifestError
from voyado_sync.selection import DbtGraph, graph_node, select_models
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
    package_name: str = ""
    fqn: tuple[str, ...] = ()
    original_file_path: str = ""
    depends_on: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: ``meta`` keys that look like a misspelt ``voyado`` (``voyaod``, ``Voyado``, ``voyado_sync``).
    near_misses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """The parts of manifest.json voyado-sync uses."""

    path: Path
    schema_version: int
    dbt_version: str
    adapter_type: str | None
    models: tuple[ModelNode, ...]
    # dbt's graph of every enabled node (seeds, snapshots, tests, sources too); None for a
    # Manifest built by hand, whose graph is then its models and their depends_on.
    graph: DbtGraph | None = field(default=None, repr=False, compare=False)

    @property
    def voyado_models(self) -> tuple[ModelNode, ...]:
        return tuple(m for m in self.models if m.voyado is not None)

    def near_misses(self) -> list[ConfigProblem]:
        """A problem per model whose ``meta`` has a key close to ``voyado`` but not it."""
        return [problem for m in self.models for problem in near_miss_problems(m)]

    def pick(
        self, select: Sequence[str] = (), *, exclude: Sequence[str] = (), required: bool = True
    ) -> tuple[list[ModelNode], list[ConfigProblem]]:
        """:meth:`select`, and a problem for each selected model whose ``meta`` key is a
        near miss of ``voyado``: a typo must be reported, not turned into a model skipped in
        silence. Models with a near miss take part in the selection like synced ones, so
        ``-s the_misspelt_model`` names the typo instead of "matches only models without
        config.meta.voyado".

        Raises ConfigError when the selection picks only models with a near miss, and (when
        ``required``) when the manifest has no model with ``config.meta.voyado`` at all, naming
        the near misses: ``run`` and ``validate`` must not report "0 models, OK".
        """
        voyado = [m.unique_id for m in self.voyado_models]
        misspelt = [m.unique_id for m in self.models if m.voyado is None and m.near_misses]
        if not voyado and required:
            text = f"no model in {self.path} has config.meta.voyado, so there is nothing to sync"
            problems = self.near_misses()
            if problems:
                text += "; these look like typos of voyado:"
            else:
                text += (
                    ": declare it under config.meta.voyado in a model's properties YAML, then "
                    "dbt build (or dbt parse)"
                )
            raise ConfigError([ConfigProblem(text), *problems])
        graph = self.graph if self.graph is not None else self._models_graph()
        chosen = select_models(graph, select=select, exclude=exclude, synced=[*voyado, *misspelt])
        by_id = {m.unique_id: m for m in self.models}
        picked = [by_id[uid] for uid in chosen if uid in by_id]
        nodes = [m for m in picked if m.voyado is not None]
        problems = [p for m in picked if m.voyado is None for p in near_miss_problems(m)]
        if not nodes and problems:
            raise ConfigError(problems)
        return nodes, problems

    def select(self, select: Sequence[str] = (), *, exclude: Sequence[str] = ()) -> list[ModelNode]:
        """The models with ``meta.voyado`` that dbt's ``--select``/``--exclude`` pick.

        dbt's grammar (see :mod:`voyado_sync.selection`): space-separated or repeated selectors
        are a union, a comma inside one an intersection, ``--exclude`` is removed afterwards;
        methods such as ``tag:``, ``path:``, ``fqn:``, ``config.materialized:`` and graph
        operators ``+x``, ``x+``, ``N+x``, ``x+N``, ``@x``. The result is then narrowed to models
        with ``config.meta.voyado``, in manifest order. No selector selects all of them.

        Raises ConfigError, listing every problem: a selector that cannot be parsed, matches
        nothing, or matches only models without ``meta.voyado``; an exclude that matches
        nothing or leaves nothing to sync.
        """
        return self.pick(select, exclude=exclude, required=False)[0]

    def _models_graph(self) -> DbtGraph:
        nodes = [
            graph_node(
                {
                    "unique_id": m.unique_id,
                    "resource_type": "model",
                    "name": m.name,
                    "package_name": m.package_name,
                    "fqn": list(m.fqn),
                    "original_file_path": m.original_file_path,
                    "tags": list(m.tags),
                    "config": m.config,
                }
            )
            for m in self.models
        ]
        return DbtGraph.from_nodes(nodes, {m.unique_id: m.depends_on for m in self.models})


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
        graph=DbtGraph.from_manifest(data),
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
    enabled = config.get("enabled") is not False
    if not enabled:
        voyado = None
    # dbt copies config.meta to the node's top-level meta: each key is named once, where the
    # current dbt reads it.
    found: dict[str, str] = {}
    for where, block in (("config.meta", meta), ("meta", node.get("meta") or {})):
        if enabled and isinstance(block, Mapping):
            for key in block:
                if looks_like_voyado(str(key)):
                    found.setdefault(str(key), f"{where}.{key}")
    near = tuple(found.values())
    if voyado is not None:
        near = ()
    columns = {
        str(name): (col.get("data_type") if isinstance(col, dict) else None)
        for name, col in (node.get("columns") or {}).items()
    }
    tags = tuple(dict.fromkeys([*(node.get("tags") or []), *(config.get("tags") or [])]))
    graph = graph_node(node)
    return ModelNode(
        unique_id=str(node.get("unique_id")),
        name=str(node.get("name")),
        relation=Relation(
            database=node.get("database") or None,
            schema=str(node.get("schema")),
            identifier=str(node.get("alias") or node.get("name")),
            rendered=node.get("relation_name") or None,
        ),
        materialized=str(config.get("materialized", "")),
        tags=tags,
        voyado=voyado,
        declared_columns=columns,
        unique_tested_columns=unique_tested,
        package_name=graph.package_name,
        fqn=graph.fqn,
        original_file_path=graph.original_file_path,
        depends_on=tuple(str(p) for p in (node.get("depends_on") or {}).get("nodes") or ()),
        config=config,
        near_misses=near,
    )


def looks_like_voyado(key: str) -> bool:
    """A ``meta`` key that is not ``voyado`` but was probably meant to be: a different case,
    a separator or suffix (``voyado_sync``, ``voyado-sync``), or one or two letters off."""
    if key == "voyado":
        return False
    letters = re.sub(r"[^a-z]", "", key.lower())
    if letters in ("voyado", "voyadosync", "voyadoengage"):
        return True
    return len(letters) >= 4 and _edits(letters, "voyado") <= 2


def _edits(a: str, b: str) -> int:
    # Optimal string alignment distance: insertions, deletions, substitutions, transpositions.
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def near_miss_problems(node: ModelNode) -> list[ConfigProblem]:
    """One problem per near-miss ``meta`` key of a model, suggesting ``voyado``."""
    return [
        ConfigProblem(
            f"meta key {key.rsplit('.', 1)[-1]!r} is not 'voyado', so this model is not synced: "
            "did you mean voyado? (config.meta.voyado)",
            node.name,
            key,
        )
        for key in node.near_misses
    ]
