"""The Dagster example (examples/dagster/definitions.py), materialized in process against the
example project and the emulator: dbt's models first, then the voyado_sync asset downstream of
them through dagster-dbt's asset keys, calling the Python API.

Dagster and dagster-dbt live in their own virtual environment (``python3 dev.py test`` creates
it as .venv/dagster): dagster-dbt pulls sqlglot's compiled build, which would replace the
sqlglot the rest of the suite runs on. So the materialization runs in a subprocess there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.projects import ROOT, BuiltProject
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow

DAGSTER_PYTHON = Path(
    os.environ.get("TEST_DAGSTER_PYTHON") or ROOT / ".venv" / "dagster" / "bin" / "python"
)

SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1])))
from dagster import AssetKey, materialize
from definitions import build_definitions

defs = build_definitions(Path(sys.argv[2]))
assets = list(defs.assets)
result = materialize(assets, resources=defs.resources)
sync = next(a for a in assets if AssetKey("voyado_sync") in a.keys)
dbt = next(a for a in assets if AssetKey("voyado_sync") not in a.keys)
events = result.asset_materializations_for_node("voyado_sync")
metadata = {k: v.value for k, v in events[0].metadata.items() if k != "result"}
print(json.dumps({
    "success": result.success,
    "deps": sorted(k.to_user_string() for k in sync.asset_deps[AssetKey("voyado_sync")]),
    "dbt_keys": sorted(k.to_user_string() for k in dbt.keys),
    "metadata": metadata,
}, default=str))
"""


def test_dagster_asset_runs_after_the_dbt_models_and_records_the_run(
    example: BuiltProject, tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    if not DAGSTER_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{DAGSTER_PYTHON} is missing: python3 dev.py test creates it")
        pytest.skip("no Dagster environment: run python3 dev.py setup")
    project = Path(shutil.copytree(example.project_dir, tmp_path / "project", symlinks=True))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's voyado_sync, whatever is installed
    env["PATH"] = f"{DAGSTER_PYTHON.parent}{os.pathsep}{env.get('PATH', '')}"  # its dbt
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    proc = subprocess.run(
        [str(DAGSTER_PYTHON), "-c", SCRIPT, str(ROOT / "examples" / "dagster"), str(project)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["success"] is True
    synced = ["voyado_active_subscriptions", "voyado_product_reviews", "voyado_repairs"]
    assert out["deps"] == synced  # downstream of exactly the models it syncs
    assert set(synced) <= set(out["dbt_keys"])
    assert not any(k.startswith("voyado_sync_") or k.startswith("stg_") for k in out["dbt_keys"])
    metadata = out["metadata"]
    assert metadata["exit_code"] == 1  # rejected rows: materialized, with the counts
    assert (metadata["rows_sent"], metadata["rows_rejected"]) == (102, 5)
    assert fresh_emulator.stats()["stored"] == 102

    # The run history, as the CLI records it: the ledger's runs table and the artifact.
    con = duckdb.connect(os.environ[example.db_env], read_only=True)
    try:
        runs = con.execute("select run_id, status, sent from voyado_sync.runs").fetchall()
    finally:
        con.close()
    assert runs == [(metadata["run_id"], "ok", 102)]
    doc = json.loads((project / "target" / "voyado_sync_results.json").read_text())
    assert doc["run_id"] == metadata["run_id"] and doc["exit_code"] == 1
    assert (project / "target" / "run_results.json").exists()  # dagster-dbt's dbt build
