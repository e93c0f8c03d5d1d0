"""The example project synced from a real local Spark (pyspark, dbt-spark ``method: session``).

Plain Spark tables (Parquet, Hive metastore) have no information_schema, no DELETE, UPDATE or
MERGE, cannot declare a PRIMARY KEY, and hide tables whose path starts with ``_``: the ledger
is a journal there, columns come from DESCRIBE, and staging names start with ``vs_stage_``.

One test, to keep CI lean (a Spark JVM starts in ~10 s, each statement costs ~0.2-1 s): a run
killed with SIGKILL mid-send, a rerun that completes it, and a third run that sends nothing;
every row of the example project is then stored in Voyado exactly once. Spark's embedded
metastore (Derby) admits one process at a time, so two concurrent runs cannot even open it
here; the lock's protocol is tested in test_ledger_faults.py and on DuckDB/PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.projects import BIN, EXAMPLE
from voyado_sync.emulator import EmulatorHandle, load_contacts

pytestmark = pytest.mark.slow

PROFILE = """
voyado_example:
  target: spark
  outputs:
    spark:
      type: spark
      method: session
      schema: analytics
      host: NA
      threads: 1
"""


def _require_spark() -> None:
    missing = [m for m in ("pyspark", "dbt.adapters.spark") if importlib.util.find_spec(m) is None]
    if shutil.which("java") is None:
        missing.append("java")
    if missing:
        why = f"Spark is not installed ({', '.join(missing)}): python3 dev.py setup installs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)


def _env(emulator: EmulatorHandle) -> dict[str, str]:
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    env["VOYADO_BASE_URL"] = emulator.url
    env["VOYADO_API_KEY"] = "emulator-key"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _sync(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "voyado-sync"), "run", "--json", "--project-dir", ".", "--profiles-dir", "."],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_example_project_syncs_from_spark_exactly_once_through_a_sigkill(
    tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    _require_spark()
    project = tmp_path / "example"
    shutil.copytree(
        EXAMPLE,
        project,
        # The monitoring package is tested on DuckDB and PostgreSQL; here only the sync.
        ignore=shutil.ignore_patterns(
            "target", "logs", "*.duckdb*", "packages.yml", "package-lock.yml"
        ),
    )
    (project / "profiles.yml").write_text(PROFILE)
    seeds = project / "seeds" / "seeds.yml"  # Spark has string, not varchar
    seeds.write_text(seeds.read_text().replace(": varchar\n", ": string\n"))
    env = _env(fresh_emulator)
    started = time.monotonic()
    build = subprocess.run(
        [str(BIN / "dbt"), "build", "--profiles-dir", "."],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:]
    fresh_emulator.add_contacts(load_contacts(project / "emulator_contacts.csv"))

    # Slow answers, so that the kill lands with rows journaled and requests in flight.
    fresh_emulator.configure(latency_ms=150)
    killed = _sync(project, env)
    deadline = time.monotonic() + 300
    while fresh_emulator.stats()["stored"] < 20:
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    fresh_emulator.configure(latency_ms=0)

    rerun = _sync(project, env)
    out, _ = rerun.communicate(timeout=600)
    doc = json.loads(out)
    assert rerun.returncode in (0, 1), out  # 1: rows the example rejects on purpose
    assert doc["warehouse"].startswith("spark")
    stats = fresh_emulator.stats()
    assert (stats["stored"], stats["duplicates"], stats["ignored"]) == (102, 0, 0)

    again = _sync(project, env)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert all(m["sent"] == 0 for m in json.loads(out)["models"])
    assert fresh_emulator.stats()["stored"] == 102
    print(f"Spark: build + 3 runs in {time.monotonic() - started:.0f}s", file=sys.stderr)
