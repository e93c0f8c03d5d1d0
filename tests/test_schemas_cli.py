"""`voyado-sync schemas list|diff|push|delete` over real HTTP to the emulator, on a real dbt build.

Drift is made by posting a modified copy of the schema the bulk model generates, or (for a
model that turns segmentation on) by editing meta.voyado in a copy of the project's manifest,
which is what `dbt parse` would write.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.projects import BuiltProject
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle
from voyado_sync.project import load_project, open_warehouse, resolve_models
from voyado_sync.settings import RunOptions

pytestmark = pytest.mark.slow

SCHEMA = "bulkEvent"
MODEL = "bulk_events"


def cli_in(project_dir: Path, *args: str, input: str | None = None) -> Result:
    """`voyado-sync <args[0]> [<args[1]>] --project-dir ... <rest>` through CliRunner."""
    head = list(args[:2]) if args[0] == "schemas" else [args[0]]
    return CliRunner().invoke(
        cli,
        [
            *head,
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            *args[len(head) :],
        ],
        input=input,
        catch_exceptions=False,
    )


_GENERATED: dict[Path, dict[str, Any]] = {}


def generated_body(project_dir: Path) -> dict[str, Any]:
    """The schema body the engine generates for the bulk model (a fresh copy)."""
    if project_dir not in _GENERATED:
        _GENERATED[project_dir] = _generate(project_dir)
    return copy.deepcopy(_GENERATED[project_dir])


def _generate(project_dir: Path) -> dict[str, Any]:
    options = RunOptions(project_dir=project_dir, profiles_dir=project_dir)
    project = load_project(options)
    warehouse = open_warehouse(options)
    try:
        (model,) = resolve_models(project, warehouse).models
    finally:
        warehouse.close()
    return model.schema_body()


def post_schema(emulator: EmulatorHandle, body: dict[str, Any]) -> None:
    httpx.post(
        f"{emulator.url}/api/v3/interactionschemas", json=body, headers=emulator.api_headers()
    ).raise_for_status()


def schema_in_voyado(emulator: EmulatorHandle, schema_id: str) -> dict[str, Any] | None:
    resp = httpx.get(
        f"{emulator.url}/api/v3/interactionschemas/{schema_id}", headers=emulator.api_headers()
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def seed_interactions(emulator: EmulatorHandle, body: dict[str, Any], count: int) -> None:
    """Store ``count`` interactions that fit ``body`` (as if sent before the change)."""
    samples = {"string": "x", "integer": 3, "number": 1.5, "boolean": True}
    payload = {
        name: samples[prop["type"]] for name, prop in body["jsonSchema"]["properties"].items()
    }
    for i in range(count):
        httpx.post(
            f"{emulator.url}/api/v3/interactions",
            json={
                "contactId": "bulk-contact-000",
                "schemaId": body["id"],
                "createdDate": f"2025-01-01T00:00:0{i}Z",
                "payload": payload,
            },
            headers=emulator.api_headers(),
        ).raise_for_status()


def stored(emulator: EmulatorHandle, schema_id: str = SCHEMA) -> int:
    return sum(1 for i in emulator.interactions() if i["schemaId"] == schema_id)


def filler(n: int) -> dict[str, Any]:
    return {
        "id": f"filler-{n:02d}",
        "displayName": f"Filler {n}",
        "jsonSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"note": {"type": "string", "displayName": "Note"}},
        },
    }


def segmentable_copy(bulk: BuiltProject, where: Path) -> Path:
    """A copy of the bulk project whose isMember property turns add_to_segmentation on."""
    project = where / "segmentable"
    shutil.copytree(bulk.project_dir, project, ignore=shutil.ignore_patterns("logs"))
    path = project / "target" / "manifest.json"
    manifest = json.loads(path.read_text())
    node = manifest["nodes"][f"model.bulk.{MODEL}"]
    for meta in (node["config"]["meta"], node.get("meta") or {}):
        if "voyado" in meta:
            meta["voyado"]["properties"]["isMember"] = {
                "column": "is_member",
                "add_to_segmentation": True,
            }
    path.write_text(json.dumps(manifest))
    return project


# -- list -------------------------------------------------------------------------------------


def test_list_shows_models_per_schema_and_marks_unused_ones(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    before = json.loads(cli_in(bulk.project_dir, "schemas", "list", "--json").stdout)
    assert before["in_voyado"] == 0
    assert [(s["schema_id"], s["in_voyado"], s["models"]) for s in before["schemas"]] == [
        (SCHEMA, False, [MODEL])
    ]

    post_schema(fresh_emulator, generated_body(bulk.project_dir))
    legacy = filler(1) | {"id": "legacyReview", "displayName": "Legacy review"}
    post_schema(fresh_emulator, legacy)

    result = cli_in(bulk.project_dir, "schemas", "list", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {s["schema_id"]: s for s in doc["schemas"]}
    assert doc["in_voyado"] == 2 and doc["max_schemas"] == 15
    assert rows[SCHEMA]["models"] == [MODEL] and rows[SCHEMA]["property_count"] == 4
    assert rows[SCHEMA]["display_name"] == "Bulk event" and not rows[SCHEMA]["unused"]
    assert rows["legacyReview"]["unused"] and rows["legacyReview"]["models"] == []

    text = cli_in(bulk.project_dir, "schemas", "list").stdout
    assert "Interaction schemas in Voyado: 2 of 15 allowed" in text
    legacy_line = next(line for line in text.splitlines() if "legacyReview" in line)
    assert "UNUSED" in legacy_line and "1 property" in legacy_line
    bulk_line = next(line for line in text.splitlines() if SCHEMA in line)
    assert f"models: {MODEL}" in bulk_line and "4 properties" in bulk_line


# -- diff and push of a missing schema ----------------------------------------------------------


def test_absent_schema_is_a_difference_until_push_creates_it(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    result = cli_in(bulk.project_dir, "schemas", "diff")
    assert result.exit_code == 1  # absent counts as a difference: a CI check should notice
    assert f"{MODEL} -> {SCHEMA}: will be created" in result.stdout
    doc = json.loads(cli_in(bulk.project_dir, "schemas", "diff", "--json").stdout)
    assert doc["models"][0]["status"] == "will be created" and doc["exit_code"] == 1

    pushed = cli_in(bulk.project_dir, "schemas", "push")
    assert pushed.exit_code == 0, pushed.output
    assert f"created interaction schema {SCHEMA}" in pushed.stdout
    assert schema_in_voyado(fresh_emulator, SCHEMA) == generated_body(bulk.project_dir)

    again = cli_in(bulk.project_dir, "schemas", "diff")
    assert again.exit_code == 0 and "All 1 model(s) match Voyado." in again.stdout
    assert cli_in(bulk.project_dir, "schemas", "push").exit_code == 0  # idempotent


# -- drift ------------------------------------------------------------------------------------

# scenario -> (property, kind, classification, re-creatable under the same id)
DRIFT = {
    "property added": ("amount", "added", "compatible", True),
    "property removed": ("channel", "removed", "incompatible", False),
    "type changed": ("score", "type changed", "incompatible", False),
    "segmentation added": ("isMember", "metadata changed", "needs a new schema id", False),
}


def drifted(scenario: str, bulk: BuiltProject, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """(project dir, the schema to put in Voyado) for one drift scenario."""
    body = generated_body(bulk.project_dir)
    existing = copy.deepcopy(body)
    props = existing["jsonSchema"]["properties"]
    if scenario == "property added":
        del props["amount"]  # the model has a property Voyado's schema lacks
    elif scenario == "property removed":
        props["channel"] = {"type": "string", "displayName": "Channel", "sortOrder": "9"}
    elif scenario == "type changed":
        props["score"]["type"] = "string"
    else:
        return segmentable_copy(bulk, tmp_path), existing
    return bulk.project_dir, existing


@pytest.mark.parametrize("scenario", list(DRIFT))
def test_drift_is_shown_refused_by_push_and_run_and_recreated_only_when_compatible(
    scenario: str, bulk: BuiltProject, fresh_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    prop, kind, classification, recreatable = DRIFT[scenario]
    project_dir, existing = drifted(scenario, bulk, tmp_path)
    post_schema(fresh_emulator, existing)
    seed_interactions(fresh_emulator, existing, 3)

    # diff: property by property, classified
    result = cli_in(project_dir, "schemas", "diff", "--json")
    assert result.exit_code == 1
    (model,) = json.loads(result.stdout)["models"]
    assert model["status"] == "differs" and model["recreatable"] is recreatable
    assert (prop, kind, classification) in {
        (c["property"], c["kind"], c["classification"]) for c in model["changes"]
    }

    # push without --recreate: refused with the diff (the same table `diff` prints) and the
    # safe way out
    result = cli_in(project_dir, "schemas", "push")
    assert result.exit_code == 2
    text = result.output
    assert f"{MODEL} -> {SCHEMA}: DIFFERS" in text
    assert any(line.startswith(f"  ! {prop}") for line in text.splitlines()), text
    assert f"{kind}: " in text and f"[{classification}]" in text
    assert f"schema_id: bulkEvent-v2 in the config.meta.voyado of model {MODEL}" in text
    assert "Nothing was changed in Voyado." in text

    # run: stops the drifted model, sends nothing
    result = cli_in(project_dir, "run", "--json")
    assert result.exit_code == 2
    assert "differs" in json.loads(result.stdout)["models"][0]["error"]
    assert stored(fresh_emulator) == 3

    # push --recreate with confirmation: only a backward compatible change is made
    result = cli_in(project_dir, "schemas", "push", "--recreate", "--confirm-delete", SCHEMA)
    if recreatable:
        assert result.exit_code == 0, result.output
        assert "deletes every interaction stored under it" in result.output
        assert f"deleted and re-created interaction schema {SCHEMA}" in result.output
        assert stored(fresh_emulator) == 0
        assert cli_in(project_dir, "schemas", "diff").exit_code == 0
    else:
        assert result.exit_code == 2
        assert "--recreate refused" in result.output and "bulkEvent-v2" in result.output
        assert schema_in_voyado(fresh_emulator, SCHEMA) == existing
        assert stored(fresh_emulator) == 3


# -- confirmation before any delete -----------------------------------------------------------


def test_recreate_needs_the_schema_id_typed_or_passed_exactly(
    bulk: BuiltProject,
    fresh_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project_dir, existing = drifted("property added", bulk, tmp_path)
    post_schema(fresh_emulator, existing)
    seed_interactions(fresh_emulator, existing, 2)

    def untouched() -> None:
        assert schema_in_voyado(fresh_emulator, SCHEMA) == existing
        assert stored(fresh_emulator) == 2

    # non-interactive stdin, no --confirm-delete: refused, never prompted
    result = cli_in(project_dir, "schemas", "push", "--recreate")
    assert result.exit_code == 2
    assert f"--confirm-delete {SCHEMA}" in result.output and "Type the schema id" not in (
        result.output
    )
    untouched()
    # a near miss is not a confirmation
    result = cli_in(project_dir, "schemas", "push", "--recreate", "--confirm-delete", "bulkevent")
    assert result.exit_code == 2 and "matches no schema" in result.output
    untouched()
    # JSON mode never prompts either
    doc = json.loads(cli_in(project_dir, "schemas", "push", "--recreate", "--json").stdout)
    assert doc["exit_code"] == 2 and doc["outcomes"][0]["status"] == "refused"
    untouched()

    monkeypatch.setattr("voyado_sync.cli_schemas._stdin_is_interactive", lambda: True)
    result = cli_in(project_dir, "schemas", "push", "--recreate", input="bulkevent\n")
    assert result.exit_code == 2 and "Type the schema id bulkEvent" in result.output
    untouched()
    result = cli_in(project_dir, "schemas", "push", "--recreate", input=f"{SCHEMA}\n")
    assert result.exit_code == 0, result.output
    assert stored(fresh_emulator) == 0
    assert schema_in_voyado(fresh_emulator, SCHEMA) == generated_body(project_dir)


def test_delete_needs_a_matching_confirm_delete_and_warns_what_it_destroys(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    assert cli_in(bulk.project_dir, "run", "--rate", "190", "--concurrency", "16").exit_code == 0
    post_schema(fresh_emulator, filler(1))
    seed_interactions(fresh_emulator, filler(1), 2)
    assert stored(fresh_emulator) == 300

    for refused in ([], ["--confirm-delete", "bulkevent"], ["--confirm-delete", "filler-01"]):
        result = cli_in(bulk.project_dir, "schemas", "delete", SCHEMA, *refused)
        assert result.exit_code == 2
        assert "At least 300 interaction(s) were sent by voyado-sync" in result.output
        assert f"pass --confirm-delete {SCHEMA}" in result.output
        assert "Nothing was deleted" in result.output
        assert stored(fresh_emulator) == 300 and schema_in_voyado(fresh_emulator, SCHEMA)

    result = cli_in(bulk.project_dir, "schemas", "delete", SCHEMA, "--confirm-delete", SCHEMA)
    assert result.exit_code == 0, result.output
    assert f"Model(s) {MODEL} still use {SCHEMA}" in result.output
    assert schema_in_voyado(fresh_emulator, SCHEMA) is None
    assert stored(fresh_emulator) == 0
    assert stored(fresh_emulator, "filler-01") == 2  # other schemas keep theirs

    gone = cli_in(bulk.project_dir, "schemas", "delete", SCHEMA, "--confirm-delete", SCHEMA)
    assert gone.exit_code == 2 and "does not exist in Voyado" in gone.output


def test_delete_outside_a_dbt_project_says_the_count_is_unknown(
    fresh_emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", fresh_emulator.emulator.config.api_key)
    post_schema(fresh_emulator, filler(1))
    result = cli_in(tmp_path, "schemas", "delete", "filler-01", "--json")
    assert result.exit_code == 2
    assert schema_in_voyado(fresh_emulator, "filler-01") is not None
    result = cli_in(tmp_path, "schemas", "delete", "filler-01", "--confirm-delete", "filler-01")
    assert result.exit_code == 0, result.output
    assert "cannot be counted" in result.output
    assert schema_in_voyado(fresh_emulator, "filler-01") is None


# -- the 15-schema budget ---------------------------------------------------------------------


def test_push_fills_the_fifteenth_slot(bulk: BuiltProject, fresh_emulator: EmulatorHandle) -> None:
    for n in range(14):
        post_schema(fresh_emulator, filler(n))
    result = cli_in(bulk.project_dir, "schemas", "push")
    assert result.exit_code == 0, result.output
    assert schema_in_voyado(fresh_emulator, SCHEMA) is not None
    assert "15 of 15 allowed" in cli_in(bulk.project_dir, "schemas", "list").stdout


def test_push_beyond_fifteen_schemas_is_refused_naming_them(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    for n in range(15):
        post_schema(fresh_emulator, filler(n))
    result = cli_in(bulk.project_dir, "schemas", "push")
    assert result.exit_code == 2
    assert "at most 15 interaction schemas" in result.output
    assert "15 exist (filler-00, filler-01" in result.output and "filler-14" in result.output
    assert f"would create 1 more ({SCHEMA})" in result.output
    assert schema_in_voyado(fresh_emulator, SCHEMA) is None


# -- cannot run -------------------------------------------------------------------------------


def test_wrong_key_or_no_key_exits_2_and_never_prints_the_key(
    bulk: BuiltProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-wrong-key-0123456789"
    monkeypatch.setenv("VOYADO_API_KEY", secret)
    for command in ("list", "diff", "push"):
        result = cli_in(bulk.project_dir, "schemas", command)
        assert result.exit_code == 2, command
        assert "401" in result.output and secret not in result.output
    monkeypatch.delenv("VOYADO_API_KEY")
    result = cli_in(bulk.project_dir, "schemas", "diff", "--json")
    assert result.exit_code == 2
    assert "VOYADO_API_KEY" in json.loads(result.stdout)["error"]["message"]


def test_schemas_is_listed_in_help_and_has_four_commands() -> None:
    top = CliRunner().invoke(cli, ["--help"])
    assert "schemas" in top.output
    sub = CliRunner().invoke(cli, ["schemas", "--help"])
    assert sub.exit_code == 0
    for name in ("list", "diff", "push", "delete"):
        assert f"  {name}" in sub.output
