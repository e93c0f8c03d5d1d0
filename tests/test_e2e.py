"""End to end: a real dbt build, a real DuckDB file, real HTTP to the emulator, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result

from tests.projects import BIN, BuiltProject, dbt_build
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow


def invoke(project: BuiltProject, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            args[0],
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.project_dir),
            *args[1:],
        ],
        catch_exceptions=False,
    )


def run_json(project: BuiltProject, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(project, "run", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def by_model(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in doc["models"]}


def ledger_rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_example_project_first_run_sends_good_rows_and_rejects_bad_ones(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    code, doc = run_json(example)
    models = by_model(doc)

    assert code == 1  # some rows were rejected
    reviews = models["voyado_product_reviews"]
    assert (reviews["selected"], reviews["sent"], reviews["rejected"], reviews["failed"]) == (
        49,
        45,
        4,
        0,
    )
    repairs = models["voyado_repairs"]
    assert (repairs["sent"], repairs["rejected"]) == (35, 1)
    subs = models["voyado_active_subscriptions"]
    assert (subs["sent"], subs["contact_not_found"], subs["rejected"]) == (22, 1, 0)
    assert all(m["schema_created"] for m in models.values())

    stats = fresh_emulator.stats()
    assert stats["stored"] == 45 + 35 + 22
    assert stats["ignored"] == 0  # every row sent passed Voyado's schema
    assert stats["duplicates"] == 0
    assert stats["dropped_properties"] == 0


def test_payloads_arrive_with_native_json_types(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(example)
    stored = fresh_emulator.interactions()
    reviews = [i for i in stored if i["schemaId"] == "productReview"]
    repairs = [i for i in stored if i["schemaId"] == "repair"]
    review = reviews[0]["payload"]
    assert isinstance(review["rating"], int) and not isinstance(review["rating"], bool)
    assert isinstance(review["verifiedPurchase"], bool)
    assert isinstance(review["productSku"], str)
    repair = repairs[0]["payload"]
    assert isinstance(repair["cost"], int | float) and not isinstance(repair["cost"], bool)
    assert repair["registrationDate"].endswith("Z")
    assert all(i["createdDate"].endswith("Z") for i in stored)


def test_second_run_sends_nothing_and_exits_zero(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(example)
    posts_before = fresh_emulator.stats()["requests_by_endpoint"]["POST /api/v3/interactions"]

    code, doc = run_json(example)

    assert code == 0
    assert all(m["sent"] == 0 and m["rejected"] == 0 and m["failed"] == 0 for m in doc["models"])
    assert by_model(doc)["voyado_product_reviews"]["already_sent"] == 45
    assert by_model(doc)["voyado_product_reviews"]["previously_rejected"] == 4
    assert (
        fresh_emulator.stats()["requests_by_endpoint"]["POST /api/v3/interactions"] == posts_before
    )


def test_new_rows_are_sent_and_only_they(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    code, first = run_json(bulk)
    assert code == 0
    assert first["models"][0]["sent"] == 300

    dbt_build(
        bulk.project_dir,
        Path(os.environ[bulk.db_env]),
        env_name=bulk.db_env,
        extra=["--vars", "{rows: 340}"],
    )
    code, second = run_json(bulk)

    assert code == 0
    model = second["models"][0]
    assert (model["selected"], model["already_sent"], model["sent"]) == (340, 300, 40)
    stats = fresh_emulator.stats()
    assert stats["stored"] == 340 and stats["duplicates"] == 0
    dates = sorted(i["createdDate"] for i in fresh_emulator.interactions())
    assert len(set(dates)) == 340


def test_dry_run_writes_nothing_and_shows_payloads(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    code, doc = run_json(example, "--dry-run")

    assert code == 1  # bad rows would be rejected
    reviews = by_model(doc)["voyado_product_reviews"]
    assert reviews["sent"] == 45 and reviews["rejected"] == 4
    sample = reviews["samples"][0]["body"]
    assert sample["schemaId"] == "productReview" and isinstance(sample["payload"]["rating"], int)
    subs = by_model(doc)["voyado_active_subscriptions"]
    assert subs["contact_lookups"] == 23 and subs["contact_lookups_cached"] == 0
    assert fresh_emulator.stats()["total_requests"] == 0
    schemas = ledger_rows(
        os.environ[example.db_env], "select schema_name from information_schema.schemata"
    )
    assert ("voyado_sync",) not in schemas


def test_rejected_lists_every_bad_row_with_its_reason(example: BuiltProject) -> None:
    run_json(example)
    result = invoke(example, "rejected", "--json")
    rows = json.loads(result.stdout)["rows"]
    reasons = {r["row_key"]: (r["status"], r["reason"]) for r in rows}

    assert reasons["review_id=R-20012"] == ("rejected", "contact column contact_id is NULL")
    assert "rating is required" in reasons["review_id=R-20030"][1]
    assert "2 rows share the unique key" in reasons["review_id=R-20041"][1]
    assert reasons["repair_id=REP-4121"][0] == "rejected"
    waiting = [r for r in rows if r["status"] == "contact_not_found"]
    assert len(waiting) == 1 and waiting[0]["error_code"] == "ContactNotFound"

    text = invoke(example, "rejected", "--select", "voyado_repairs").stdout
    assert "REP-4121" in text and "R-20012" not in text


def test_wrong_api_key_stops_with_exit_2_and_never_prints_the_key(
    example: BuiltProject, fresh_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-wrong-key-0123456789"
    monkeypatch.setenv("VOYADO_API_KEY", secret)

    result = invoke(example, "run")

    assert result.exit_code == 2
    assert "401" in result.output and "VOYADO_API_KEY" in result.output
    assert secret not in result.output
    assert fresh_emulator.stats()["stored"] == 0
    db = os.environ[example.db_env]
    dump = json.dumps(ledger_rows(db, "select * from voyado_sync.deliveries"), default=str)
    dump += json.dumps(ledger_rows(db, "select * from voyado_sync.runs"), default=str)
    assert secret not in dump
    assert not ledger_rows(db, "select * from voyado_sync.deliveries where status = 'sent'")


def test_plain_http_to_a_remote_host_is_refused(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_BASE_URL", "http://acme.voyado.com")
    result = invoke(example, "run")
    assert result.exit_code == 2
    assert "https" in result.output


def test_missing_manifest_says_run_dbt_build_first(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: x\nprofile: x\n")
    for command in ("run", "validate"):
        result = CliRunner().invoke(cli, [command, "--project-dir", str(tmp_path)])
        assert result.exit_code == 2
        assert "run dbt build first" in result.output


def test_schema_drift_stops_that_model_and_sends_nothing(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    import httpx

    existing = {
        "id": "bulkEvent",
        "displayName": "Bulk event",
        "jsonSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "score": {
                    "type": "string",
                    "displayName": "Score",
                    "showInContactCard": "true",
                    "sortOrder": "0",
                }
            },
        },
    }
    httpx.post(
        f"{fresh_emulator.url}/api/v3/interactionschemas",
        json=existing,
        headers=fresh_emulator.api_headers(),
    ).raise_for_status()

    code, doc = run_json(bulk)

    assert code == 2
    error = doc["models"][0]["error"]
    assert "property score: type changed: string -> integer" in error
    assert "property productSku: added" in error
    assert fresh_emulator.stats()["stored"] == 0


def test_validate_passes_on_the_example_and_warns_about_untested_keys(
    example: BuiltProject,
) -> None:
    result = invoke(example, "validate", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report
    assert report["problems"] == []
    assert sorted(report["models"]) == [
        "voyado_active_subscriptions",
        "voyado_product_reviews",
        "voyado_repairs",
    ]


def test_validate_reports_every_problem_with_model_and_key(
    bulk: BuiltProject, tmp_path: Path
) -> None:
    project = tmp_path / "broken"
    import shutil

    shutil.copytree(bulk.project_dir, project, ignore=shutil.ignore_patterns("target", "logs"))
    yaml_path = project / "models" / "bulk_events.yml"
    text = yaml_path.read_text()
    text = text.replace("schema_id: bulkEvent", "schema_id: bulk event")
    text = text.replace("unique_key: event_id", "uniqe_key: event_id")
    text = text.replace("required: true", "required: true\n              type: float")
    yaml_path.write_text(text)
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    subprocess.run(
        [str(BIN / "dbt"), "parse", "--profiles-dir", str(project)],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )

    result = CliRunner().invoke(
        cli, ["validate", "--project-dir", str(project), "--profiles-dir", str(project), "--json"]
    )

    assert result.exit_code == 1
    problems = {(p["model"], p["key"]): p["message"] for p in json.loads(result.stdout)["problems"]}
    assert ("bulk_events", "config.meta.voyado.schema_id") in problems
    assert "unknown key 'uniqe_key'" in problems[("bulk_events", "config.meta.voyado.uniqe_key")]
    assert ("bulk_events", "config.meta.voyado.unique_key") in problems  # missing
    type_problem = problems[("bulk_events", "config.meta.voyado.properties.score.type")]
    assert "'integer'" in type_problem and "'float'" in type_problem


def test_console_script_runs_in_a_real_subprocess(example: BuiltProject) -> None:
    proc = subprocess.run(
        [
            str(BIN / "voyado-sync"),
            "run",
            "--project-dir",
            str(example.project_dir),
            "--profiles-dir",
            str(example.project_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 1, proc.stderr
    assert (
        "voyado_product_reviews -> productReview: 49 rows, 0 already sent, 45 sent, 4 rejected"
        in proc.stdout
    )
    assert "See why: voyado-sync rejected" in proc.stdout


def test_help_does_not_import_dbt() -> None:
    code = (
        "import sys; from voyado_sync.cli import cli; "
        "print(any(m == 'dbt' or m.startswith(('dbt.', 'duckdb')) for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_rejected_rows_are_retried_when_fixed_or_with_retry_rejected(
    example: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(example)
    db = os.environ[example.db_env]
    con = duckdb.connect(db)
    # The data team fixes the review with no rating (what a rebuild of the model would do).
    con.execute("update main.voyado_product_reviews set rating = 4 where review_id = 'R-20030'")
    con.close()

    code, doc = run_json(example, "--select", "voyado_product_reviews")

    reviews = doc["models"][0]
    assert (reviews["sent"], reviews["rejected"], reviews["previously_rejected"]) == (1, 0, 3)
    fixed = [
        i
        for i in fresh_emulator.interactions()
        if i["schemaId"] == "productReview" and i["payload"].get("rating") == 4
    ]
    assert any(i["payload"]["title"] for i in fixed)

    code, doc = run_json(example, "--select", "voyado_product_reviews", "--retry-rejected")
    reviews = doc["models"][0]
    assert code == 1  # the unfixed rows are rejected again, with their reasons
    assert (reviews["sent"], reviews["rejected"]) == (0, 3)
