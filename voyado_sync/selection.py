"""dbt's node selection grammar (``--select`` / ``--exclude``) on the manifest's graph.

Pure: no I/O and no dbt-core import. It works on the parsed ``manifest.json`` and gives the
same nodes as ``dbt ls`` for the same arguments (dbt 1.11), then narrows them to the models
voyado-sync syncs.

::

    -s "a b" -s c        union of a, b and c (space-separated or repeated)
    -s a,b               intersection of a and b
    --exclude x          same grammar; removed after the union is built

    criterion := [@][N+][method[.argument...]:]value[+N]

    bare word            fqn: (dbt's default); path: if it holds a '/', file: if it ends in
                         .sql, .py or .csv
    fqn:                 a model name, package.model, package.dir.model, dir, with * ? [ ]
    tag:  path:  file:  package:  config.KEY[.KEY...]:  resource_type:  source:  exposure:
    metric:  semantic_model:  saved_query:  unit_test:  group:  access:  version:
    test_name:  test_type:
    +x  x+  N+x  x+N     all (or N levels of) ancestors / descendants, through every node
                         type (seeds, snapshots, sources, tests), as dbt walks the graph
    @x                   x, its descendants, and every ancestor of those

``state:``, ``result:`` and ``source_status:`` need artifacts of an earlier dbt run and are not
supported. Matching follows dbt's rules, including its quirks:

- ``package.model`` names a model only at the top of its model path (``shop.marts.orders``
  otherwise); a glob is matched against the whole fqn (``voyado_*`` also matches every node of a
  package called ``voyado_example``) and then against the name alone.
- ``path:`` matches a node's file, its YAML properties file, or a directory above it. dbt globs
  the project directory; here the glob is matched against the nodes' own paths (the same nodes,
  without touching the disk; a package's node also matches a path that exists only inside the
  package, where dbt would need the root project to have it too).
- ``config.KEY:VALUE`` compares the text with the value (``true``/``false`` match booleans, a
  list matches if it holds the text; a number never matches).
- Nodes with no SQL at all are never selected, but graph operators walk through them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import Any

from voyado_sync.exceptions import ConfigError, ConfigProblem

__all__ = [
    "Criterion",
    "DbtGraph",
    "GraphNode",
    "graph_node",
    "parse_criterion",
    "select_models",
    "select_nodes",
]

# Manifest sections whose entries are graph members; "nodes" holds models, seeds, snapshots,
# tests, analyses and operations.
SECTIONS = (
    "nodes",
    "sources",
    "exposures",
    "metrics",
    "semantic_models",
    "saved_queries",
    "unit_tests",
    "functions",
)
RESOURCE_TYPES = (
    "model",
    "analysis",
    "test",
    "snapshot",
    "operation",
    "seed",
    "rpc",
    "sql_operation",
    "doc",
    "source",
    "macro",
    "exposure",
    "metric",
    "group",
    "saved_query",
    "semantic_model",
    "unit_test",
    "fixture",
    "function",
)
UNSUPPORTED_METHODS = {
    "state": "it compares with the artifacts of an earlier dbt run",
    "result": "it reads run_results.json of an earlier dbt run",
    "source_status": "it reads sources.json of an earlier dbt source freshness run",
}
_MAX_NAMED = 5
_WILDCARD = re.compile(r"[*?\[\]]")
_CRITERION = re.compile(
    r"(?P<at>@)?"
    r"(?:(?P<up_depth>\d*)(?P<up>\+))?"
    r"(?:(?P<method>[\w.]+):)?"
    r"(?P<value>.*?)"
    r"(?:(?P<down>\+)(?P<down_depth>\d*))?"
)


@dataclass(frozen=True)
class GraphNode:
    """One member of dbt's graph (any resource type), with what selection methods look at."""

    unique_id: str
    resource_type: str
    name: str
    package_name: str
    fqn: tuple[str, ...]
    original_file_path: str = ""
    section: str = "nodes"
    patch_path: str | None = None
    tags: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None
    latest_version: str | None = None
    access: str | None = None
    source_name: str | None = None
    test_metadata_name: str | None = None
    empty: bool = False

    @property
    def is_versioned(self) -> bool:
        return self.resource_type == "model" and self.version is not None

    @property
    def label(self) -> str:
        """The name, with the version of a versioned model (``orders.v2``)."""
        return f"{self.name}.{self.fqn[-1]}" if self.is_versioned else self.name


def graph_node(node: Mapping[str, Any], *, section: str = "nodes") -> GraphNode:
    """A GraphNode from one entry of a manifest section (``nodes``, ``sources``, ...)."""
    unique_id = str(node.get("unique_id", ""))
    resource_type = str(node.get("resource_type", unique_id.split(".", 1)[0]))
    name = str(node.get("name", unique_id.rsplit(".", 1)[-1]))
    package = str(node.get("package_name") or [*unique_id.split("."), "", ""][1])
    fqn = tuple(str(p) for p in node.get("fqn") or ()) or (package, name)
    raw_code = node.get("raw_code")
    config = node.get("config")
    config = config if isinstance(config, dict) else {}
    # dbt merges config tags into the node's tags; hand-written manifests may only have one.
    config_tags = config.get("tags") or ()
    test_metadata = node.get("test_metadata")
    return GraphNode(
        unique_id=unique_id,
        resource_type=resource_type,
        name=name,
        package_name=package,
        fqn=fqn,
        original_file_path=str(node.get("original_file_path") or ""),
        section=section,
        patch_path=node.get("patch_path") or None,
        tags=tuple(dict.fromkeys(str(t) for t in [*(node.get("tags") or ()), *config_tags])),
        config=config,
        version=_optional_str(node.get("version")),
        latest_version=_optional_str(node.get("latest_version")),
        access=_optional_str(node.get("access")),
        source_name=_optional_str(node.get("source_name")),
        test_metadata_name=(
            _optional_str(test_metadata.get("name")) if isinstance(test_metadata, dict) else None
        ),
        # dbt leaves nodes without SQL out of every selection; seeds never count as empty.
        empty=(
            section == "nodes"
            and resource_type != "seed"
            and isinstance(raw_code, str)
            and not raw_code.strip()
        ),
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _strings(values: object) -> list[str]:
    return [str(v) for v in values] if isinstance(values, list) else []


@dataclass(frozen=True)
class DbtGraph:
    """dbt's DAG of enabled nodes: edges point from a parent to the nodes that depend on it."""

    nodes: Mapping[str, GraphNode]
    parents: Mapping[str, tuple[str, ...]]
    children: Mapping[str, tuple[str, ...]]
    project_name: str | None = None
    # name -> unique_id of disabled nodes, only to explain why a name matches nothing.
    disabled: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_nodes(
        cls,
        nodes: Iterable[GraphNode],
        depends_on: Mapping[str, Sequence[str]],
        *,
        project_name: str | None = None,
        disabled: Mapping[str, str] | None = None,
    ) -> DbtGraph:
        """A graph from nodes and each node's parents; unknown parents are ignored."""
        members = {n.unique_id: n for n in nodes}
        parents: dict[str, tuple[str, ...]] = {}
        children: dict[str, list[str]] = {uid: [] for uid in members}
        for uid in members:
            ups = tuple(dict.fromkeys(p for p in depends_on.get(uid, ()) if p in members))
            parents[uid] = ups
            for parent in ups:
                children[parent].append(uid)
        return cls(
            nodes=members,
            parents=parents,
            children={uid: tuple(c) for uid, c in children.items()},
            project_name=project_name,
            disabled=dict(disabled or {}),
        )

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> DbtGraph:
        """The graph of a parsed manifest.json: every enabled node of every section.

        Edges come from ``parent_map`` (dbt writes it from each node's ``depends_on.nodes``);
        a manifest without it falls back to ``depends_on.nodes``. Children are derived from
        the same edges, so both directions always agree.
        """
        nodes: list[GraphNode] = []
        disabled: dict[str, str] = {}
        depends_on: dict[str, Sequence[str]] = {}
        for section in SECTIONS:
            entries = data.get(section) or {}
            if not isinstance(entries, dict):
                continue
            for raw in entries.values():
                if not isinstance(raw, dict):
                    continue
                node = graph_node(raw, section=section)
                if (raw.get("config") or {}).get("enabled") is False:
                    disabled.setdefault(node.name, node.unique_id)
                    continue
                nodes.append(node)
                depends_on[node.unique_id] = _strings(
                    (raw.get("depends_on") or {}).get("nodes")
                    if isinstance(raw.get("depends_on"), dict)
                    else None
                )
        for versions in (data.get("disabled") or {}).values():
            for raw in versions if isinstance(versions, list) else ():
                if isinstance(raw, dict) and raw.get("name"):
                    disabled.setdefault(str(raw["name"]), str(raw.get("unique_id")))
        parent_map = data.get("parent_map")
        if isinstance(parent_map, dict) and parent_map:
            depends_on = {str(k): _strings(v) for k, v in parent_map.items()}
        metadata = data.get("metadata") or {}
        project = metadata.get("project_name") if isinstance(metadata, dict) else None
        return cls.from_nodes(
            nodes,
            depends_on,
            project_name=str(project) if project else None,
            disabled=disabled,
        )

    def ancestors(self, start: Collection[str], depth: int | None = None) -> set[str]:
        """Nodes upstream of ``start``, at most ``depth`` levels up (None: all)."""
        return self._walk(start, self.parents, depth)

    def descendants(self, start: Collection[str], depth: int | None = None) -> set[str]:
        """Nodes downstream of ``start``, at most ``depth`` levels down (None: all)."""
        return self._walk(start, self.children, depth)

    @staticmethod
    def _walk(
        start: Collection[str], edges: Mapping[str, tuple[str, ...]], depth: int | None
    ) -> set[str]:
        # Level by level, like dbt: a start node counts as found only when another start
        # node leads to it.
        found: set[str] = set()
        frontier = set(start)
        level = 0
        while frontier and (depth is None or level < depth):
            frontier = {n for uid in frontier for n in edges.get(uid, ()) if n not in found}
            found |= frontier
            level += 1
        return found


@dataclass(frozen=True)
class Criterion:
    """One selection criterion, e.g. ``2+tag:voyado`` or ``@config.materialized:table``."""

    raw: str
    method: str
    arguments: tuple[str, ...]
    value: str
    parents: bool = False
    parents_depth: int | None = None
    children: bool = False
    children_depth: int | None = None
    childrens_parents: bool = False


def parse_criterion(raw: str, *, option: str = "--select") -> Criterion:
    """Parse one criterion (no spaces or commas); raise ConfigError if it is not valid."""
    match = _CRITERION.fullmatch(raw)
    if match is None or not match["value"]:
        raise ConfigError([f"{option} {raw!r}: no value to select by"])
    method_text = match["method"]
    value = match["value"]
    if method_text is None:
        method, arguments = _default_method(value), ()
    else:
        method, *rest = method_text.split(".")
        arguments = tuple(rest)
        problem = _method_problem(method, arguments, value)
        if problem:
            raise ConfigError([f"{option} {raw!r}: {problem}"])
    if match["at"] and match["down"]:
        raise ConfigError([f"{option} {raw!r}: '@' and a trailing '+' cannot be combined"])
    return Criterion(
        raw=raw,
        method=method,
        arguments=arguments,
        value=value,
        parents=bool(match["up"]),
        parents_depth=int(match["up_depth"]) if match["up_depth"] else None,
        children=bool(match["down"]),
        children_depth=int(match["down_depth"]) if match["down_depth"] else None,
        childrens_parents=bool(match["at"]),
    )


def _default_method(value: str) -> str:
    if "/" in value or "\\" in value:
        return "path"
    if value.lower().endswith((".sql", ".py", ".csv")):
        return "file"
    return "fqn"


def _method_problem(method: str, arguments: tuple[str, ...], value: str) -> str | None:
    if method in UNSUPPORTED_METHODS:
        return (
            f"the {method!r} method is not supported by voyado-sync: {UNSUPPORTED_METHODS[method]}"
        )
    if method not in _METHODS:
        return f"unknown selection method {method!r} (one of: {', '.join(sorted(_METHODS))})"
    if method == "config" and not arguments:
        return "the config method needs a key, e.g. config.materialized:table"
    if method != "config" and arguments:
        return f"the {method!r} method takes no '.{'.'.join(arguments)}'"
    if method == "resource_type" and value not in RESOURCE_TYPES:
        return f"unknown resource type {value!r} (one of: {', '.join(RESOURCE_TYPES)})"
    if method == "test_type" and value not in ("generic", "schema", "singular", "data", "unit"):
        return f"unknown test type {value!r} (one of: generic, singular, data, unit)"
    if method == "version" and value not in ("latest", "prerelease", "old", "none"):
        return f"unknown version selector {value!r} (one of: latest, prerelease, old, none)"
    if method == "path" and value.startswith("/"):
        return "a path is relative to the dbt project directory"
    max_parts = _NAMESPACED.get(method)
    if max_parts is not None and len(value.split(".")) > max_parts:
        return f"a {method} is named by at most {max_parts} dot-separated parts"
    return None


# ---- methods: each returns the unique_ids of the graph's nodes it matches --------------------


def _fqn_matches(fqn: Sequence[str], pattern: str, *, versioned: bool) -> bool:
    if not fqn:
        return False
    if versioned and len(fqn) >= 2:
        # A versioned model's fqn ends in its version: "orders" names every version, and
        # "orders.v2" or "orders_v2" one of them.
        if fqn[-2] == pattern or "_".join(fqn[-2:]) == "_".join(pattern.split(".")[-2:]):
            return True
    elif fqn[-1] == pattern:
        return True
    # A dot in a node name (fqn segment) is a namespace separator, as in the pattern.
    flat = [part for segment in fqn for part in segment.split(".")]
    wanted = pattern.split(".")
    if len(flat) < len(wanted):
        return False
    for i, part in enumerate(wanted):
        if _WILDCARD.search(part):
            if fnmatchcase(".".join(flat[i:]), ".".join(wanted[i:])):
                return True
            leaf = fqn[-2] if versioned and len(fqn) >= 2 else fqn[-1]
            return "." not in pattern and fnmatchcase(leaf, pattern)
        if flat[i] != part:
            return False
    return True  # a prefix of the fqn: a package or a directory


def _by_fqn(graph: DbtGraph, c: Criterion) -> set[str]:
    return {
        uid
        for uid, n in graph.nodes.items()
        if n.section != "sources"
        and (
            _fqn_matches(n.fqn, c.value, versioned=n.is_versioned)
            or _fqn_matches(n.fqn[1:], c.value, versioned=n.is_versioned)
        )
    }


def _by_tag(graph: DbtGraph, c: Criterion) -> set[str]:
    return {uid for uid, n in graph.nodes.items() if any(fnmatchcase(t, c.value) for t in n.tags)}


def _glob_matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_matches(parts[i:], rest) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _glob_matches(parts[1:], rest)


def _by_path(graph: DbtGraph, c: Criterion) -> set[str]:
    # dbt globs the pattern in the project directory and keeps the nodes whose file, YAML
    # properties file or a parent directory is among the hits; matching the glob against
    # those paths directly gives the same nodes without touching the disk.
    pattern = PurePosixPath(c.value.replace("\\", "/")).parts
    found: set[str] = set()
    for uid, n in graph.nodes.items():
        ofp = PurePosixPath(n.original_file_path.replace("\\", "/"))
        candidates = [ofp, *ofp.parents]
        if n.patch_path and "://" in n.patch_path:
            candidates.append(PurePosixPath(n.patch_path.split("://", 1)[1]))
        if n.original_file_path and any(_glob_matches(p.parts, pattern) for p in candidates):
            found.add(uid)
    return found


def _by_file(graph: DbtGraph, c: Criterion) -> set[str]:
    found: set[str] = set()
    for uid, n in graph.nodes.items():
        path = PurePosixPath(n.original_file_path.replace("\\", "/"))
        if n.original_file_path and (
            fnmatchcase(path.name, c.value) or fnmatchcase(path.stem, c.value)
        ):
            found.add(uid)
    return found


def _by_package(graph: DbtGraph, c: Criterion) -> set[str]:
    wanted = graph.project_name if c.value == "this" and graph.project_name else c.value
    return {uid for uid, n in graph.nodes.items() if fnmatchcase(n.package_name, wanted)}


_MISSING = object()


def _config_value(config: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping):
            return _MISSING
        if key in value:
            value = value[key]
        elif key.replace("_", "-") in value:  # pre_hook / post_hook are written pre-hook
            value = value[key.replace("_", "-")]
        else:
            return _MISSING
    return value


def _config_equals(value: Any, wanted: str, *, case_insensitive: bool) -> bool:
    if case_insensitive and isinstance(value, str):
        return value.upper() == wanted.upper()
    if wanted.upper() == "TRUE" and value is True:
        return True
    if wanted.upper() == "FALSE" and value is False:
        return True
    return bool(wanted == value)


def _by_config(graph: DbtGraph, c: Criterion) -> set[str]:
    # dbt compares the selector text with the value: strings match exactly, "true"/"false"
    # match booleans (any case), a list matches if it holds the text; numbers never match.
    case_insensitive = c.arguments == ("severity",)
    found: set[str] = set()
    for uid, n in graph.nodes.items():
        if n.section not in ("nodes", "sources"):
            continue
        value = _config_value(n.config, c.arguments)
        if value is _MISSING:
            continue
        if isinstance(value, list):
            hit = any(_config_equals(v, c.value, case_insensitive=case_insensitive) for v in value)
        else:
            hit = _config_equals(value, c.value, case_insensitive=case_insensitive)
        if hit:
            found.add(uid)
    return found


def _by_resource_type(graph: DbtGraph, c: Criterion) -> set[str]:
    return {uid for uid, n in graph.nodes.items() if n.resource_type == c.value}


def _by_group(graph: DbtGraph, c: Criterion) -> set[str]:
    return {
        uid
        for uid, n in graph.nodes.items()
        if n.section in ("nodes", "metrics")
        and n.config.get("group")
        and fnmatchcase(str(n.config["group"]), c.value)
    }


def _by_access(graph: DbtGraph, c: Criterion) -> set[str]:
    return {
        uid
        for uid, n in graph.nodes.items()
        if n.resource_type == "model" and (n.access or n.config.get("access")) == c.value
    }


def _version_key(version: str) -> tuple[int, float, str]:
    try:
        return (0, float(version), "")
    except ValueError:
        return (1, 0.0, version)


def _by_version(graph: DbtGraph, c: Criterion) -> set[str]:
    found: set[str] = set()
    for uid, n in graph.nodes.items():
        if n.resource_type != "model":
            continue
        if c.value == "none":
            hit = n.version is None
        elif n.version is None or n.latest_version is None:
            hit = False
        elif c.value == "latest":
            hit = n.version == n.latest_version
        elif c.value == "prerelease":
            hit = _version_key(n.version) > _version_key(n.latest_version)
        else:  # old
            hit = _version_key(n.version) < _version_key(n.latest_version)
        if hit:
            found.add(uid)
    return found


def _by_test_name(graph: DbtGraph, c: Criterion) -> set[str]:
    found: set[str] = set()
    for uid, n in graph.nodes.items():
        if n.resource_type == "test" and n.test_metadata_name is not None:
            name = n.test_metadata_name
        elif n.resource_type == "unit_test":
            name = n.name
        else:
            continue
        if fnmatchcase(name, c.value):
            found.add(uid)
    return found


def _by_test_type(graph: DbtGraph, c: Criterion) -> set[str]:
    def wanted(n: GraphNode) -> bool:
        generic = n.resource_type == "test" and n.test_metadata_name is not None
        singular = n.resource_type == "test" and n.test_metadata_name is None
        if c.value in ("generic", "schema"):
            return generic
        if c.value == "singular":
            return singular
        if c.value == "data":
            return generic or singular
        return n.resource_type == "unit_test"

    return {uid for uid, n in graph.nodes.items() if wanted(n)}


def _by_source(graph: DbtGraph, c: Criterion) -> set[str]:
    parts = c.value.split(".")
    package, source, table = {1: ["*", parts[0], "*"], 2: ["*", *parts], 3: parts}[len(parts)]
    return {
        uid
        for uid, n in graph.nodes.items()
        if n.section == "sources"
        and fnmatchcase(n.package_name, package)
        and fnmatchcase(n.source_name or "", source)
        and fnmatchcase(n.name, table)
    }


def _named_in(section: str) -> Callable[[DbtGraph, Criterion], set[str]]:
    def search(graph: DbtGraph, c: Criterion) -> set[str]:
        package, _, name = c.value.rpartition(".")
        return {
            uid
            for uid, n in graph.nodes.items()
            if n.section == section
            and fnmatchcase(n.package_name, package or "*")
            and fnmatchcase(n.name, name)
        }

    return search


_METHODS: dict[str, Callable[[DbtGraph, Criterion], set[str]]] = {
    "fqn": _by_fqn,
    "tag": _by_tag,
    "path": _by_path,
    "file": _by_file,
    "package": _by_package,
    "config": _by_config,
    "resource_type": _by_resource_type,
    "group": _by_group,
    "access": _by_access,
    "version": _by_version,
    "test_name": _by_test_name,
    "test_type": _by_test_type,
    "source": _by_source,
    "exposure": _named_in("exposures"),
    "metric": _named_in("metrics"),
    "semantic_model": _named_in("semantic_models"),
    "saved_query": _named_in("saved_queries"),
    "unit_test": _named_in("unit_tests"),
}
# How many dot-separated parts a value of these methods may have (package.source.table).
_NAMESPACED = {
    "source": 3,
    "exposure": 2,
    "metric": 2,
    "semantic_model": 2,
    "saved_query": 2,
    "unit_test": 2,
}


# ---- set algebra ----------------------------------------------------------------------------


def _resolve(graph: DbtGraph, c: Criterion) -> set[str]:
    direct = _METHODS[c.method](graph, c)
    found = set(direct)
    if c.childrens_parents:
        down = graph.descendants(direct) | direct
        found |= graph.ancestors(down) | down
    if c.parents:
        found |= graph.ancestors(direct, c.parents_depth)
    if c.children:
        found |= graph.descendants(direct, c.children_depth)
    return found


@dataclass(frozen=True)
class _Matched:
    raw: str
    criteria: tuple[Criterion, ...]
    nodes: frozenset[str]
    empty_parts: tuple[str, ...]


def _split(selectors: Sequence[str]) -> list[str]:
    return [token for s in selectors for token in s.split()]


def _evaluate(
    graph: DbtGraph, selectors: Sequence[str], *, option: str, problems: list[ConfigProblem]
) -> list[_Matched]:
    matched: list[_Matched] = []
    for token in _split(selectors):
        parts = token.split(",")
        if any(not p for p in parts):
            problems.append(ConfigProblem(f"{option} {token!r}: empty criterion around ','"))
            continue
        try:
            criteria = [parse_criterion(p, option=option) for p in parts]
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        sets = [_resolve(graph, c) for c in criteria]
        nodes = set.intersection(*sets)
        nodes = {uid for uid in nodes if not graph.nodes[uid].empty}
        empty = tuple(c.raw for c, s in zip(criteria, sets, strict=True) if not s)
        matched.append(_Matched(token, tuple(criteria), frozenset(nodes), empty))
    return matched


def select_nodes(
    graph: DbtGraph, select: Sequence[str] = (), exclude: Sequence[str] = ()
) -> frozenset[str]:
    """The unique_ids dbt selects (every resource type), as ``dbt ls -s ... --exclude ...``.

    No ``select`` selects every node. Raises ConfigError only for selectors that cannot be
    parsed; selectors that match nothing simply add nothing.
    """
    problems: list[ConfigProblem] = []
    included = _evaluate(graph, select, option="--select", problems=problems)
    excluded = _evaluate(graph, exclude, option="--exclude", problems=problems)
    if problems:
        raise ConfigError(problems)
    return frozenset(_combine(graph, select, included, excluded))


def _combine(
    graph: DbtGraph, select: Sequence[str], included: list[_Matched], excluded: list[_Matched]
) -> set[str]:
    if _split(select):
        chosen = set().union(*(m.nodes for m in included))
    else:
        chosen = {uid for uid, n in graph.nodes.items() if not n.empty}
    return chosen.difference(*(m.nodes for m in excluded))


def select_models(
    graph: DbtGraph,
    *,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    synced: Collection[str],
) -> list[str]:
    """The unique_ids, in manifest order, of the ``synced`` models dbt's selection picks.

    ``synced`` holds the unique_ids of the models with ``config.meta.voyado``. With no
    ``select`` every one of them is a candidate. Every problem is reported at once in one
    ConfigError: a selector that cannot be parsed, one that matches nothing, one that matches
    only nodes voyado-sync does not sync (the message names them), an ``--exclude`` that
    matches nothing, or an ``--exclude`` that leaves nothing: a typo must not turn into a
    silent no-op, nor sync more than was meant.
    """
    problems: list[ConfigProblem] = []
    included = _evaluate(graph, select, option="--select", problems=problems)
    excluded = _evaluate(graph, exclude, option="--exclude", problems=problems)
    synced_set = set(synced)
    known = _some(sorted(graph.nodes[u].name for u in synced_set if u in graph.nodes), limit=10)
    for m in included:
        if not m.nodes:
            problems.append(ConfigProblem(_nothing(graph, m, "--select", known or "none")))
        elif not m.nodes & synced_set:
            problems.append(ConfigProblem(_not_synced(graph, m, known or "none")))
    for m in excluded:
        if not m.nodes:
            problems.append(ConfigProblem(_nothing(graph, m, "--exclude", known or "none")))
    if problems:
        raise ConfigError(problems)
    chosen = _combine(graph, select, included, excluded) & synced_set
    if not chosen and excluded:
        raise ConfigError(
            [
                f"--exclude {' '.join(_split(exclude))!r} leaves no model with "
                "config.meta.voyado to sync"
            ]
        )
    return [uid for uid in graph.nodes if uid in chosen]


def _nothing(graph: DbtGraph, m: _Matched, option: str, known: str) -> str:
    text = f"{option} {m.raw!r} matches nothing in the manifest"
    if len(m.criteria) > 1:
        if m.empty_parts:
            parts = ", ".join(repr(p) for p in m.empty_parts)
            text += f" ({parts} {'matches' if len(m.empty_parts) == 1 else 'match'} nothing)"
        else:
            text += " (its criteria have no node in common)"
    for c in m.criteria:
        if c.method == "fqn" and c.value in graph.disabled:
            text += f"; {graph.disabled[c.value]} is disabled"
    return f"{text}; models with config.meta.voyado: {known}"


def _not_synced(graph: DbtGraph, m: _Matched, known: str) -> str:
    models = sorted(
        graph.nodes[u].label for u in m.nodes if graph.nodes[u].resource_type == "model"
    )
    if models:
        what = f"matches only models without config.meta.voyado: {_some(models)}"
    else:
        others = sorted(f"{graph.nodes[u].resource_type} {graph.nodes[u].label}" for u in m.nodes)
        what = f"matches no model, only {_some(others)}"
    return f"--select {m.raw!r} {what}; models with config.meta.voyado: {known}"


def _some(names: Sequence[str], *, limit: int = _MAX_NAMED) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown
