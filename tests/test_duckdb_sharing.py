"""While a sync sends, dbt (or any writer) can still use the DuckDB file, and `rejected` and
`run --dry-run` can watch the run: voyado-sync holds the file only for its short statements,
and waits, saying so, while another process holds it."""

from __future__ import annotations

import json
import os
import subprocess
import time

import duckdb
import pytest
from click.testing import CliRunner

from tests.projects import BIN, BuiltProject
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow


def _connect_within(db: str, seconds: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return duckdb.connect(db)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_writer_can_use_the_duckdb_file_while_a_slow_sync_sends(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    db = os.environ[example.db_env]
    fresh_emulator.configure(latency_ms=150)
    project = str(example.project_dir)
    args = ["--project-dir", project, "--profiles-dir", project]
    sync = subprocess.Popen(
        [str(BIN / "voyado-sync"), "run", "--json", "--concurrency", "1", *args],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while fresh_emulator.stats()["stored"] < 5:
            assert sync.poll() is None, sync.communicate()
            time.sleep(0.05)
        # What dbt build does to the file: open it for writing, write, close. Holding it a
        # while makes voyado-sync wait for it.
        con = _connect_within(db, 5)
        con.execute("create or replace table main.written_by_dbt as select 42 as answer")
        time.sleep(1.0)
        con.close()
        mid_run = fresh_emulator.stats()["stored"]
        # Watching the run works too.
        rejected = CliRunner().invoke(cli, ["rejected", *args], catch_exceptions=False)
        dry = CliRunner().invoke(cli, ["run", "--dry-run", "--json", *args])
        assert rejected.exit_code in (0, 1), rejected.output
        assert dry.exit_code in (0, 1), dry.output
        assert json.loads(dry.stdout)["dry_run"] is True
        out, err = sync.communicate(timeout=120)
    finally:
        if sync.poll() is None:
            sync.kill()
    assert mid_run < 102, "the sync finished before the writer came: the test proves nothing"
    assert sync.returncode == 1, err  # rows the example rejects on purpose
    assert sum(m["sent"] for m in json.loads(out)["models"]) == 102
    stats = fresh_emulator.stats()
    assert (stats["stored"], stats["duplicates"], stats["ignored"]) == (102, 0, 0)
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("select answer from main.written_by_dbt").fetchall() == [(42,)]
    finally:
        con.close()
