"""Issue 16's CLI findings, reproduced on a real dbt project, a real DuckDB file and the
emulator over HTTP: rejections grouped by cause, typos of meta.voyado, validate without a
warehouse, type: integer on decimals, `runs`, one --json envelope, --log-format json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.projects import BIN, DB_ENV, BuiltProject, dbt_build
from voyado_sync.cli import cli
from voyado_sync.emulator import Contact, EmulatorHandle
from voyado_sync.emulator.config import DEFAULT_API_KEY

pytestmark = pytest.mark.slow

KNOWN = "cli-known-1"

_PROJECT = """
name: shop
profile: shop
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  shop:
    +materialized: table
"""
_PROFILES = """
shop:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_TEST_DUCKDB') }}"
      threads: 1
"""
# 40 rows: 10 of a known contact (2 of them with a rating of 4.5 under type: integer), 20 of
# contacts Voyado does not know (404 ContactNotFound), 10 rows sharing 5 keys (duplicates).
_VISITS = f"""
select
    case when i >= 30 then 'dup-' || cast(i % 5 as varchar)
         else 'v-' || lpad(cast(i as varchar), 3, '0') end as visit_id,
    case when i < 10 then '{KNOWN}'
         else 'cli-unknown-' || lpad(cast(i as varchar), 3, '0') end as contact_id,
    timestamp '2025-03-01 10:00:00' + to_seconds(i * 60) as visited_at,
    case when i < 10 then 'Göteborg' else 'Malmö' end as city,
    cast(case when i in (3, 7) then 4.5 else 4 end as double) as rating,
    cast(i * 1.25 as decimal(10, 2)) as amount
from range(40) as t(i)
"""
_NOTES = "select 1 as note_id, 'x' as body"
_YAML = """
models:
  - name: shop_visits
    config:
      tags: [voyado]
      meta:
        voyado:
          schema_id: shopVisit
          unique_key: visit_id
          contact: {column: contact_id, key: contactId}
          created_date: visited_at
          properties:
            city: city
            rating: {column: rating, type: integer}
            amount: amount
  - name: shop_notes
    config:
      meta: {owner: data-team}
"""


@pytest.fixture(scope="module")
def shop_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    base = tmp_path_factory.mktemp("shop")
    project = base / "shop"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(_PROJECT)
    (project / "profiles.yml").write_text(_PROFILES)
    (project / "models" / "shop_visits.sql").write_text(_VISITS)
    (project / "models" / "shop_notes.sql").write_text(_NOTES)
    (project / "models" / "shop.yml").write_text(_YAML)
    db = base / "shop.duckdb"
    dbt_build(project, db, env_name=DB_ENV)
    return BuiltProject(project, db, DB_ENV)


@pytest.fixture
def shop(
    shop_build: BuiltProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: EmulatorHandle,
) -> BuiltProject:
    """A private copy of the built shop warehouse; VOYADO_* pointing at the emulator."""
    db = shop_build.fresh_db(tmp_path)
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", DEFAULT_API_KEY)
    fresh_emulator.add_contacts([Contact(contact_id=KNOWN)])
    return shop_build


def variant(shop: BuiltProject, where: Path, edit: Callable[[str], str]) -> Path:
    """A copy of the shop project with its YAML edited and a new manifest (dbt parse); it reads
    the same warehouse."""
    project = where / "variant"
    shutil.copytree(shop.project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    path = project / "models" / "shop.yml"
    path.write_text(edit(path.read_text()))
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    proc = subprocess.run(
        [str(BIN / "dbt"), "parse", "--profiles-dir", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    return project


def invoke(project_dir: Path, *args: str, log_json: bool = False) -> Result:
    head = ["--log-format", "json"] if log_json else []
    return CliRunner().invoke(
        cli,
        [
            *head,
            args[0],
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            *args[1:],
        ],
        catch_exceptions=False,
    )


def as_json(result: Result) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


# -- 8. errors that scale ------------------------------------------------------------------------


def test_summary_prints_one_line_per_cause_with_count_and_three_example_keys(
    shop: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    result = invoke(shop.project_dir, "run", "--rate", "200")

    assert result.exit_code == 1, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    rejected = [line for line in lines if line.startswith("rejected (")]
    # 20 unknown contacts, 5 duplicated keys and 2 type errors: 3 causes, not 26 lines.
    assert len(rejected) == 3, result.stdout
    unknown, dups, types = rejected
    assert unknown.startswith("rejected (20): Voyado has no contact <value> (404 ContactNotFound)")
    assert "cli-unknown" not in unknown.split("(e.g.")[0]
    assert unknown.endswith("(e.g. visit_id=v-010, visit_id=v-011, visit_id=v-012, ...)")
    assert dups.startswith("rejected (10): rows share a unique key; none is sent")
    # A type error keeps its reason (it used to stop at the property's name).
    assert types.startswith(
        "rejected (2): property rating (column rating): <value> is not an integer"
    )
    assert "visit_id=v-003, visit_id=v-007" in types
    assert fresh_emulator.stats()["stored"] == 8


def test_rejected_groups_by_cause_and_all_lists_every_row_with_its_value(
    shop: BuiltProject,
) -> None:
    invoke(shop.project_dir, "run", "--rate", "200")

    grouped = invoke(shop.project_dir, "rejected")
    every = invoke(shop.project_dir, "rejected", "--all")
    doc = as_json(invoke(shop.project_dir, "rejected", "--json"))

    assert grouped.exit_code == 0
    assert len(grouped.stdout.splitlines()) == 5, grouped.stdout  # model, 3 causes, the hint
    # The ledger holds one row per key: the 10 duplicate rows are 5 keys.
    assert "shop_visits: 27 row key(s), 3 cause(s)" in grouped.stdout
    assert "voyado-sync rejected --all" in grouped.stdout
    assert len(every.stdout.splitlines()) == 27
    # The full reason keeps the value, written as a person writes it.
    assert "4.5 is not an integer" in every.stdout and "Decimal(" not in every.stdout
    assert "cli-unknown-010" in every.stdout
    assert doc["exit_code"] == 0 and doc["error"] is None
    assert [(g["status"], g["count"]) for g in doc["groups"]] == [
        ("rejected", 20),
        ("rejected", 5),
        ("rejected", 2),
    ]
    assert all(len(g["examples"]) <= 3 for g in doc["groups"])
    assert len(doc["rows"]) == 27


def test_run_json_reports_causes_with_examples(shop: BuiltProject) -> None:
    doc = as_json(invoke(shop.project_dir, "run", "--json", "--rate", "200"))
    (model,) = doc["models"]
    assert [r["count"] for r in model["reasons"]] == [20, 10, 2]
    assert model["reasons"][2]["examples"] == ["visit_id=v-003", "visit_id=v-007"]


def test_dry_run_samples_show_non_ascii_as_is(shop: BuiltProject) -> None:
    result = invoke(shop.project_dir, "run", "--dry-run")
    assert '"city": "Göteborg"' in result.stdout
    assert "\\u00f6" not in result.stdout


# -- 7. typos and types ---------------------------------------------------------------------------


def test_near_miss_meta_keys_are_reported_by_validate_and_run(
    shop: BuiltProject, tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    typos = ["voyaod", "Voyado", "voyado_sync", "voyado-sync"]
    block = ", ".join(f"{k}: {{schema_id: notes}}" for k in typos)
    project = variant(shop, tmp_path, lambda y: y.replace("{owner: data-team}", f"{{{block}}}"))

    validated = invoke(project, "validate", "--json")
    ran = invoke(project, "run", "--json", "--rate", "200")
    text = invoke(project, "validate")

    assert validated.exit_code == 1
    problems = {p["key"]: p for p in as_json(validated)["problems"]}
    assert set(problems) == {f"config.meta.{k}" for k in typos}
    assert all(p["model"] == "shop_notes" for p in problems.values())
    assert all("did you mean voyado?" in p["message"] for p in problems.values())
    assert "model shop_notes, key config.meta.voyaod" in text.stdout
    # The healthy model is synced all the same; the typo makes the run exit 2.
    doc = as_json(ran)
    assert ran.exit_code == 2 and doc["exit_code"] == 2
    assert {p["key"] for p in doc["problems"]} == {f"config.meta.{k}" for k in typos}
    assert doc["models"][0]["sent"] == 8
    assert fresh_emulator.stats()["stored"] == 8


def test_a_project_without_any_meta_voyado_model_is_an_error_naming_the_typo(
    shop: BuiltProject, tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    project = variant(shop, tmp_path, lambda y: y.replace("        voyado:\n", "        voyaod:\n"))

    validated = invoke(project, "validate")
    ran = invoke(project, "run", "--json")

    assert validated.exit_code == 2
    assert "no model in" in validated.output and "has config.meta.voyado" in validated.output
    assert "'voyaod'" in validated.output and "did you mean voyado?" in validated.output
    assert "Checked 0 model(s)" not in validated.output
    doc = as_json(ran)
    assert ran.exit_code == 2 and doc["error"]["kind"] == "ConfigError"
    assert {"model": None, "key": None}.items() <= doc["error"]["problems"][0].items()
    assert doc["error"]["problems"][1]["model"] == "shop_visits"
    assert doc["error"]["problems"][1]["key"] == "config.meta.voyaod"
    assert fresh_emulator.stats()["total_requests"] == 0


def test_integer_on_a_decimal_column_is_refused_before_any_schema_is_created(
    shop: BuiltProject, tmp_path: Path, fresh_emulator: EmulatorHandle
) -> None:
    project = variant(
        shop, tmp_path, lambda y: y.replace("amount: amount", "amount: {type: integer}")
    )

    validated = invoke(project, "validate", "--json")
    ran = invoke(project, "run", "--json")

    assert validated.exit_code == 1
    (problem,) = as_json(validated)["problems"]
    assert problem["model"] == "shop_visits"
    assert problem["key"] == "config.meta.voyado.properties.amount.type"
    assert "DECIMAL(10,2)" in problem["message"]
    assert ran.exit_code == 2
    # Reported per model (the others would sync), before any request for it.
    (model,) = as_json(ran)["models"]
    assert model["problems"][0]["key"] == problem["key"]
    listed = httpx.get(
        f"{fresh_emulator.url}/api/v3/interactionschemas", headers=fresh_emulator.api_headers()
    ).json()
    assert listed == [] or listed.get("items") == []
    assert fresh_emulator.stats()["stored"] == 0


def _hold_lock(db: str, *, seconds: float = 60) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " time.sleep(float(sys.argv[2]))",
            db,
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_validate_while_another_process_holds_the_file_waits_and_invents_nothing(
    shop: BuiltProject,
) -> None:
    # voyado-sync holds a DuckDB file only for short statements and waits while another
    # process (dbt, a running sync) holds it: validate then checks the real columns.
    holder = _hold_lock(os.environ[DB_ENV], seconds=3)
    try:
        doc = as_json(invoke(shop.project_dir, "validate", "--json"))
    finally:
        holder.kill()
        holder.wait()

    assert doc["exit_code"] == 0 and doc["columns_checked"] is not False
    assert doc["problems"] == []


def test_validate_from_the_wrong_warehouse_file_invents_no_column_problems(
    shop: BuiltProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ENV, str(tmp_path / "elsewhere" / "shop.duckdb"))
    result = invoke(shop.project_dir, "validate", "--json")
    doc = as_json(result)
    assert result.exit_code == 2
    assert doc["problems"] == []
    assert "does not exist: run dbt build first" in doc["error"]["message"]


# -- 10. runs ------------------------------------------------------------------------------------


def test_runs_lists_the_history_newest_first_with_rows_per_model(shop: BuiltProject) -> None:
    first = as_json(invoke(shop.project_dir, "run", "--json", "--rate", "200"))
    second = as_json(invoke(shop.project_dir, "run", "--json", "--rate", "200"))

    doc = as_json(invoke(shop.project_dir, "runs", "--json"))
    one = as_json(invoke(shop.project_dir, "runs", "--json", "--limit", "1"))
    text = invoke(shop.project_dir, "runs")

    assert doc["exit_code"] == 0 and doc["error"] is None
    assert [r["run_id"] for r in doc["runs"]] == [second["run_id"], first["run_id"]]
    latest, earliest = doc["runs"]
    assert earliest["status"] == "ok" and earliest["duration_seconds"] >= 0
    assert earliest["totals"] == {
        "selected": 40,
        "already_sent": 0,
        "sent": 8,
        "rejected": 32,
        "failed": 0,
    }
    assert earliest["models"] == [{"model": "shop_visits", "rows": {"rejected": 27, "sent": 8}}]
    assert latest["totals"]["already_sent"] == 8 and latest["totals"]["sent"] == 0
    assert [r["run_id"] for r in one["runs"]] == [second["run_id"]]
    assert f"{first['run_id']}" in text.stdout and "shop_visits: 27 rejected, 8 sent" in text.stdout


def test_runs_without_a_ledger_says_there_is_none(shop: BuiltProject) -> None:
    result = invoke(shop.project_dir, "runs")
    assert result.exit_code == 0
    assert "No runs yet: no ledger in schema voyado_sync" in result.stdout
    assert as_json(invoke(shop.project_dir, "runs", "--json"))["runs"] == []


# -- 11. machine-readable everywhere --------------------------------------------------------------


def test_every_command_json_shares_one_envelope(
    shop: BuiltProject, fresh_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = [
        ["run", "--json", "--rate", "200"],
        ["validate", "--json"],
        ["rejected", "--json"],
        ["runs", "--json"],
        ["debug", "--json"],
        ["schemas", "list", "--json"],
        ["schemas", "diff", "--json"],
        ["schemas", "push", "--json"],
        ["schemas", "delete", "shopVisit", "--confirm-delete", "shopVisit", "--json"],
    ]
    for args in commands:
        if args[0] == "schemas":
            result = CliRunner().invoke(
                cli,
                [
                    "schemas",
                    args[1],
                    "--project-dir",
                    str(shop.project_dir),
                    "--profiles-dir",
                    str(shop.project_dir),
                    *args[2:],
                ],
                catch_exceptions=False,
            )
        else:
            result = invoke(shop.project_dir, *args)
        doc = as_json(result)
        assert list(doc)[:2] == ["exit_code", "error"], (args, list(doc))
        assert doc["exit_code"] == result.exit_code, args
        if result.exit_code in (0, 1):
            assert doc["error"] is None, (args, doc["error"])

    # And on failure: a message and the error's kind.
    monkeypatch.setenv("VOYADO_API_KEY", "wrong-key-123456")
    for args in (["schemas", "list", "--json"], ["debug", "--json"]):
        head = ["schemas", "list"] if args[0] == "schemas" else ["debug"]
        result = CliRunner().invoke(
            cli,
            [
                *head,
                "--project-dir",
                str(shop.project_dir),
                "--profiles-dir",
                str(shop.project_dir),
                "--json",
            ],
        )
        doc = as_json(result)
        assert result.exit_code == 2 and doc["exit_code"] == 2
        assert doc["error"]["message"] and doc["error"]["kind"]
        assert "wrong-key-123456" not in result.output


def test_log_format_json_writes_one_json_object_per_stderr_line(
    shop: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(shop.project_dir, "run", "--rate", "200", log_json=True)
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert records, result.stderr
    assert all({"time", "level", "message"} <= set(r) for r in records)
    progress = [r for r in records if r.get("event") == "progress"]
    assert progress and progress[-1]["model"] == "shop_visits"
    assert progress[-1]["done"] == progress[-1]["total"]

    monkeypatch.setenv("VOYADO_API_KEY", "wrong-key-123456")
    failed = invoke(shop.project_dir, "run", log_json=True)
    records = [json.loads(line) for line in failed.stderr.splitlines() if line.strip()]
    assert failed.exit_code == 2
    assert any(r["level"] == "error" and "401" in r["message"] for r in records)
    assert "wrong-key-123456" not in failed.stderr

    # The text format stays as it was: plain lines.
    plain = invoke(shop.project_dir, "validate")
    assert not plain.stderr.lstrip().startswith("{")


def test_log_format_json_in_a_real_subprocess(shop: BuiltProject) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(BIN / "voyado-sync"),
            "--log-format",
            "json",
            "validate",
            "--project-dir",
            str(shop.project_dir),
            "--select",
            "no_such_model",
        ],
        cwd=shop.project_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    (record,) = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert record["level"] == "error" and record["kind"] == "ConfigError"
    assert "no_such_model" in record["message"]
    assert time.monotonic() - started < 30
