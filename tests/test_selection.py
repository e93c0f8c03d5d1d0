"""dbt's node selection grammar: unit tests on small manifests, and a table test against `dbt ls`.

The table test builds a copy of the example project with a richer graph (staging and mart
directories, a source, a snapshot between two models, an ephemeral model, a versioned model, a
relationships test joining two branches, an exposure, a local package and a disabled model) and
checks that voyado-sync selects the same models as `dbt ls --resource-type model` for selectors
a simpler implementation gets wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.projects import EXAMPLE
from voyado_sync.exceptions import ConfigError
from voyado_sync.manifest import Manifest, load_manifest
from voyado_sync.selection import (
    DbtGraph,
    GraphNode,
    graph_node,
    parse_criterion,
    select_models,
    select_nodes,
)

VOYADO = {"schema_id": "x", "unique_key": "id", "contact": {"column": "c"}, "properties": {}}


# ---- a small hand-written graph ------------------------------------------------------------
#
#   seed raw ─┬─ stg ─┬─ snapshot snap ── hist
#             │       └─ voyado_mart ─┬─ report ── daily
#             │                       ├─ q.pkg_mart            (package q)
#             └─ other ───────────────┴─ test rel              (relationships: mart -> other)


def _node(
    uid: str,
    *,
    parents: tuple[str, ...] = (),
    path: str = "",
    tags: tuple[str, ...] = (),
    materialized: str = "table",
    voyado: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    resource_type, package, name = uid.split(".")[:3]
    subdir = path.split("/")[1:-1] if path.startswith("models/") else []
    return {
        "unique_id": uid,
        "resource_type": resource_type,
        "name": name,
        "package_name": package,
        "fqn": [package, *subdir, name],
        "original_file_path": path or f"{resource_type}s/{name}.sql",
        "tags": list(tags),
        "config": {
            "enabled": True,
            "materialized": materialized,
            "tags": list(tags),
            "meta": {"voyado": VOYADO} if voyado else {},
        },
        "depends_on": {"nodes": list(parents)},
        "schema": "marts",
        "database": "db",
        "alias": name,
        **extra,
    }


NODES = [
    _node("seed.p.raw", path="seeds/raw.csv", materialized="seed"),
    _node("model.p.stg", parents=("seed.p.raw",), path="models/staging/stg.sql", tags=("staging",)),
    _node("snapshot.p.snap", parents=("model.p.stg",), path="snapshots/snap.sql"),
    _node("model.p.hist", parents=("snapshot.p.snap",), path="models/marts/hist.sql"),
    _node(
        "model.p.voyado_mart",
        parents=("model.p.stg",),
        path="models/marts/voyado_mart.sql",
        tags=("voyado", "daily"),
        voyado=True,
        patch_path="p://models/marts/marts.yml",
    ),
    _node(
        "model.p.report",
        parents=("model.p.voyado_mart",),
        path="models/marts/report.sql",
        materialized="view",
        tags=("voyado",),
        voyado=True,
    ),
    _node("model.p.daily", parents=("model.p.report",), path="models/marts/daily.sql"),
    _node("model.p.other", parents=("seed.p.raw",), path="models/other.sql"),
    _node(
        "test.p.rel",
        parents=("model.p.voyado_mart", "model.p.other"),
        path="models/marts/marts.yml",
        test_metadata={"name": "relationships"},
    ),
    _node("model.q.pkg_mart", parents=("model.p.voyado_mart",), path="models/pkg_mart.sql"),
    _node("model.p.gone", path="models/gone.sql", voyado=True) | {"config": {"enabled": False}},
]


def _manifest(*, with_parent_map: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
            "project_name": "p",
        },
        "nodes": {n["unique_id"]: n for n in NODES},
    }
    if with_parent_map:
        data["parent_map"] = {
            n["unique_id"]: n["depends_on"]["nodes"]
            for n in NODES
            if n["config"].get("enabled") is not False
        }
    return data


@pytest.fixture(params=[True, False], ids=["parent_map", "depends_on"])
def graph(request: pytest.FixtureRequest) -> DbtGraph:
    return DbtGraph.from_manifest(_manifest(with_parent_map=request.param))


SYNCED = ["model.p.voyado_mart", "model.p.report", "model.p.gone"]


def _short(ids: Iterable[str]) -> list[str]:
    return sorted(uid.split(".", 1)[1] for uid in ids)


@pytest.mark.parametrize(
    ("select", "exclude", "expected"),
    [
        # bare words: name, package.name, directory, package, globs
        (["voyado_mart"], [], ["p.voyado_mart"]),
        (["p.other"], [], ["p.other"]),
        (["p.marts.voyado_mart"], [], ["p.voyado_mart"]),
        # as in dbt, package.name matches only a model at the top of its model path
        (["p.voyado_mart"], [], []),
        (["marts"], [], ["p.daily", "p.hist", "p.rel", "p.report", "p.voyado_mart"]),
        (["q"], [], ["q.pkg_mart"]),
        (["*mart"], [], ["p.voyado_mart", "q.pkg_mart"]),
        (["p.marts.*"], [], ["p.daily", "p.hist", "p.rel", "p.report", "p.voyado_mart"]),
        (["fqn:p.staging.stg"], [], ["p.stg"]),
        # comma is an intersection, space a union
        (["tag:voyado,tag:daily"], [], ["p.voyado_mart"]),
        (["tag:voyado tag:staging"], [], ["p.report", "p.stg", "p.voyado_mart"]),
        (["tag:voyado", "tag:staging"], [], ["p.report", "p.stg", "p.voyado_mart"]),
        (["tag:voy*"], [], ["p.report", "p.voyado_mart"]),
        # paths: file, directory, glob, YAML properties file; bare words with '/' or '.sql'
        (["path:models/marts"], [], ["p.daily", "p.hist", "p.report", "p.voyado_mart", "p.rel"]),
        (["path:models/marts/"], [], ["p.daily", "p.hist", "p.report", "p.voyado_mart", "p.rel"]),
        (["path:models/*.sql"], [], ["p.other", "q.pkg_mart"]),
        (["path:models/**/voyado_*.sql"], [], ["p.voyado_mart"]),
        (["path:models/marts/marts.yml"], [], ["p.voyado_mart", "p.rel"]),
        (["models/staging"], [], ["p.stg"]),
        (["report.sql"], [], ["p.report"]),
        (["file:hist"], [], ["p.hist"]),
        # config, nested config, resource type, package
        (["config.materialized:view"], [], ["p.report"]),
        (["config.tags:daily"], [], ["p.voyado_mart"]),
        (["config.enabled:TRUE,resource_type:seed"], [], ["p.raw"]),
        (["config.meta.voyado.schema_id:x"], [], ["p.report", "p.voyado_mart"]),
        (["resource_type:snapshot"], [], ["p.snap"]),
        (["package:q"], [], ["q.pkg_mart"]),
        (["package:this,resource_type:seed"], [], ["p.raw"]),
        (["test_name:relationships"], [], ["p.rel"]),
        # graph operators walk through seeds, snapshots and tests
        (
            ["stg+"],
            [],
            [
                "p.daily",
                "p.hist",
                "p.rel",
                "p.report",
                "p.snap",
                "p.stg",
                "p.voyado_mart",
                "q.pkg_mart",
            ],
        ),
        (["+report"], [], ["p.raw", "p.report", "p.stg", "p.voyado_mart"]),
        (["stg+1"], [], ["p.snap", "p.stg", "p.voyado_mart"]),
        (["2+daily"], [], ["p.daily", "p.report", "p.voyado_mart"]),
        (["0+daily"], [], ["p.daily"]),
        (["@other"], [], ["p.other", "p.raw", "p.rel", "p.stg", "p.voyado_mart"]),
        (["@+hist"], [], ["p.hist", "p.raw", "p.snap", "p.stg"]),
        # exclude: same grammar, removed last
        (["stg+"], ["voyado_mart+"], ["p.hist", "p.snap", "p.stg"]),
        (["tag:voyado"], ["config.materialized:view"], ["p.voyado_mart"]),
        ([], ["resource_type:model", "resource_type:test"], ["p.raw", "p.snap"]),
        # a disabled node is not in the graph
        (["gone"], [], []),
    ],
)
def test_select_nodes(
    graph: DbtGraph, select: list[str], exclude: list[str], expected: list[str]
) -> None:
    assert _short(select_nodes(graph, select, exclude)) == sorted(expected)


def test_no_selector_selects_every_enabled_node(graph: DbtGraph) -> None:
    assert len(select_nodes(graph)) == len(NODES) - 1


def test_empty_models_are_never_selected() -> None:
    nodes = [
        _node("model.p.a", raw_code="select 1"),
        _node("model.p.b", parents=("model.p.a",), raw_code="  \n"),
        _node("model.p.c", parents=("model.p.b",), raw_code="select 1"),
    ]
    g = DbtGraph.from_manifest({"nodes": {n["unique_id"]: n for n in nodes}})
    # b is skipped, but the walk still goes through it.
    assert _short(select_nodes(g, ["a+"])) == ["p.a", "p.c"]


def test_versioned_model_is_named_with_or_without_its_version() -> None:
    nodes = [
        _node("model.p.orders.v1", version=1, latest_version=2, path="models/orders_v1.sql")
        | {"name": "orders", "fqn": ["p", "orders", "v1"]},
        _node("model.p.orders.v2", version=2, latest_version=2, path="models/orders_v2.sql")
        | {"name": "orders", "fqn": ["p", "orders", "v2"]},
    ]
    g = DbtGraph.from_manifest({"nodes": {n["unique_id"]: n for n in nodes}})
    assert _short(select_nodes(g, ["orders"])) == ["p.orders.v1", "p.orders.v2"]
    assert _short(select_nodes(g, ["orders.v1"])) == ["p.orders.v1"]
    assert _short(select_nodes(g, ["orders_v2"])) == ["p.orders.v2"]
    assert _short(select_nodes(g, ["version:latest"])) == ["p.orders.v2"]
    assert _short(select_nodes(g, ["version:old"])) == ["p.orders.v1"]


# ---- the grammar of one criterion ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ("orders", {"method": "fqn", "value": "orders"}),
        ("+orders", {"parents": True, "parents_depth": None, "value": "orders"}),
        ("3+orders", {"parents": True, "parents_depth": 3}),
        ("orders+", {"children": True, "children_depth": None, "value": "orders"}),
        ("orders+2", {"children": True, "children_depth": 2}),
        ("@orders", {"childrens_parents": True, "children": False}),
        ("1+tag:x+1", {"method": "tag", "value": "x", "parents_depth": 1, "children_depth": 1}),
        ("config.materialized:table", {"method": "config", "arguments": ("materialized",)}),
        ("config.meta.voyado.schema_id:x", {"arguments": ("meta", "voyado", "schema_id")}),
        ("models/marts", {"method": "path", "value": "models/marts"}),
        ("orders.sql", {"method": "file"}),
        ("shop.orders", {"method": "fqn", "value": "shop.orders"}),
    ],
)
def test_parse_criterion(raw: str, fields: dict[str, Any]) -> None:
    criterion = parse_criterion(raw)
    assert {k: getattr(criterion, k) for k in fields} == fields


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("@orders+", "'@' and a trailing '+' cannot be combined"),
        ("bogus:x", "unknown selection method 'bogus' (one of: access, config,"),
        ("state:modified", "the 'state' method is not supported by voyado-sync"),
        ("resource_type:modle", "unknown resource type 'modle'"),
        ("config:table", "the config method needs a key"),
        ("tag.x:y", "the 'tag' method takes no '.x'"),
        ("source:a.b.c.d", "a source is named by at most 3 dot-separated parts"),
        ("path:/etc", "a path is relative to the dbt project directory"),
        ("+", "no value to select by"),
    ],
)
def test_invalid_criterion_is_a_config_error(raw: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_criterion(raw)
    assert f"--select {raw!r}: {says}" in str(info.value)


# ---- narrowing to meta.voyado, and the errors ----------------------------------------------


def test_result_is_narrowed_to_synced_models_in_manifest_order(graph: DbtGraph) -> None:
    assert select_models(graph, select=["+daily"], synced=SYNCED) == [
        "model.p.voyado_mart",
        "model.p.report",
    ]
    assert select_models(graph, synced=SYNCED) == ["model.p.voyado_mart", "model.p.report"]
    assert select_models(graph, exclude=["report"], synced=SYNCED) == ["model.p.voyado_mart"]


def _problems(graph: DbtGraph, select: list[str], exclude: Sequence[str] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        select_models(graph, select=select, exclude=exclude, synced=SYNCED)
    return [p.message for p in info.value.problems]


def test_misspelt_name_matches_nothing(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["voyado_mrat"])
    assert message == (
        "--select 'voyado_mrat' matches nothing in the manifest; "
        "models with config.meta.voyado: report, voyado_mart"
    )


def test_selector_matching_only_models_without_meta_voyado_names_them(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["tag:voyado", "other+"])
    assert message.startswith(
        "--select 'other+' matches only models without config.meta.voyado: other"
    )
    (message,) = _problems(graph, ["+hist"])
    assert "--select '+hist' matches only models without config.meta.voyado: hist, stg" in message


def test_selector_matching_no_model_says_what_it_matched(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["resource_type:seed"])
    assert "--select 'resource_type:seed' matches no model, only seed raw" in message


def test_many_unsynced_models_are_cut_short() -> None:
    nodes = [_node(f"model.p.m{i:02d}") for i in range(8)]
    g = DbtGraph.from_manifest({"nodes": {n["unique_id"]: n for n in nodes}})
    with pytest.raises(ConfigError, match="m00, m01, m02, m03, m04 and 3 more; models"):
        select_models(g, select=["p"], synced=[])


def test_intersection_says_which_part_matched_nothing(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["tag:voyado,tag:weekly"])
    assert "--select 'tag:voyado,tag:weekly' matches nothing in the manifest" in message
    assert "('tag:weekly' matches nothing)" in message
    (message,) = _problems(graph, ["tag:staging,tag:voyado"])
    assert "(its criteria have no node in common)" in message


def test_disabled_model_is_named(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["gone"])
    assert "matches nothing in the manifest; model.p.gone is disabled" in message


def test_every_problem_is_reported_at_once(graph: DbtGraph) -> None:
    messages = _problems(graph, ["nope other tag:voyado,", "@x+"], ["tag:weekly"])
    assert messages == [
        "--select 'tag:voyado,': empty criterion around ','",
        "--select '@x+': '@' and a trailing '+' cannot be combined",
        "--select 'nope' matches nothing in the manifest; "
        "models with config.meta.voyado: report, voyado_mart",
        "--select 'other' matches only models without config.meta.voyado: other; "
        "models with config.meta.voyado: report, voyado_mart",
        "--exclude 'tag:weekly' matches nothing in the manifest; "
        "models with config.meta.voyado: report, voyado_mart",
    ]


def test_exclude_that_leaves_nothing_is_an_error(graph: DbtGraph) -> None:
    (message,) = _problems(graph, ["voyado_mart"], ["tag:daily"])
    assert message == "--exclude 'tag:daily' leaves no model with config.meta.voyado to sync"
    (message,) = _problems(graph, [], ["tag:voyado", "stg"])
    assert message == "--exclude 'tag:voyado stg' leaves no model with config.meta.voyado to sync"


def test_graph_of_a_hand_built_manifest_is_its_models() -> None:
    m = Manifest(
        path=Path("manifest.json"),
        schema_version=12,
        dbt_version="1.11.0",
        adapter_type="duckdb",
        models=(),
    )
    assert m.select([]) == []


def test_graph_node_reads_any_section() -> None:
    node = graph_node(
        {
            "unique_id": "source.p.shop.orders",
            "resource_type": "source",
            "name": "orders",
            "source_name": "shop",
            "package_name": "p",
            "fqn": ["p", "shop", "orders"],
            "original_file_path": "models/sources.yml",
        },
        section="sources",
    )
    assert node == GraphNode(
        unique_id="source.p.shop.orders",
        resource_type="source",
        name="orders",
        package_name="p",
        fqn=("p", "shop", "orders"),
        original_file_path="models/sources.yml",
        section="sources",
        source_name="shop",
    )


# ---- against real `dbt ls` -----------------------------------------------------------------

_EXTRA_FILES = {
    "models/staging/stg_wishes.sql": (
        "{{ config(materialized='view', tags=['staging']) }}\n"
        "select customer_id, sku, reviewed_at as wished_at from {{ source('shop', 'wishes') }}\n"
    ),
    "models/staging/stg_prices.sql": (
        "{{ config(materialized='ephemeral') }}\nselect 'SKU-1' as sku, 10.0 as price\n"
    ),
    "models/staging/sources.yml": (
        "sources:\n  - name: shop\n    schema: main\n    tables:\n"
        "      - name: wishes\n        identifier: product_reviews\n"
    ),
    "models/marts/voyado_wishlist.sql": (
        "select w.customer_id, c.contact_id, w.sku, p.price, w.wished_at\n"
        "from {{ ref('stg_wishes') }} as w\n"
        "join {{ ref('customers') }} as c using (customer_id)\n"
        "left join {{ ref('stg_prices') }} as p using (sku)\n"
        "where w.customer_id in (select customer_id from {{ ref('voyado_product_reviews') }})\n"
    ),
    "models/marts/wishlist_report.sql": (
        "{{ config(tags=['wish', 'report']) }}\n"
        "select sku, count(*) as wishes from {{ ref('voyado_wishlist') }} group by sku\n"
    ),
    "models/marts/wishlist_daily.sql": (
        "{{ config(materialized='view') }}\nselect * from {{ ref('wishlist_report') }}\n"
    ),
    "models/marts/wish_history.sql": "select * from {{ ref('wishes_snapshot') }}\n",
    "models/marts/old_wishes.sql": "{{ config(enabled=false) }}\nselect 1 as x\n",
    "models/marts/voyado_points_v1.sql": "select 1 as points from {{ ref('customers') }}",
    "models/marts/voyado_points_v2.sql": "select 2 as points from {{ ref('customers') }}",
    "models/marts/marts.yml": """
models:
  - name: voyado_wishlist
    config:
      tags: [voyado, wish]
      meta:
        voyado:
          schema_id: wishlist
          unique_key: [customer_id, sku]
          contact:
            column: contact_id
          properties:
            sku: sku
    columns:
      - name: customer_id
        data_tests:
          - relationships:
              arguments:
                to: ref('customer_summary')
                field: customer_id
  - name: voyado_points
    latest_version: 2
    config:
      tags: [points]
    versions:
      - v: 1
      - v: 2
exposures:
  - name: wish_dashboard
    type: dashboard
    owner:
      email: data@example.com
    depends_on:
      - ref('wishlist_report')
""",
    "snapshots/wishes_snapshot.yml": """
snapshots:
  - name: wishes_snapshot
    relation: ref('stg_wishes')
    config:
      unique_key: customer_id
      strategy: check
      check_cols: all
""",
    "extras/dbt_project.yml": 'name: extras\nversion: "1.0.0"\nconfig-version: 2\n',
    "extras/models/extras_reviews.sql": "select * from {{ ref('voyado_product_reviews') }}\n",
    "packages.yml": "packages:\n  - local: extras\n",
}

# (select, exclude): each row picked so that a name-and-tag matcher, a comma read as a union,
# a walk over models only, or a missing --exclude would give another answer than dbt.
DBT_LS_CASES: list[tuple[list[str], list[str]]] = [
    (["tag:voyado"], []),
    (["tag:voyado,tag:wish"], []),
    (["tag:wish voyado_repairs"], []),
    (["tag:wish", "voyado_repairs"], []),
    (["+voyado_wishlist"], []),
    (["voyado_wishlist+"], []),
    (["voyado_wishlist+1"], []),
    (["1+wishlist_report"], []),
    (["2+wishlist_daily"], []),
    (["stg_wishes+"], []),
    (["@customer_summary"], []),
    (["@stg_prices"], []),
    (["source:shop+"], []),
    (["path:models/marts"], []),
    (["path:models/staging/stg_wishes.sql"], []),
    (["path:models/marts/marts.yml"], []),
    (["path:models/**/voyado_*.sql"], []),
    (["models/staging"], []),
    (["voyado_wishlist.sql"], []),
    (["fqn:voyado_example.marts.*"], []),
    (["marts"], []),
    (["voyado_*"], []),
    (["voyado_points"], []),
    (["voyado_points.v1"], []),
    (["version:latest"], []),
    (["voyado_example.voyado_repairs"], []),
    (["extras.extras_reviews"], []),
    (["package:extras+"], []),
    (["config.materialized:table"], []),
    (["config.materialized:view,marts"], []),
    (["config.tags:wish"], []),
    (["config.meta.voyado.schema_id:wishlist"], []),
    (["resource_type:model,tag:staging"], []),
    (["tag:voyado"], ["voyado_repairs"]),
    (["+wishlist_daily"], ["+voyado_wishlist"]),
    (["voyado_product_reviews+"], ["tag:wish", "extras"]),
    ([], ["tag:voyado path:models/staging"]),
    (["old_wishes"], []),
]

_DBT_LS = """
import json, sys
from dbt.cli.main import dbtRunner

project, out_path = sys.argv[1], sys.argv[2]
cases = json.loads(sys.argv[3])
common = ["--project-dir", project, "--profiles-dir", project]
parsed = dbtRunner().invoke(["parse", *common, "-q"])
if not parsed.success:
    raise SystemExit(f"dbt parse failed: {parsed.exception}")
runner = dbtRunner(manifest=parsed.result)
results = []
for select, exclude in cases:
    args = ["ls", *common, "-q", "--resource-type", "model", "--output", "json",
            "--output-keys", "unique_id"]
    for s in select:
        args += ["--select", s]
    for e in exclude:
        args += ["--exclude", e]
    res = runner.invoke(args)
    if not res.success:
        raise SystemExit(f"dbt ls {args} failed: {res.exception}")
    results.append(sorted(json.loads(line)["unique_id"] for line in res.result))
with open(out_path, "w") as fh:
    json.dump(results, fh)
"""


@pytest.fixture(scope="module")
def rich_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """The example project plus _EXTRA_FILES, parsed by dbt, and dbt ls's answer per case."""
    base = tmp_path_factory.mktemp("selection")
    project = base / "rich"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    for name, text in _EXTRA_FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    # Snapshots get a directory; the package's ref to a root model is fine, so silence dbt.
    dbt_yml = (project / "dbt_project.yml").read_text()
    flags = "flags:\n  send_anonymous_usage_stats: false\n"
    assert flags in dbt_yml
    dbt_yml = dbt_yml.replace(flags, flags + "  require_ref_prefers_node_package_to_root: true\n")
    (project / "dbt_project.yml").write_text(dbt_yml + 'snapshot-paths: ["snapshots"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "VOYADO_"))}
    env.update(DBT_SEND_ANONYMOUS_USAGE_STATS="false", VOYADO_EXAMPLE_DUCKDB=str(base / "x.db"))
    bin_dir = Path(sys.executable).parent
    for args in (
        [str(bin_dir / "dbt"), "deps", "--profiles-dir", str(project), "-q"],
        [
            sys.executable,
            "-c",
            _DBT_LS,
            str(project),
            str(base / "ls.json"),
            json.dumps(DBT_LS_CASES),
        ],
    ):
        proc = subprocess.run(
            args, cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (
            f"{args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return project, json.loads((base / "ls.json").read_text())


@pytest.fixture(scope="module")
def rich_manifest(rich_project: tuple[Path, list[list[str]]]) -> Manifest:
    return load_manifest(rich_project[0] / "target" / "manifest.json")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "select", "exclude"),
    [(i, s, e) for i, (s, e) in enumerate(DBT_LS_CASES)],
    ids=[" ".join([*s, *(f"--exclude {x}" for x in e)]) or "(none)" for s, e in DBT_LS_CASES],
)
def test_selection_matches_dbt_ls(
    rich_project: tuple[Path, list[list[str]]],
    rich_manifest: Manifest,
    case: int,
    select: list[str],
    exclude: list[str],
) -> None:
    expected = rich_project[1][case]
    assert rich_manifest.graph is not None
    ours = select_nodes(rich_manifest.graph, select, exclude)
    models = sorted(u for u in ours if rich_manifest.graph.nodes[u].resource_type == "model")
    assert models == expected
    # And what voyado-sync would sync: dbt's models with meta.voyado, or an error saying why not.
    synced = [m.unique_id for m in rich_manifest.voyado_models if m.unique_id in expected]
    try:
        chosen = [m.unique_id for m in rich_manifest.select(select, exclude=exclude)]
    except ConfigError:
        assert not synced or _some_selector_lacks_synced(rich_manifest, select)
    else:
        assert sorted(chosen) == sorted(synced)


def _some_selector_lacks_synced(manifest: Manifest, select: list[str]) -> bool:
    assert manifest.graph is not None
    voyado = {m.unique_id for m in manifest.voyado_models}
    return any(
        not select_nodes(manifest.graph, [token]) & voyado for s in select for token in s.split()
    )


@pytest.mark.slow
def test_rich_project_errors(rich_manifest: Manifest) -> None:
    with pytest.raises(ConfigError) as info:
        rich_manifest.select(["voyado_wishlst", "wishlist_report+", "path:models/marts/*_v?.sql"])
    assert [p.message.split(";")[0] for p in info.value.problems] == [
        "--select 'voyado_wishlst' matches nothing in the manifest",
        "--select 'wishlist_report+' matches only models without config.meta.voyado: "
        "wishlist_daily, wishlist_report",
        "--select 'path:models/marts/*_v?.sql' matches only models without "
        "config.meta.voyado: voyado_points.v1, voyado_points.v2",
    ]
    assert "voyado_wishlist" in info.value.problems[0].message


@pytest.mark.slow
def test_one_case_through_the_dbt_ls_command(
    rich_project: tuple[Path, list[list[str]]], rich_manifest: Manifest
) -> None:
    """The table asks dbt in-process (one parse for 38 cases); this asks the `dbt ls` command."""
    project = rich_project[0]
    select = ["@customer_summary", "tag:voyado,config.materialized:table"]
    exclude = ["voyado_repairs+", "stg_prices"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "VOYADO_"))}
    env.update(DBT_SEND_ANONYMOUS_USAGE_STATS="false", VOYADO_EXAMPLE_DUCKDB=str(project / "x.db"))
    args = [str(Path(sys.executable).parent / "dbt"), "ls", "--profiles-dir", str(project)]
    args += ["-q", "--resource-type", "model", "--output", "json", "--output-keys", "unique_id"]
    args += ["--select", *select, "--exclude", *exclude]
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = sorted(json.loads(line)["unique_id"] for line in proc.stdout.splitlines() if line)
    assert rich_manifest.graph is not None
    ours = select_nodes(rich_manifest.graph, select, exclude)
    assert sorted(u for u in ours if u.startswith("model.")) == expected
    assert [m.name for m in rich_manifest.select(select, exclude=exclude)] == [
        "voyado_active_subscriptions",
        "voyado_product_reviews",
        "voyado_wishlist",
    ]
