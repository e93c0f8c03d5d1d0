"""Reading dbt's manifest.json: versions, the models with meta.voyado, selection, unique tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voyado_sync.exceptions import ConfigError, ManifestError
from voyado_sync.manifest import Manifest, load_manifest, manifest_path
from voyado_sync.spec import Relation

PROJECT = "shop"
VOYADO = {"schema_id": "x", "unique_key": "id", "contact": {"column": "c"}, "properties": {}}


def _model(
    name: str,
    *,
    voyado: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    enabled: bool = True,
    columns: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    meta = {"voyado": voyado} if voyado is not None else {}
    return {
        "unique_id": f"model.{PROJECT}.{name}",
        "resource_type": "model",
        "name": name,
        "database": "analytics",
        "schema": "marts",
        "alias": name,
        "tags": tags or [],
        "config": {"enabled": enabled, "materialized": "table", "meta": meta, "tags": tags or []},
        "columns": {c: {"name": c, "data_type": t} for c, t in (columns or {}).items()},
    }


def _unique_test(model: str, column: str, *, test_name: str = "unique") -> dict[str, Any]:
    return {
        "unique_id": f"test.{PROJECT}.{test_name}_{model}_{column}.abc123",
        "resource_type": "test",
        "name": f"{test_name}_{model}_{column}",
        "test_metadata": {"name": test_name, "kwargs": {"column_name": column}},
        "attached_node": f"model.{PROJECT}.{model}",
        "column_name": column,
        "depends_on": {"nodes": [f"model.{PROJECT}.{model}"]},
    }


def _write(
    tmp_path: Path, nodes: list[dict[str, Any]], *, version: int = 12, dbt_version: str = "1.11.0"
) -> Path:
    path = tmp_path / "target" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "metadata": {
            "dbt_schema_version": f"https://schemas.getdbt.com/dbt/manifest/v{version}.json",
            "dbt_version": dbt_version,
            "adapter_type": "duckdb",
        },
        "nodes": {n["unique_id"]: n for n in nodes},
    }
    path.write_text(json.dumps(data))
    return path


PROJECT_NODES = [
    _model("voyado_reviews", voyado=VOYADO, tags=["voyado"]),
    _model("voyado_repairs", voyado=VOYADO, tags=["voyado", "daily"]),
    _model("voyado_subscriptions", voyado=VOYADO),
    _model("customer_summary"),
    _model("old_reviews", voyado=VOYADO, tags=["voyado"], enabled=False),
]


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    return load_manifest(_write(tmp_path, PROJECT_NODES))


def _names(models: list[Any]) -> list[str]:
    return [m.name for m in models]


# ---- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [10, 11, 12])
def test_supported_manifest_versions_are_read(tmp_path: Path, version: int) -> None:
    m = load_manifest(_write(tmp_path, PROJECT_NODES, version=version))
    assert m.schema_version == version
    assert m.dbt_version == "1.11.0"
    assert m.adapter_type == "duckdb"


def test_models_carry_relation_tags_and_columns(tmp_path: Path) -> None:
    node = _model(
        "voyado_reviews",
        voyado=VOYADO,
        tags=["voyado"],
        columns={"review_id": "integer", "rating": None},
    )
    node["alias"] = "reviews_v2"
    (model,) = load_manifest(_write(tmp_path, [node])).models
    assert model.unique_id == "model.shop.voyado_reviews"
    assert model.relation == Relation("analytics", "marts", "reviews_v2")
    assert str(model.relation) == "analytics.marts.reviews_v2"
    assert model.tags == ("voyado",)
    assert model.voyado == VOYADO
    assert model.declared_columns == {"review_id": "integer", "rating": None}


def test_old_manifest_is_refused_with_supported_versions(tmp_path: Path) -> None:
    path = _write(tmp_path, PROJECT_NODES, version=9, dbt_version="1.5.0")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert "v9" in message and "dbt 1.5.0" in message
    assert "v10 to v12" in message
    assert "dbt 1.6 or later" in message


def test_missing_manifest_says_run_dbt_build_first(tmp_path: Path) -> None:
    path = manifest_path(tmp_path)
    assert path == tmp_path / "target" / "manifest.json"
    with pytest.raises(ManifestError, match="run dbt build first") as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_manifest_path_follows_target_path(tmp_path: Path) -> None:
    assert manifest_path(tmp_path, "build") == tmp_path / "build" / "manifest.json"
    assert manifest_path(tmp_path, "/abs/out") == Path("/abs/out/manifest.json")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "cannot read the dbt manifest"),
        ("[1, 2]", "expected a JSON object"),
        ('{"metadata": {}, "nodes": {}}', "no recognisable metadata.dbt_schema_version"),
        (
            '{"metadata": {"dbt_schema_version": '
            '"https://schemas.getdbt.com/dbt/run-results/v6.json"}, "nodes": {}}',
            "is it a dbt manifest?",
        ),
        (
            '{"metadata": {"dbt_schema_version": '
            '"https://schemas.getdbt.com/dbt/manifest/v12.json"}}',
            "no 'nodes' section",
        ),
    ],
)
def test_unreadable_manifest_is_a_manifest_error(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=says):
        load_manifest(path)


# ---- models with meta.voyado ------------------------------------------------------------------


def test_only_enabled_models_with_meta_voyado_are_candidates(manifest: Manifest) -> None:
    assert sorted(_names(list(manifest.voyado_models))) == [
        "voyado_repairs",
        "voyado_reviews",
        "voyado_subscriptions",
    ]


def test_meta_at_node_top_level_is_read(tmp_path: Path) -> None:
    node = _model("legacy")
    node["meta"] = {"voyado": VOYADO}
    (model,) = load_manifest(_write(tmp_path, [node])).models
    assert model.voyado == VOYADO


# ---- selection (the grammar itself is tested in test_selection.py) ------------------------------


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        ([], ["voyado_reviews", "voyado_repairs", "voyado_subscriptions"]),
        (["voyado_reviews"], ["voyado_reviews"]),
        (["shop.voyado_reviews"], ["voyado_reviews"]),
        (["tag:voyado"], ["voyado_reviews", "voyado_repairs"]),
        (["tag:daily"], ["voyado_repairs"]),
        # dbt: a comma is an intersection, a space or a second -s a union
        (["tag:voyado,tag:daily"], ["voyado_repairs"]),
        (["voyado_reviews voyado_subscriptions"], ["voyado_reviews", "voyado_subscriptions"]),
        (["voyado_subscriptions", "voyado_reviews"], ["voyado_reviews", "voyado_subscriptions"]),
        (["tag:voyado", "voyado_repairs"], ["voyado_reviews", "voyado_repairs"]),
        # other models may be selected along the way; only those with meta.voyado are kept
        (["shop"], ["voyado_reviews", "voyado_repairs", "voyado_subscriptions"]),
        (
            ["config.materialized:table"],
            ["voyado_reviews", "voyado_repairs", "voyado_subscriptions"],
        ),
    ],
)
def test_selection(manifest: Manifest, selectors: list[str], expected: list[str]) -> None:
    assert _names(manifest.select(selectors)) == expected


def test_exclude_is_removed_after_the_union(manifest: Manifest) -> None:
    assert _names(manifest.select(["tag:voyado"], exclude=["tag:daily"])) == ["voyado_reviews"]
    assert _names(manifest.select(exclude=["tag:voyado"])) == ["voyado_subscriptions"]


def test_graph_operators_reach_through_seeds_and_snapshots(tmp_path: Path) -> None:
    seed = {**_model("raw_reviews"), "unique_id": "seed.shop.raw_reviews", "resource_type": "seed"}
    snapshot = {**_model("reviews_snapshot"), "unique_id": "snapshot.shop.reviews_snapshot"}
    snapshot.update(resource_type="snapshot", depends_on={"nodes": ["seed.shop.raw_reviews"]})
    synced = _model("voyado_reviews", voyado=VOYADO)
    synced["depends_on"] = {"nodes": ["snapshot.shop.reviews_snapshot"]}
    other = _model("voyado_repairs", voyado=VOYADO)
    manifest = load_manifest(_write(tmp_path, [seed, snapshot, synced, other]))
    assert _names(manifest.select(["raw_reviews+"])) == ["voyado_reviews"]
    (model,) = manifest.select(["@reviews_snapshot"])
    assert model.depends_on == ("snapshot.shop.reviews_snapshot",)
    assert model.fqn == ("shop", "voyado_reviews")
    assert model.package_name == "shop"


def test_unknown_name_lists_the_models_with_meta_voyado(manifest: Manifest) -> None:
    with pytest.raises(ConfigError) as info:
        manifest.select(["voyado_review"])
    (problem,) = info.value.problems
    assert problem.message == (
        "--select 'voyado_review' matches nothing in the manifest; "
        "models with config.meta.voyado: voyado_repairs, voyado_reviews, voyado_subscriptions"
    )


def test_every_bad_selector_is_reported(manifest: Manifest) -> None:
    with pytest.raises(ConfigError) as info:
        manifest.select(["nope tag:weekly voyado_reviews"], exclude=["tag:dialy"])
    assert len(info.value.problems) == 3
    assert "--select 'tag:weekly' matches nothing" in info.value.problems[1].message
    assert "--exclude 'tag:dialy' matches nothing" in info.value.problems[2].message


def test_model_without_meta_voyado_says_so(manifest: Manifest) -> None:
    with pytest.raises(ConfigError) as info:
        manifest.select(["customer_summary"])
    (problem,) = info.value.problems
    assert problem.message.startswith(
        "--select 'customer_summary' matches only models without config.meta.voyado: "
        "customer_summary;"
    )


def test_disabled_model_is_not_selectable(manifest: Manifest) -> None:
    with pytest.raises(ConfigError, match=r"model\.shop\.old_reviews is disabled"):
        manifest.select(["old_reviews"])


# ---- unique tests -----------------------------------------------------------------------------


def test_unique_tests_are_attached_to_their_models(tmp_path: Path) -> None:
    nodes = [
        _model("voyado_reviews", voyado=VOYADO),
        _model("voyado_repairs", voyado=VOYADO),
        _unique_test("voyado_reviews", "review_id"),
        _unique_test("voyado_reviews", '"Order_Line"'),
        _unique_test("voyado_reviews", "contact_id", test_name="not_null"),
        _unique_test("voyado_repairs", "repair_id"),
    ]
    models = {m.name: m for m in load_manifest(_write(tmp_path, nodes)).models}
    assert models["voyado_reviews"].unique_tested_columns == {"review_id", "order_line"}
    assert models["voyado_repairs"].unique_tested_columns == {"repair_id"}


def test_unique_test_without_attached_node_uses_depends_on(tmp_path: Path) -> None:
    test = _unique_test("voyado_reviews", "review_id")
    del test["attached_node"]
    del test["column_name"]
    nodes = [_model("voyado_reviews", voyado=VOYADO), test]
    (model,) = load_manifest(_write(tmp_path, nodes)).models
    assert model.unique_tested_columns == {"review_id"}
