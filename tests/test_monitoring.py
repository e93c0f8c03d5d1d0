"""The dbt monitoring package (integrations/dbt/voyado_sync_monitoring), as the example project
installs it: a real sync against the emulator, then `dbt deps` and
`dbt build --select package:voyado_sync_monitoring`, then the models' rows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

import voyado_sync
from tests.projects import BIN, ROOT, BuiltProject, dbt_deps

pytestmark = pytest.mark.slow


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def dbt(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dbt"), *args, "--profiles-dir", str(project)],
        cwd=project,
        env=dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_monitoring_models_after_a_sync(example: BuiltProject, tmp_path: Path) -> None:
    db = Path(os.environ[example.db_env])
    # Built with the example before any sync: the models exist, empty, and freshness is stale.
    assert rows(db, "select count(*) as n from main.stg_voyado_sync__runs") == [{"n": 0}]
    assert rows(db, "select is_stale from main.voyado_sync_freshness") == [{"is_stale": True}]

    project = Path(shutil.copytree(example.project_dir, tmp_path / "project", symlinks=True))
    (tmp_path / "integrations").symlink_to(ROOT / "integrations", target_is_directory=True)
    shutil.rmtree(project / "dbt_packages")
    dbt_deps(project)  # a fresh install by local path, offline
    assert (project / "dbt_packages" / "voyado_sync_monitoring" / "dbt_project.yml").exists()

    result = voyado_sync.run(project_dir=project, profiles_dir=project)
    assert result.exit_code == 1  # 5 rows rejected, 1 waiting for its contact

    build = dbt(project, "build", "--select", "package:voyado_sync_monitoring")
    assert build.returncode == 0, build.stdout[-3000:]
    assert "WARN=0" in build.stdout and "ERROR=0" in build.stdout  # ran recently: no warning

    daily = rows(db, "select * from main.voyado_sync_runs_daily")
    assert len(daily) == 1
    day = daily[0]
    assert (day["runs"], day["successful_runs"], day["clean_runs"]) == (1, 1, 0)
    assert (day["rows_sent"], day["rows_rejected"], day["rows_failed"]) == (102, 5, 0)
    assert day["max_duration_seconds"] is not None and day["max_duration_seconds"] >= 0
    assert str(day["run_date"]) == result.started_at[:10]

    rejected = rows(
        db,
        "select model, sum(row_count) as n from main.voyado_sync_rejections "
        "where status = 'rejected' group by model order by model",
    )
    # The ledger holds one row per key: two reviews sharing a key are one rejected entry, so
    # the run's 4 rejected review rows are 3 here.
    assert rejected == [
        {"model": "voyado_product_reviews", "n": 3},
        {"model": "voyado_repairs", "n": 1},
    ]
    causes = rows(db, "select cause, example_reason from main.voyado_sync_rejections")
    assert all(c["cause"] and c["example_reason"].startswith(c["cause"]) for c in causes)

    waiting = rows(db, "select * from main.voyado_sync_waiting_contacts")
    assert [w["model"] for w in waiting] == ["voyado_active_subscriptions"]
    assert 0 <= waiting[0]["hours_waiting"] < 1

    fresh = rows(db, "select * from main.voyado_sync_freshness")
    assert len(fresh) == 1
    assert fresh[0]["is_stale"] is False and fresh[0]["last_status"] == "ok"
    assert 0 <= fresh[0]["hours_since_last_success"] < 1

    # With a freshness window of zero hours the same run is too old: the test warns, and a
    # warning does not fail the build.
    stale = dbt(
        project,
        "build",
        "--select",
        "package:voyado_sync_monitoring",
        "--vars",
        "{voyado_sync_freshness_hours: 0}",
    )
    assert stale.returncode == 0, stale.stdout[-3000:]
    assert "voyado_sync_ran_recently" in stale.stdout and "WARN=1" in stale.stdout
