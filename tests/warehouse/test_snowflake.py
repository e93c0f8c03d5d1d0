"""The example project synced from Snowflake as fakesnow serves it, and every statement the
runs sent held to Snowflake's own name rules.

fakesnow (``fakesnow -s``) speaks Snowflake's protocol to dbt-snowflake and voyado-sync, but it
runs on DuckDB, where even quoted names ignore case: it accepts statements Snowflake refuses.
So the runs here record every statement they send (tests/warehouse/record_statements.py) and
the test replays them against a catalog kept as Snowflake keeps names (SnowflakeNames).

fakesnow, dbt-snowflake and voyado-sync live in .venv-snowflake (made by ``dev.py``): their
pins clash with the project's. One test, to keep CI lean: a second run refused while the first
sends, the first killed with SIGKILL mid-send, a rerun that completes it, a run that sends
nothing; every row stored in Voyado exactly once; every statement resolvable on Snowflake.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.projects import EXAMPLE, ROOT
from tests.warehouse.sqlcheck import SnowflakeNames
from voyado_sync.emulator import EmulatorHandle, load_contacts

pytestmark = pytest.mark.slow

VENV = ROOT / ".venv-snowflake" / "bin"
RECORDER = Path(__file__).with_name("record_statements.py")
PROFILE = """
voyado_example:
  target: sf
  outputs:
    sf:
      type: snowflake
      account: fake
      user: fake
      password: fake
      database: example_db
      schema: analytics
      warehouse: wh
      host: 127.0.0.1
      port: {port}
      protocol: http
      threads: 1
"""


@pytest.fixture(scope="module")
def fakesnow() -> Iterator[int]:
    if not (VENV / "fakesnow").exists():
        why = "no .venv-snowflake with fakesnow: python3 dev.py test makes it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen(
        [str(VENV / "fakesnow"), "-s", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "fakesnow died"
                time.sleep(0.1)
        create = (
            "import snowflake.connector as s; c = s.connect(account='fake', user='fake', "
            f"password='fake', host='127.0.0.1', port={port}, protocol='http'); "
            "c.cursor().execute('CREATE DATABASE IF NOT EXISTS example_db')"
        )
        subprocess.run([str(VENV / "python"), "-c", create], check=True, timeout=60)
        yield port
    finally:
        server.kill()
        server.wait()


_DIRS = ("--project-dir", ".", "--profiles-dir", ".")


def _sync(project: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV / "python"), str(RECORDER), str(log), "run", "--json", *_DIRS],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_example_project_on_fakesnow_exactly_once_and_under_snowflakes_name_rules(
    fakesnow: int, tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    project = tmp_path / "example"
    shutil.copytree(
        EXAMPLE,
        project,
        # The monitoring package is tested on DuckDB and PostgreSQL; here only the sync.
        ignore=shutil.ignore_patterns(
            "target", "logs", "*.duckdb*", "packages.yml", "package-lock.yml"
        ),
    )
    (project / "profiles.yml").write_text(PROFILE.format(port=fakesnow))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        VOYADO_BASE_URL=fresh_emulator.url,
        VOYADO_API_KEY="emulator-key",
        PATH=f"{VENV}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    build = subprocess.run(
        [str(VENV / "dbt"), "build", "--profiles-dir", "."],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:]
    fresh_emulator.add_contacts(load_contacts(project / "emulator_contacts.csv"))
    log = tmp_path / "statements.jsonl"

    fresh_emulator.configure(latency_ms=150)
    first = _sync(project, env, log)
    deadline = time.monotonic() + 300
    while fresh_emulator.stats()["stored"] < 10:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # A second run while the first sends: refused by the lock (no key is enforced here).
    second = _sync(project, env, tmp_path / "refused.jsonl")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2 and "another voyado-sync run" in err, err
    first.send_signal(signal.SIGKILL)
    first.wait()
    fresh_emulator.configure(latency_ms=0)

    rerun = _sync(project, env, log)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode in (0, 1), err  # 1: rows the example rejects on purpose
    assert json.loads(out)["warehouse"].startswith("snowflake")
    stats = fresh_emulator.stats()
    assert (stats["stored"], stats["duplicates"], stats["ignored"]) == (102, 0, 0)
    again = _sync(project, env, log)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert all(m["sent"] == 0 for m in json.loads(out)["models"])

    # Every statement, as Snowflake would resolve it. dbt-snowflake created the models with
    # unquoted names, so Snowflake stores them (and their columns) in upper case.
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    catalog = SnowflakeNames("EXAMPLE_DB")
    for entry in entries:
        if "columns" in entry and entry["names"]:
            schema, name = str(entry["columns"]).upper().split(".")[-2:]
            catalog.add_table(schema, name, [n.upper() for n in entry["names"]])
    statements = [e["sql"] for e in entries if "sql" in e]
    assert len(statements) > 50
    refused = [(sql, why) for sql in statements if (why := catalog.run(sql))]
    assert not refused, f"{len(refused)} of {len(statements)} refused:\n" + "\n".join(
        f"{why}\n  {sql[:300]}" for sql, why in refused[:5]
    )
