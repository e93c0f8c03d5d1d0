"""A run respects dbt's build: a model whose test failed (severity error) or that dbt could not
build is not synced, and says why; --ignore-dbt-status overrides; no run_results.json syncs
with a note."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.projects import BIN, BuiltProject
from tests.test_e2e import by_model, run_json
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow


def _rebuilt_with_a_failing_test(example: BuiltProject, where: Path) -> BuiltProject:
    copy = where / "failing"
    shutil.copytree(example.project_dir, copy, ignore=shutil.ignore_patterns("logs"))
    yaml_path = copy / "models" / "models.yml"
    text = yaml_path.read_text()
    old = "        data_tests: [unique, not_null]\n      - name: contact_id"
    assert old in text
    text = text.replace(
        old,
        "        data_tests:\n          - unique\n          - not_null\n"
        "          - accepted_values:\n              arguments:\n"
        "                values: ['REP-0000']\n      - name: contact_id",
        1,
    )
    yaml_path.write_text(text)
    proc = subprocess.run(
        [str(BIN / "dbt"), "build", "--profiles-dir", str(copy)],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout[-2000:]  # the test failed, as intended
    return BuiltProject(copy, example.built_db, example.db_env)


def test_a_model_whose_test_failed_is_not_synced_unless_told(
    example: BuiltProject, fresh_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    project = _rebuilt_with_a_failing_test(example, tmp_path)

    code, doc = run_json(project)

    models = by_model(doc)
    repairs = models["voyado_repairs"]
    assert code == 1
    assert "accepted_values" in repairs["skipped_by_dbt"]
    assert repairs["sent"] == 0 and repairs["selected"] == 36
    assert models["voyado_product_reviews"]["skipped_by_dbt"] is None
    assert models["voyado_product_reviews"]["sent"] == 45
    stored = {i["schemaId"] for i in fresh_emulator.interactions()}
    assert "repair" not in stored

    code, doc = run_json(project, "--ignore-dbt-status")
    assert by_model(doc)["voyado_repairs"]["sent"] == 35


def test_without_run_results_the_run_syncs_and_says_so(
    example: BuiltProject, fresh_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    copy = tmp_path / "no-results"
    shutil.copytree(example.project_dir, copy, ignore=shutil.ignore_patterns("logs"))
    (copy / "target" / "run_results.json").unlink()

    _, doc = run_json(BuiltProject(copy, example.built_db, example.db_env))

    assert by_model(doc)["voyado_repairs"]["sent"] == 35
    assert any("run_results.json" in w for w in doc["warnings"])
    json.dumps(doc)
