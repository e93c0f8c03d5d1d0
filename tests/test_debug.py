"""`voyado-sync debug` against the built example project and the emulator over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.projects import BIN, BuiltProject
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow


def debug(project_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        ["debug", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), *args],
        catch_exceptions=False,
    )


def checks(result: Result) -> dict[str, dict[str, Any]]:
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == result.exit_code
    return {c["name"]: c for c in doc["checks"]}


def statuses(result: Result) -> dict[str, str]:
    return {name: c["status"] for name, c in checks(result).items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_everything_in_place_is_one_ok_line_per_check(example: BuiltProject) -> None:
    text = debug(example.project_dir)
    result = debug(example.project_dir, "--json")

    assert result.exit_code == 0, result.stdout
    assert statuses(result) == {
        "project": "ok",
        "profile": "ok",
        "warehouse": "ok",
        "manifest": "ok",
        "run_results": "ok",
        "ledger": "ok",
        "voyado_url": "ok",
        "voyado_key": "ok",
    }
    assert json.loads(result.stdout)["error"] is None
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 9 and lines[-1].startswith("All checks passed")
    assert any(line.startswith("OK    API key: accepted") for line in lines)
    assert any("ledger: not created yet" in line for line in lines)


def test_a_wrong_key_fails_the_key_check_and_never_shows_the_key(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_API_KEY", "sk-wrong-key-0123456789")
    result = debug(example.project_dir, "--json")

    assert result.exit_code == 2
    found = checks(result)
    assert found["voyado_url"]["status"] == "ok"
    assert found["voyado_key"]["status"] == "fail"
    assert "401" in found["voyado_key"]["message"]
    assert json.loads(result.stdout)["error"]["kind"] == "FatalApiError"
    assert "sk-wrong-key-0123456789" not in result.output


def test_an_unreachable_port_fails_fast(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_BASE_URL", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = debug(example.project_dir, "--json")
    took = time.monotonic() - started

    assert result.exit_code == 2
    found = checks(result)
    assert found["voyado_url"]["status"] == "fail"
    assert "cannot reach" in found["voyado_url"]["message"]
    assert found["voyado_key"]["status"] == "skip"
    assert found["warehouse"]["status"] == "ok"  # the local checks still ran
    assert took < 10


def test_a_silent_voyado_is_given_up_within_ten_seconds(
    example: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that accepts connections and never answers: the read timeout must end it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setenv("VOYADO_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        started = time.monotonic()
        result = debug(example.project_dir, "--json")
        took = time.monotonic() - started

    assert result.exit_code == 2
    assert checks(result)["voyado_url"]["status"] == "fail"
    assert took < 10


def test_a_missing_manifest_fails_that_check_and_says_run_dbt_build(
    example: BuiltProject, tmp_path: Path
) -> None:
    import shutil

    project = tmp_path / "unbuilt"
    shutil.copytree(example.project_dir, project, ignore=shutil.ignore_patterns("target"))
    result = debug(project, "--json")

    assert result.exit_code == 2
    found = checks(result)
    assert found["manifest"]["status"] == "fail"
    assert "run dbt build first" in found["manifest"]["message"]
    assert found["run_results"]["status"] == "warn"
    assert found["voyado_key"]["status"] == "ok"


def test_a_stale_manifest_is_a_warning_naming_the_newer_file(
    example: BuiltProject, tmp_path: Path
) -> None:
    import shutil

    project = tmp_path / "edited"
    shutil.copytree(example.project_dir, project)
    later = time.time() + 5
    os.utime(project / "models" / "models.yml", (later, later))
    result = debug(project, "--json")

    assert result.exit_code == 0
    manifest = checks(result)["manifest"]
    assert manifest["status"] == "warn" and "models/models.yml" in manifest["message"]


def test_no_project_here_fails_and_skips_what_depends_on_it(tmp_path: Path) -> None:
    result = debug(tmp_path, "--json")
    assert result.exit_code == 2
    found = statuses(result)
    assert found["project"] == "fail"
    assert found["profile"] == "skip" and found["warehouse"] == "skip"


def test_debug_as_a_real_subprocess(example: BuiltProject, fresh_emulator: EmulatorHandle) -> None:
    proc = subprocess.run(
        [str(BIN / "voyado-sync"), "debug", "--profiles-dir", str(example.project_dir)],
        cwd=example.project_dir,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK    warehouse connection: opened the DuckDB file" in proc.stdout
    assert fresh_emulator.stats()["stored"] == 0  # read-only
