"""Opening a DuckDB target: directly when profiles.yml is plain, through dbt otherwise; the
memory cap voyado-sync puts on DuckDB unless the profile sets one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from voyado_sync.exceptions import ConfigError, WarehouseError
from voyado_sync.warehouse.adapter import MEMORY_LIMIT_ENV, DbtWarehouse, direct_duckdb_output

PROFILE = """
shop:
  target: "{{ env_var('SHOP_TARGET', 'dev') }}"
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('SHOP_DUCKDB') }}"
      threads: 4
    capped:
      type: duckdb
      path: "{{ env_var('SHOP_DUCKDB') }}"
      settings:
        memory_limit: 100MB
    fancy:
      type: duckdb
      path: "{{ env_var('SHOP_DUCKDB') }}"
      extensions: [httpfs]
    renamed:
      type: duckdb
      path: "{{ env_var('SHOP_DUCKDB') }}"
      database: other
    filtered:
      type: duckdb
      path: "{{ env_var('SHOP_DUCKDB') | as_text }}"
    pg:
      type: postgres
      host: localhost
      user: u
      password: p
      dbname: d
      schema: s
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dbt_project.yml").write_text(
        "name: shop\nprofile: shop\nversion: '1.0'\nconfig-version: 2\n"
    )
    (tmp_path / "profiles.yml").write_text(PROFILE)
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE orders AS SELECT range AS id FROM range(3)")
    monkeypatch.setenv("SHOP_DUCKDB", str(db))
    monkeypatch.delenv("SHOP_TARGET", raising=False)
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    monkeypatch.delenv("VOYADO_SYNC_OPEN_WITH_DBT", raising=False)
    return tmp_path


@pytest.fixture(params=[False, True], ids=["direct", "dbt"])
def via_dbt(request: pytest.FixtureRequest, project: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways of opening a DuckDB target: directly, and through dbt-duckdb's adapter."""
    if request.param:
        monkeypatch.setenv("VOYADO_SYNC_OPEN_WITH_DBT", "1")
    return bool(request.param)


def output(project: Path, target: str | None = None) -> object:
    found = direct_duckdb_output(project, project, target=target, profile=None)
    return None if found is None else found[0]


def test_plain_duckdb_targets_are_opened_directly_others_by_dbt(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert output(project) == "dev"  # the profile's target, itself rendered
    monkeypatch.setenv("SHOP_TARGET", "capped")
    assert output(project) == "capped"
    assert output(project, "dev") == "dev"
    for target in ("fancy", "renamed", "filtered", "pg", "missing"):
        assert output(project, target) is None, target
    monkeypatch.setenv("VOYADO_SYNC_OPEN_WITH_DBT", "1")
    assert output(project, "dev") is None
    monkeypatch.delenv("VOYADO_SYNC_OPEN_WITH_DBT")
    monkeypatch.delenv("SHOP_DUCKDB")
    assert output(project, "dev") is None  # dbt says which variable is missing


def _limit(warehouse: DbtWarehouse) -> str:
    return str(warehouse.query("SELECT current_setting('memory_limit')")[0][0])


def test_both_ways_open_the_same_database_with_memory_capped(
    project: Path, monkeypatch: pytest.MonkeyPatch, via_dbt: bool
) -> None:
    warehouse = DbtWarehouse(project_dir=project, profiles_dir=project)
    try:
        assert warehouse.database == "shop"
        assert warehouse.target_schema == "main"
        assert warehouse.description.startswith(f"DuckDB file {project / 'shop.duckdb'}")
        assert warehouse.query("SELECT count(*) FROM orders") == [(3,)]
        assert (warehouse._adapter is None) is not via_dbt
        assert _limit(warehouse) == "122.0 MiB"  # 128MB, voyado-sync's default
    finally:
        warehouse.close()
    capped = DbtWarehouse(project_dir=project, profiles_dir=project, target="capped")
    try:
        assert _limit(capped) == "95.3 MiB"  # the profile's 100MB wins
    finally:
        capped.close()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1GB")
    raised = DbtWarehouse(project_dir=project, profiles_dir=project)
    try:
        assert _limit(raised) == "953.6 MiB"
    finally:
        raised.close()
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MEMORY_LIMIT_ENV}='lots'"):
        DbtWarehouse(project_dir=project, profiles_dir=project)


def test_a_missing_file_is_reported_as_before(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DUCKDB", str(project / "nope.duckdb"))
    with pytest.raises(WarehouseError, match="does not exist: run dbt build first"):
        DbtWarehouse(project_dir=project, profiles_dir=project)
    assert not (project / "nope.duckdb").exists()


def test_the_direct_way_does_not_import_dbt(project: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from voyado_sync.warehouse.adapter import DbtWarehouse
        w = DbtWarehouse(project_dir=Path({str(project)!r}), profiles_dir=Path({str(project)!r}))
        dbt = any(m == "dbt" or m.startswith("dbt.") for m in sys.modules)
        print(w.query("SELECT count(*) FROM orders")[0][0], dbt)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["3", "False"]


def test_a_diff_too_big_for_the_default_limit_gets_more_memory_not_a_failure(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import voyado_sync.warehouse.adapter as adapter

    heavy = (
        "CREATE TABLE t AS SELECT *, row_number() OVER (ORDER BY k) AS n FROM "
        "(SELECT md5(range::VARCHAR) AS k, repeat('x', 200) AS pad FROM range(300000))"
    )
    monkeypatch.setattr(adapter, "DEFAULT_DUCKDB_MEMORY_LIMIT", "4MB")
    warehouse = DbtWarehouse(project_dir=project, profiles_dir=project)
    try:
        warehouse.execute_many(["DROP TABLE IF EXISTS t", heavy])
        assert warehouse.query("SELECT count(*) FROM t") == [(300_000,)]
        assert warehouse.memory_limit != "4MB"
        assert "needed more than 4MB" in caplog.text
    finally:
        warehouse.close()
    # A limit the user chose is kept, and the error says how to raise it.
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "4MB")
    chosen = DbtWarehouse(project_dir=project, profiles_dir=project)
    try:
        with pytest.raises(WarehouseError, match=f"memory limit \\(4MB\\).*{MEMORY_LIMIT_ENV}"):
            chosen.execute_many(["DROP TABLE IF EXISTS t", heavy])
    finally:
        chosen.close()


def test_a_join_of_keys_gets_more_memory_for_its_statements_only(
    project: Path, monkeypatch: pytest.MonkeyPatch, via_dbt: bool
) -> None:
    warehouse = DbtWarehouse(project_dir=project, profiles_dir=project)
    assert (warehouse._adapter is None) is not via_dbt
    try:
        with warehouse.keys_join():
            assert _limit(warehouse) == "488.2 MiB"  # 512MB while the key join runs
            assert warehouse.query("SELECT count(*) FROM orders") == [(3,)]
        assert _limit(warehouse) == "122.0 MiB"  # and the cap for staged rows after
        assert warehouse.memory_limit == "128MB"
        with pytest.raises(WarehouseError), warehouse.keys_join():
            warehouse.query("SELECT * FROM no_such_table")
        assert _limit(warehouse) == "122.0 MiB"  # restored when the statement failed too
    finally:
        warehouse.close()
    # A limit the user chose is theirs, in the key join too.
    for target, env, expected in (("capped", None, "95.3 MiB"), (None, "64MB", "61.0 MiB")):
        if env:
            monkeypatch.setenv(MEMORY_LIMIT_ENV, env)
        chosen = DbtWarehouse(project_dir=project, profiles_dir=project, target=target)
        try:
            with chosen.keys_join():
                assert _limit(chosen) == expected
        finally:
            chosen.close()
