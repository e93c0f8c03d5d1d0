"""The Python API, the run artifact and alerts, end to end: the example project's real warehouse,
real HTTP to the emulator and a real webhook receiver on a loopback port.

Each test syncs a private copy of the built example project, so the artifact it writes (and
reads back to spot a recovery) is its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import voyado_sync
from tests.projects import BIN, ROOT, BuiltProject
from tests.webhook import Receiver, webhook_receiver
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow

ARTIFACT = "voyado_sync_results.json"


@pytest.fixture
def project(example: BuiltProject, tmp_path: Path) -> Path:
    """The built example project (with its manifest), copied so its target/ is this test's."""
    return Path(shutil.copytree(example.project_dir, tmp_path / "project"))


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    with webhook_receiver() as receiver:
        monkeypatch.setenv("VOYADO_SYNC_NOTIFY_URL", receiver.url)
        yield receiver


def sync(project: Path, **kwargs: Any) -> voyado_sync.RunResult:
    return voyado_sync.run(project_dir=project, profiles_dir=project, **kwargs)


def artifact(project: Path) -> dict[str, Any]:
    return dict(json.loads((project / "target" / ARTIFACT).read_text()))


def events(receiver: Receiver) -> list[str]:
    return [m["voyado_sync"]["event"] for m in receiver.messages]


def test_api_run_writes_the_artifact_and_alerts_on_rejections_then_recovery(
    project: Path, hook: Receiver, fresh_emulator: EmulatorHandle
) -> None:
    first = sync(project)

    assert first.exit_code == 1  # the example has rows Voyado's rules reject
    assert first.artifact == project / "target" / ARTIFACT
    doc = artifact(project)
    # The artifact is the --json document plus the run's identity, times and versions.
    assert {k: doc[k] for k in first.as_dict()} == json.loads(json.dumps(first.as_dict()))
    assert doc["run_id"] == first.run_id and doc["run_id"]
    assert doc["started_at"] <= doc["finished_at"]
    assert doc["versions"]["voyado_sync"] == voyado_sync.__version__
    assert doc["versions"]["dbt_core"].startswith("1.11.")
    assert doc["versions"]["adapter_type"] == "duckdb" and doc["versions"]["adapter"]
    assert doc["last_sync"] == {
        "run_id": first.run_id,
        "exit_code": 1,
        "finished_at": doc["finished_at"],
    }
    assert (project / "target" / "manifest.json").exists()  # beside dbt's own artifacts
    assert not [p for p in (project / "target").iterdir() if p.name.endswith(".tmp")]

    assert events(hook) == ["rejected"]
    message = hook.messages[0]
    assert message["voyado_sync"]["run_id"] == first.run_id
    assert message["voyado_sync"]["rejected"] == 5
    causes = message["voyado_sync"]["causes"]
    assert sum(c["rows"] for c in causes) == 5
    assert {m for c in causes for m in c["models"]} == {"voyado_product_reviews", "voyado_repairs"}
    assert "See why: voyado-sync rejected" in message["text"]
    assert first.notification is not None and first.notification.sent
    assert doc["notification"] == {"event": "rejected", "sent": True, "error": None}
    api_key = os.environ["VOYADO_API_KEY"]
    assert api_key not in hook.bodies_text()
    assert api_key not in json.dumps(doc) and "s3cr3t" not in json.dumps(doc)

    second = sync(project)  # rejected rows are not retried unchanged: a clean run
    assert second.exit_code == 0
    assert events(hook) == ["rejected", "recovered"]
    assert hook.messages[1]["voyado_sync"]["run_id"] == second.run_id

    third = sync(project)
    assert third.exit_code == 0
    assert events(hook) == ["rejected", "recovered"]  # clean after clean: quiet
    assert third.notification is None and artifact(project)["notification"] is None


def test_the_cli_writes_the_same_artifact_as_its_json_and_a_dry_run_is_marked(
    project: Path, hook: Receiver, fresh_emulator: EmulatorHandle
) -> None:
    args = ["--project-dir", str(project), "--profiles-dir", str(project)]
    dry = CliRunner().invoke(cli, ["run", "--dry-run", "--json", *args], catch_exceptions=False)
    assert dry.exit_code == 1
    doc = artifact(project)
    assert doc["dry_run"] is True and doc["last_sync"] is None
    assert hook.messages == []  # a dry run never alerts
    assert fresh_emulator.stats()["stored"] == 0

    real = CliRunner().invoke(cli, ["run", "--json", *args], catch_exceptions=False)
    printed = json.loads(real.stdout)
    doc = artifact(project)
    assert real.exit_code == printed["exit_code"] == doc["exit_code"] == 1
    assert {k: doc[k] for k in printed} == printed
    assert printed["notification"] == {"event": "rejected", "sent": True, "error": None}

    CliRunner().invoke(cli, ["run", "--dry-run", *args], catch_exceptions=False)
    # A dry run carries the last real run forward, so the next real run still sees it.
    assert artifact(project)["last_sync"]["run_id"] == printed["run_id"]
    again = CliRunner().invoke(cli, ["run", "--json", *args], catch_exceptions=False)
    assert again.exit_code == 0
    assert events(hook) == ["rejected", "recovered"]


def test_a_run_that_cannot_run_raises_writes_the_artifact_and_alerts(
    project: Path, hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOYADO_API_KEY")
    with pytest.raises(voyado_sync.ConfigError, match="no API key"):
        sync(project)
    doc = artifact(project)
    assert doc["exit_code"] == 2 and doc["run_id"] is None
    assert doc["error"]["kind"] == "ConfigError"
    assert doc["notification"] == {"event": "cannot_run", "sent": True, "error": None}
    assert events(hook) == ["cannot_run"]
    assert "could not run (project): ConfigError: no API key" in hook.messages[0]["text"]

    # The CLI: the same alert and artifact, exit code 2.
    result = CliRunner().invoke(
        cli, ["run", "--project-dir", str(project), "--profiles-dir", str(project)]
    )
    assert result.exit_code == 2
    assert events(hook) == ["cannot_run", "cannot_run"]


def test_a_model_stopped_by_the_schema_gate_raises_schema_refused_and_alerts(
    project: Path, hook: Receiver, fresh_emulator: EmulatorHandle
) -> None:
    other = {
        "id": "repair",
        "displayName": "Repair",
        "jsonSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "note": {
                    "type": "string",
                    "displayName": "Note",
                    "showInContactCard": "true",
                    "sortOrder": "0",
                }
            },
        },
    }
    httpx.post(
        f"{fresh_emulator.url}/api/v3/interactionschemas",
        json=other,
        headers=fresh_emulator.api_headers(),
    ).raise_for_status()

    with pytest.raises(voyado_sync.SchemaRefused, match="voyado_repairs: interaction schema"):
        sync(project)
    doc = artifact(project)
    assert doc["exit_code"] == 2
    models = {m["model"]: m for m in doc["models"]}
    assert models["voyado_repairs"]["error"] and models["voyado_repairs"]["sent"] == 0
    assert models["voyado_product_reviews"]["sent"] == 45  # the other models ran
    assert events(hook) == ["stopped"]
    assert hook.messages[0]["voyado_sync"]["stopped"][0]["model"] == "voyado_repairs"


def test_a_failing_or_hanging_webhook_neither_fails_nor_holds_the_run(
    project: Path, hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook.mode = "error"
    first = sync(project)
    assert first.exit_code == 1  # the sync's own outcome, not the webhook's
    assert first.notification == voyado_sync.api.notify.AlertOutcome(
        "rejected", False, "the webhook answered HTTP 500"
    )
    assert artifact(project)["notification"]["error"] == "the webhook answered HTTP 500"
    # The real CLI says so on stderr, and keeps the sync's exit code.
    cli_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "voyado_sync.cli",
            "run",
            "--retry-rejected",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
        ],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli_run.returncode == 1, cli_run.stderr
    assert "could not send its rejected alert: the webhook answered HTTP 500" in cli_run.stderr
    assert "s3cr3t" not in cli_run.stderr + cli_run.stdout

    monkeypatch.setattr(voyado_sync.api.notify, "TIMEOUT", 1.5)
    hook.mode = "hang"
    started = time.monotonic()
    second = sync(project)  # clean: a recovery message, to a webhook that never answers
    elapsed = time.monotonic() - started
    assert second.exit_code == 0
    assert second.notification is not None and not second.notification.sent
    assert second.notification.error == "the webhook did not answer within 1.5 s"
    assert elapsed < 1.5 + 8  # the run itself takes a few seconds; the hang adds at most 1.5
    assert events(hook) == ["rejected", "rejected", "recovered"]


def test_without_an_artifact_a_recovery_is_read_from_the_ledger(
    project: Path, hook: Receiver, fresh_emulator: EmulatorHandle
) -> None:
    # A fresh orchestrator worker: the ledger remembers a run with rejections, no artifact.
    assert sync(project).exit_code == 1
    (project / "target" / ARTIFACT).unlink()
    assert sync(project).exit_code == 0
    assert events(hook) == ["rejected", "recovered"]


def test_validate_returns_what_validate_json_prints(project: Path) -> None:
    result = voyado_sync.validate(project_dir=project, profiles_dir=project, select="tag:voyado")
    cli_result = CliRunner().invoke(
        cli,
        ["validate", "--json", "--project-dir", str(project), "--profiles-dir", str(project)],
    )
    assert result.exit_code == cli_result.exit_code == 0 and result.ok
    assert result.as_dict() == json.loads(cli_result.stdout)


def test_import_stays_light_and_the_api_is_loaded_on_first_use() -> None:
    code = (
        "import sys, voyado_sync\n"
        "heavy = [m for m in ('voyado_sync.api', 'httpx', 'dbt', 'duckdb', 'sqlglot') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from voyado_sync import run, validate, RunResult\n"
        "import voyado_sync.api as api\n"
        "assert run is api.run and validate is api.validate and RunResult is api.RunResult\n"
        "assert voyado_sync.validate is api.validate  # not the submodule of the same name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    help_run = subprocess.run(
        [str(BIN / "voyado-sync"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0 and "run" in help_run.stdout


def test_a_mistyped_project_dir_is_not_created_for_the_artifact(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    with pytest.raises(voyado_sync.ManifestError, match="run dbt build first"):
        voyado_sync.run(project_dir=missing)
    assert not missing.exists()
