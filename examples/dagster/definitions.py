"""A Dagster asset that syncs dbt models to Voyado, downstream of those models.

``build_definitions(project_dir)`` makes two kinds of assets from one dbt project:

* the dbt models (dagster-dbt's ``@dbt_assets``, built with ``dbt build``), without the
  monitoring package, which is worth building only after a sync;
* ``voyado_sync``: one asset that depends on every model with ``config.meta.voyado`` through
  dagster-dbt's asset keys, so it runs after them, and calls ``voyado_sync.run(...)``: the same
  code as ``voyado-sync run``, so it writes the same run history to the ledger, the same
  ``target/voyado_sync_results.json`` and sends the same alerts.

Exit code 1 (rows rejected or failed) materializes with the counts as metadata and a warning in
the log; exit code 2 raises (ConfigError, LockError, FatalApiError, SchemaRefused...), which
fails the step. Try it: ``dbt parse`` in dbt_project_example, then
``dagster dev -f examples/dagster/definitions.py`` with VOYADO_BASE_URL and VOYADO_API_KEY set.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at runtime.
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, Definitions, MaterializeResult, MetadataValue, asset
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets, get_asset_key_for_model

import voyado_sync

EXAMPLE = Path(__file__).resolve().parents[2] / "dbt_project_example"
MONITORING = "package:voyado_sync_monitoring"


def voyado_models(manifest_path: Path) -> list[str]:
    """The names of the models that declare ``config.meta.voyado``, in manifest order."""
    manifest = json.loads(manifest_path.read_text())
    return [
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and (node.get("config", {}).get("meta") or {}).get("voyado")
    ]


def build_definitions(
    project_dir: Path, *, profiles_dir: Path | None = None, target: str | None = None
) -> Definitions:
    project = DbtProject(
        project_dir=project_dir, profiles_dir=profiles_dir or project_dir, target=target
    )

    @dbt_assets(manifest=project.manifest_path, project=project, exclude=MONITORING)
    def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        yield from dbt.cli(["build", "--exclude", MONITORING], context=context).stream()

    synced = voyado_models(project.manifest_path)

    @asset(
        name="voyado_sync",
        group_name="voyado",
        kinds={"python"},
        deps=[get_asset_key_for_model([dbt_models], name) for name in synced],
        description="Rows of the meta.voyado models not yet in Voyado, sent exactly once.",
    )
    def voyado_sync_asset(context: AssetExecutionContext) -> MaterializeResult:
        result = voyado_sync.run(
            project_dir=project.project_dir,
            profiles_dir=project.profiles_dir,
            target=target,
            select=synced,
        )
        totals = result.totals()
        if result.exit_code == 1:
            context.log.warning(
                f"voyado-sync run {result.run_id}: {totals['rejected']} rejected, "
                f"{totals['failed']} failed rows; see `voyado-sync rejected`"
            )
        return MaterializeResult(
            metadata={
                "run_id": result.run_id,
                "exit_code": result.exit_code,
                **{f"rows_{key}": value for key, value in totals.items()},
                "artifact": MetadataValue.path(str(result.artifact)),
                "result": MetadataValue.json(result.as_dict()),
            }
        )

    return Definitions(
        assets=[dbt_models, voyado_sync_asset],
        resources={"dbt": DbtCliResource(project_dir=project)},
    )


# `dagster dev -f examples/dagster/definitions.py`: the example project, once it is parsed.
defs = build_definitions(EXAMPLE) if (EXAMPLE / "target" / "manifest.json").exists() else None
