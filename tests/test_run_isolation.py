"""A run behaves like a dbt command: one broken model does not stop the others, an unreachable
Voyado ends the run at once, and an interrupted run reports what it did not send, not failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.projects import BIN, BuiltProject
from tests.test_delivery import ROWS, _start_cli, _wait_for_stored, ledger_status
from tests.test_e2e import by_model, invoke, run_json
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow


def _copy_with(project: BuiltProject, where: Path, old: str, new: str) -> BuiltProject:
    """A copy of the project with one edit to models.yml, parsed again (the warehouse stays)."""
    copy = where / "edited"
    shutil.copytree(project.project_dir, copy, ignore=shutil.ignore_patterns("logs"))
    yaml_path = copy / "models" / "models.yml"
    text = yaml_path.read_text()
    assert old in text
    yaml_path.write_text(text.replace(old, new, 1))
    subprocess.run(
        [str(BIN / "dbt"), "parse", "--profiles-dir", str(copy)],
        cwd=copy,
        check=True,
        capture_output=True,
    )
    return BuiltProject(copy, project.built_db, project.db_env)


def test_a_model_with_a_yaml_error_is_skipped_and_the_others_sync(
    example: BuiltProject, fresh_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    broken = _copy_with(example, tmp_path, "schema_id: repair", "schema_id: re pair")

    code, doc = run_json(broken)

    models = by_model(doc)
    assert code == 2  # a configuration problem, reported at the end
    repairs = models["voyado_repairs"]
    assert "schema_id" in repairs["error"] and repairs["sent"] == 0
    assert repairs["problems"][0]["key"] == "config.meta.voyado.schema_id"
    assert models["voyado_product_reviews"]["sent"] == 45
    assert models["voyado_active_subscriptions"]["sent"] == 22
    assert fresh_emulator.stats()["stored"] == 45 + 22


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_voyado_ends_the_run_in_seconds_with_one_message_and_real_counts(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_BASE_URL", f"http://127.0.0.1:{_closed_port()}")

    started = time.monotonic()
    result = invoke(example, "run", "--json")
    took = time.monotonic() - started

    doc = json.loads(result.stdout)
    assert result.exit_code == 2
    assert took < 15
    assert "refused the connection" in doc["error"]["message"]
    assert doc["error"]["kind"] == "RetryableApiError"
    # The summary still says how big each model is.
    assert by_model(doc)["voyado_product_reviews"]["selected"] == 49
    assert by_model(doc)["voyado_repairs"]["selected"] == 36
    assert doc["requests"].get("total", 0) == 0


def test_an_unknown_host_is_one_clear_message(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_BASE_URL", "https://no-such-tenant.invalid")
    result = invoke(example, "run")
    assert result.exit_code == 2
    assert result.output.count("does not resolve") == 1


def test_rows_an_interrupted_run_did_not_send_are_not_failed(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(latency_ms=20)
    proc = _start_cli(bulk)
    _wait_for_stored(fresh_emulator, 60, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 1

    status = ledger_status(os.environ[bulk.db_env])
    assert "failed" not in status
    stored = fresh_emulator.stats()["stored"]
    assert status["sent"] == stored
    rejected = invoke(bulk, "rejected", "--json")
    assert json.loads(rejected.stdout)["rows"] == []  # nothing to act on

    # Every row is accounted for in the next run's document.
    fresh_emulator.configure(latency_ms=0)
    code, doc = run_json(bulk)
    (model,) = doc["models"]
    assert code == 0
    assert model["already_sent"] == stored
    assert model["sent"] == ROWS - stored
    assert model["failed"] == 0 and model["not_sent"] == 0


def test_an_interrupted_run_counts_what_it_did_not_send(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(latency_ms=20)
    env = dict(os.environ, VOYADO_SYNC_BACKOFF_BASE="0.05")
    proc = subprocess.Popen(
        [
            str(BIN / "voyado-sync"),
            "run",
            "--json",
            "--project-dir",
            str(bulk.project_dir),
            "--profiles-dir",
            str(bulk.project_dir),
            "--rate",
            "120",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_stored(fresh_emulator, 40, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)

    (model,) = json.loads(out)["models"]
    assert model["failed"] == 0
    assert model["sent"] + model["not_sent"] == ROWS
    assert model["not_sent"] > 0
