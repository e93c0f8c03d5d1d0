"""`voyado-sync schemas upgrade` over real HTTP to the emulator, on a real dbt build.

A 300-row model without a created_date column (so every createdDate is the one the ledger
recorded when the row was first journaled) is synced, then upgraded to a definition that makes
a property segmentable: a copy of the project whose manifest says so, as `dbt parse` would
write it. Exactly-once is counted in the emulator: every event id once under the schema, with
the createdDate it had before the upgrade.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result

from tests.projects import BIN, BULK_CONTACTS, BuiltProject, dbt_build
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow

SCHEMA = "Upgrade-Event"
MODEL = "upgrade_events"
ROWS = 300
DB_ENV = "VOYADO_TEST_UPGRADE_DUCKDB"

_PROJECT = """
name: upgrading
profile: upgrading
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  upgrading:
    +materialized: table
"""
_PROFILES = """
upgrading:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_TEST_UPGRADE_DUCKDB') }}"
      threads: 1
"""
_MODEL = f"""
select
    'ev-' || lpad(cast(i as varchar), 6, '0') as event_id,
    'bulk-contact-' || lpad(cast(i % 40 as varchar), 3, '0') as contact_id,
    'SKU-' || cast(i % 17 as varchar) as sku,
    cast(1 + i % 5 as integer) as score,
    (i % 3 = 0) as is_member
from range({ROWS}) as t(i)
"""
_YAML = f"""
models:
  - name: {MODEL}
    config:
      tags: [voyado]
      meta:
        voyado:
          schema_id: {SCHEMA}
          unique_key: event_id
          contact:
            column: contact_id
            key: contactId
          properties:
            eventId: event_id
            productSku: sku
            score:
              column: score
              required: true
            isMember: is_member
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    """The project built once; its `segmentable` copy lives beside it."""
    base = tmp_path_factory.mktemp("upgrade-build")
    project = base / "upgrading"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(_PROJECT)
    (project / "profiles.yml").write_text(_PROFILES)
    (project / "models" / f"{MODEL}.sql").write_text(_MODEL)
    (project / "models" / f"{MODEL}.yml").write_text(_YAML)
    db = base / "upgrading.duckdb"
    dbt_build(project, db, env_name=DB_ENV)
    segmentable = base / "segmentable"
    shutil.copytree(project, segmentable, ignore=shutil.ignore_patterns("logs"))
    path = segmentable / "target" / "manifest.json"
    manifest = json.loads(path.read_text())
    node = manifest["nodes"][f"model.upgrading.{MODEL}"]
    for meta in (node["config"]["meta"], node.get("meta") or {}):
        if "voyado" in meta:
            meta["voyado"]["properties"]["isMember"] = {
                "column": "is_member",
                "add_to_segmentation": True,
            }
    path.write_text(json.dumps(manifest))
    return BuiltProject(project, db, DB_ENV)


@pytest.fixture
def project(
    built: BuiltProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: EmulatorHandle,
) -> Project:
    db = built.fresh_db(tmp_path)
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", fresh_emulator.emulator.config.api_key)
    fresh_emulator.add_contacts(BULK_CONTACTS)
    return Project(built.project_dir, built.project_dir.parent / "segmentable", db, fresh_emulator)


class Project:
    """The project (v1), its segmentable copy (v2), the private warehouse and the emulator."""

    def __init__(self, v1: Path, v2: Path, db: Path, emulator: EmulatorHandle) -> None:
        self.v1, self.v2, self.db, self.emulator = v1, v2, db, emulator

    def cli(self, project_dir: Path, *args: str, input: str | None = None) -> Result:
        head = list(args[:2]) if args[0] == "schemas" else [args[0]]
        rest = list(args[len(head) :])
        if head[0] == "schemas" and rest and not rest[0].startswith("-"):
            head.append(rest.pop(0))  # the SCHEMA_ID argument
        return CliRunner().invoke(
            cli,
            [*head, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), *rest],
            input=input,
            catch_exceptions=False,
        )

    def sync(self, project_dir: Path | None = None) -> dict[str, Any]:
        result = self.cli(project_dir or self.v1, "run", "--json", "--rate", "150")
        return dict(json.loads(result.stdout))

    def upgrade(self, *flags: str, input: str | None = None) -> Result:
        return self.cli(self.v2, "schemas", "upgrade", SCHEMA, "--rate", "150", *flags, input=input)

    def confirmed(self) -> Result:
        return self.upgrade("--confirm-delete", SCHEMA, "--automations-paused", "--json")

    def stored(self) -> list[dict[str, Any]]:
        return [i for i in self.emulator.interactions() if i["schemaId"] == SCHEMA]

    def created_by_event(self) -> dict[str, str]:
        """eventId -> createdDate of what Voyado holds; asserts each event is there once."""
        items = self.stored()
        counts = Counter(i["payload"]["eventId"] for i in items)
        twice = {e: n for e, n in counts.items() if n > 1}
        assert not twice, f"stored more than once: {twice}"
        return {i["payload"]["eventId"]: i["createdDate"] for i in items}

    def schema(self) -> dict[str, Any] | None:
        schemas = self.emulator.emulator._schemas  # the emulator's own state, read-only
        found = schemas.get(SCHEMA)
        return None if found is None else dict(found.to_json())

    def ledger(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()

    def phase(self) -> str | None:
        rows = self.ledger(
            "select phase from voyado_sync.schema_upgrades order by entry_seq desc limit 1"
        )
        return str(rows[0][0]) if rows else None

    def subprocess_upgrade(self, *flags: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                str(BIN / "voyado-sync"),
                "schemas",
                "upgrade",
                SCHEMA,
                "--project-dir",
                str(self.v2),
                "--profiles-dir",
                str(self.v2),
                "--rate",
                "40",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )


def segmentable(body: dict[str, Any] | None) -> bool:
    assert body is not None
    prop = body["jsonSchema"]["properties"]["isMember"]
    return str(prop.get("addToSegmentation")).lower() == "true"


def sent_history(p: Project) -> dict[str, str]:
    first = p.sync()
    assert first["exit_code"] == 0, first
    assert first["models"][0]["sent"] == ROWS
    before = p.created_by_event()
    assert len(before) == ROWS
    assert not segmentable(p.schema())
    return before


def kill_when(proc: subprocess.Popen[str], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the upgrade ended before {what} (exit {proc.returncode}):\n{out}\n{err}")
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"never reached {what}")


def kill_mid_replay(p: Project, *, after: int) -> None:
    """Start a confirmed upgrade, slowed, and SIGKILL it once ``after`` rows are replayed
    into the recreated (segmentable) schema."""
    p.emulator.configure(latency_ms=30)
    proc = p.subprocess_upgrade("--confirm-delete", SCHEMA, "--automations-paused")
    kill_when(
        proc,
        lambda: p.schema() is not None and len(p.stored()) >= after and segmentable(p.schema()),
        f"{after} rows of the replay",
    )
    p.emulator.configure(latency_ms=0)


def assert_upgraded(p: Project, before: dict[str, str]) -> None:
    """Every history row in Voyado once, under the new definition, with its createdDate."""
    assert segmentable(p.schema())
    assert p.created_by_event() == before
    assert p.phase() == "done"
    again = p.sync(p.v2)
    assert again["exit_code"] == 0, again
    assert again["models"][0]["sent"] == 0
    assert p.created_by_event() == before


# -- the upgrade ------------------------------------------------------------------------------


def test_upgrade_replays_every_row_once_with_its_created_date(project: Project) -> None:
    p = project
    before = sent_history(p)

    dry = p.upgrade("--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)["plan"]
    assert plan["deleted_with_schema"] == ROWS and plan["to_replay"] == ROWS
    assert plan["replay_seconds"] == pytest.approx(ROWS / 150, abs=0.1)
    assert [c["property"] for c in plan["changes"]] == ["isMember"]
    assert len(p.stored()) == ROWS and not segmentable(p.schema())  # nothing changed

    result = p.confirmed()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["deleted_with_schema"] == ROWS
    assert doc["replayed"] == ROWS
    assert doc["lost"] == 0
    assert segmentable(doc["definition"])
    assert p.emulator.stats()["deleted"] == ROWS  # deleted with the schema, as Engage does
    assert_upgraded(p, before)


def test_run_holds_the_schema_while_an_upgrade_is_unfinished(project: Project) -> None:
    p = project
    sent_history(p)
    p.emulator.configure(latency_ms=1500)
    proc = p.subprocess_upgrade("--confirm-delete", SCHEMA, "--automations-paused")
    kill_when(proc, lambda: p.schema() is None, "the schema was deleted")
    p.emulator.configure(latency_ms=0)
    held = p.sync(p.v2)
    assert held["exit_code"] == 2
    error = held["models"][0]["error"]
    assert f"voyado-sync schemas upgrade {SCHEMA}" in error and "unfinished" in error
    assert p.schema() is None and p.stored() == []  # run did not even create the schema


def test_show_and_list_give_the_lower_case_id(project: Project) -> None:
    p = project
    sent_history(p)
    shown = p.cli(p.v1, "schemas", "show", SCHEMA, "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["schema_id_lower"] == "upgrade-event"
    props = {q["name"]: q for q in doc["properties"]}
    assert props["isMember"]["schema_id_lower"] == "upgrade-event"
    assert props["isMember"]["segmentable"] is False
    assert props["score"]["type"] == "integer" and props["score"]["required"] is True
    assert props["eventId"]["show_in_contact_card"] is True
    text = p.cli(p.v1, "schemas", "show", SCHEMA)
    assert "In the email editor: upgrade-event" in text.stdout
    member = next(line.split() for line in text.stdout.splitlines() if "isMember" in line)
    assert member == ["upgrade-event", "isMember", "boolean", "no", "yes", "no"]
    listing = p.cli(p.v1, "schemas", "list")
    assert "(editor: upgrade-event)" in listing.stdout
    listed = json.loads(p.cli(p.v1, "schemas", "list", "--json").stdout)
    assert listed["schemas"][0]["schema_id_lower"] == "upgrade-event"
    missing = p.cli(p.v1, "schemas", "show", "nope")
    assert missing.exit_code == 2 and "does not exist in Voyado" in missing.output


# -- refusals ---------------------------------------------------------------------------------


def test_refused_when_history_is_missing(project: Project) -> None:
    p = project
    sent_history(p)
    with duckdb.connect(str(p.db)) as con:  # 7 rows leave the model after they were sent
        con.execute(
            f"delete from main.{MODEL} where event_id in (select event_id from main."
            f"{MODEL} order by event_id limit 7)"
        )
    result = p.confirmed()
    assert result.exit_code == 2
    message = json.loads(result.stdout)["error"]["message"]
    assert "would lose 7 of the 300 interaction(s)" in message
    assert len(p.stored()) == ROWS and not segmentable(p.schema())
    dry = p.upgrade("--dry-run", "--json")
    assert dry.exit_code == 2 and json.loads(dry.stdout)["plan"]["lost"] == 7


@pytest.mark.parametrize(
    "flags",
    [
        (),
        ("--confirm-delete", SCHEMA),
        ("--automations-paused",),
        ("--confirm-delete", SCHEMA.lower(), "--automations-paused"),
    ],
)
def test_refused_without_both_confirmations(project: Project, flags: tuple[str, ...]) -> None:
    p = project
    sent_history(p)
    result = p.upgrade(*flags, "--json")
    assert result.exit_code == 2
    assert "not confirmed" in json.loads(result.stdout)["error"]["message"]
    assert len(p.stored()) == ROWS and not segmentable(p.schema())
    assert p.sync(p.v1)["models"][0]["sent"] == 0  # no upgrade holds the schema


def test_prompts_when_interactive(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from voyado_sync import cli_schemas

    p = project
    before = sent_history(p)
    monkeypatch.setattr(cli_schemas, "_stdin_is_interactive", lambda: True)
    no = p.upgrade(input=f"{SCHEMA}\nn\n")
    assert no.exit_code == 2 and "automations" in no.output
    assert not segmentable(p.schema())
    yes = p.upgrade(input=f"{SCHEMA}\ny\n")
    assert yes.exit_code == 0, yes.output
    assert_upgraded(p, before)


# -- crashes and faults -----------------------------------------------------------------------


def test_sigkill_before_the_delete_then_rerun(project: Project) -> None:
    p = project
    before = sent_history(p)
    get = "GET /api/v3/interactionschemas/{id}"
    reads = p.emulator.stats()["requests_by_endpoint"].get(get, 0)
    proc = p.subprocess_upgrade("--confirm-delete", SCHEMA, "--automations-paused")

    def planned() -> bool:
        if p.emulator.stats()["requests_by_endpoint"].get(get, 0) > reads:
            # The plan read the schema: from now on every request fails, so the upgrade is
            # held retrying the read just before its DELETE, after marking the ledger.
            p.emulator.configure(error_rate=1.0)
        return bool(p.emulator.stats()["faults"]["injected_errors"] >= 2)

    kill_when(proc, planned, "the read before the delete")
    p.emulator.configure(error_rate=0.0)
    assert len(p.stored()) == ROWS and p.phase() == "marked"
    resumed = p.upgrade("--json")  # no confirmation: it was confirmed when it started
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["replayed"] == ROWS
    assert_upgraded(p, before)


def test_sigkill_between_delete_and_recreate_then_rerun(project: Project) -> None:
    p = project
    before = sent_history(p)
    p.emulator.configure(latency_ms=1500)  # the DELETE is done at once, answered 1.5 s later
    proc = p.subprocess_upgrade("--confirm-delete", SCHEMA, "--automations-paused")
    kill_when(proc, lambda: p.schema() is None, "the schema was deleted")
    p.emulator.configure(latency_ms=0)
    assert p.schema() is None and p.stored() == [] and p.phase() == "marked"
    resumed = p.upgrade("--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["replayed"] == ROWS
    assert_upgraded(p, before)


def test_sigkill_mid_replay_then_rerun(project: Project) -> None:
    p = project
    before = sent_history(p)
    kill_mid_replay(p, after=100)
    partial = len(p.stored())
    assert 100 <= partial < ROWS
    p.created_by_event()  # nothing twice so far
    held = p.sync(p.v2)
    assert held["exit_code"] == 2 and len(p.stored()) == partial  # held, nothing sent
    resumed = p.upgrade("--json")
    assert resumed.exit_code == 0, resumed.output
    assert_upgraded(p, before)


def test_replay_through_30_percent_503s(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = project
    before = sent_history(p)
    monkeypatch.setenv("VOYADO_SYNC_MAX_ATTEMPTS", "12")
    monkeypatch.setenv("VOYADO_SYNC_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("VOYADO_SYNC_BACKOFF_MAX", "0.05")
    p.emulator.configure(error_rate=0.3)
    result = p.confirmed()
    for _ in range(3):  # rows left unverified or failed are finished by running it again
        if result.exit_code != 1:
            break
        result = p.upgrade("--json")
    p.emulator.configure(error_rate=0.0)
    assert result.exit_code == 0, result.output
    assert p.emulator.stats()["faults"]["injected_errors"] > 50
    assert_upgraded(p, before)


# -- what the history check and the count of lost rows must get right ---------------------------


def test_rows_voyado_refuses_on_replay_are_lost_not_replayed(project: Project) -> None:
    """A replayed row can fail for good (its contact was deleted in Voyado since): it is not
    in Voyado any more, so the upgrade says it lost it and does not exit 0."""
    p = project
    before = sent_history(p)
    assert p.emulator.remove_contacts(["bulk-contact-000"]) == 1
    gone = {f"ev-{i:06d}" for i in range(0, ROWS, 40)}
    result = p.confirmed()
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert (doc["lost"], doc["replayed"]) == (len(gone), ROWS - len(gone))
    assert f"{len(gone)} " in doc["error"]["message"] and "lost" in doc["error"]["message"]
    assert p.created_by_event() == {e: d for e, d in before.items() if e not in gone}
    assert p.phase() == "done"  # nothing left to replay: run is not held
    again = p.sync(p.v2)
    assert again["models"][0]["sent"] == 0


def test_a_kill_after_the_upgrade_is_recorded_and_before_rows_are_marked(project: Project) -> None:
    """The upgrade is recorded before the history is marked: a kill in between leaves an
    upgrade that holds run and that the rerun finishes, marking what it must first."""
    from tests.test_state import RawDuckDB
    from voyado_sync.state import Ledger, SchemaUpgrade, UpgradePhase, environment_of
    from voyado_sync.warehouse.base import Warehouse

    p = project
    before = sent_history(p)
    raw = RawDuckDB(p.db, array_params=True)
    warehouse: Warehouse = raw
    ledger = Ledger(warehouse, environment=environment_of(p.emulator.url))
    ledger.ensure()
    ledger.record_upgrade(
        SchemaUpgrade(
            schema_id=SCHEMA,
            base_url=p.emulator.url,
            phase=UpgradePhase.MARKED,
            run_id="killed-run",
            planned=ROWS,
            deleted_with_schema=ROWS,
            old_definition=json.dumps(p.schema(), sort_keys=True),
            new_definition="{}",
            started_at="2026-12-03T00:00:00.000Z",
            updated_at="2026-12-03T00:00:00.000Z",
        )
    )
    raw.close()
    held = p.sync(p.v1)
    assert held["exit_code"] == 2 and "unfinished" in held["models"][0]["error"]
    resumed = p.upgrade("--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["replayed"] == ROWS
    assert_upgraded(p, before)


def test_the_json_says_lost_and_what_would_be_replayed(project: Project) -> None:
    p = project
    sent_history(p)
    dry = json.loads(p.upgrade("--dry-run", "--json").stdout)
    assert (dry["deleted_with_schema"], dry["replayed"], dry["lost"]) == (ROWS, ROWS, 0)
    assert segmentable(dry["definition"])
    with duckdb.connect(str(p.db)) as con:
        con.execute(f"delete from main.{MODEL} where event_id = 'ev-000007'")
    refused = p.confirmed()
    assert refused.exit_code == 2
    doc = json.loads(refused.stdout)
    assert (doc["lost"], doc["replayed"], doc["deleted_with_schema"]) == (1, 0, 0)


def test_prompts_whenever_not_json(project: Project) -> None:
    """The prompts are asked whenever --json is not given; a closed stdin answers no."""
    p = project
    before = sent_history(p)
    closed = p.upgrade(input="")
    assert closed.exit_code == 2 and "not confirmed" in closed.output
    assert not segmentable(p.schema())
    yes = p.upgrade(input=f"{SCHEMA}\ny\n")
    assert yes.exit_code == 0, yes.output
    assert_upgraded(p, before)


def _mirrored(source: Path, where: Path) -> Path:
    """A copy of a project whose model is a mirror model (as dbt parse would write it)."""
    copy = where / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("logs"))
    path = copy / "target" / "manifest.json"
    manifest = json.loads(path.read_text())
    node = manifest["nodes"][f"model.upgrading.{MODEL}"]
    for meta in (node["config"]["meta"], node.get("meta") or {}):
        if "voyado" in meta:
            meta["voyado"]["mode"] = "mirror"
    path.write_text(json.dumps(manifest))
    return copy


def test_rows_gone_from_a_mirror_model_are_not_history(project: Project, tmp_path: Path) -> None:
    """A mirror model's row removed since it was sent is not history: the upgrade neither
    refuses for it nor replays it, and Voyado ends up holding exactly the model's rows."""
    p = project
    p.v1, p.v2 = _mirrored(p.v1, tmp_path / "v1"), _mirrored(p.v2, tmp_path / "v2")
    before = sent_history(p)
    removed = {f"ev-{i:06d}" for i in range(15)}
    with duckdb.connect(str(p.db)) as con:
        con.execute(f"delete from main.{MODEL} where event_id < 'ev-000015'")
    result = p.confirmed()
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["lost"], doc["replayed"], doc["deleted_with_schema"]) == (0, ROWS - 15, ROWS)
    kept = {e: d for e, d in before.items() if e not in removed}
    assert p.created_by_event() == kept
    again = p.sync(p.v2)
    assert again["exit_code"] == 0, again
    assert again["models"][0]["sent"] == 0
    assert p.created_by_event() == kept


def test_a_broken_model_elsewhere_does_not_block_it_and_a_rerun_after_it_is_done_is_a_no_op(
    project: Project, tmp_path: Path
) -> None:
    """The upgrade resolves only the models that use the schema; and once it is done,
    running it again (a retried job) finds nothing to upgrade: exit 0, nothing deleted."""
    p = project
    before = sent_history(p)
    copy = tmp_path / "with-broken"
    shutil.copytree(p.v2, copy, ignore=shutil.ignore_patterns("logs"))
    path = copy / "target" / "manifest.json"
    manifest = json.loads(path.read_text())
    node = json.loads(json.dumps(manifest["nodes"][f"model.upgrading.{MODEL}"]))
    node.update(
        name="broken_events",
        unique_id="model.upgrading.broken_events",
        fqn=["upgrading", "broken_events"],
        path="broken_events.sql",
        original_file_path="models/broken_events.sql",
        alias="broken_events",
    )
    for meta in (node["config"]["meta"], node.get("meta") or {}):
        if "voyado" in meta:
            meta["voyado"] = {"schema_id": "otherEvent", "contact": {"column": "contact_id"}}
    manifest["nodes"][node["unique_id"]] = node
    path.write_text(json.dumps(manifest))
    p.v2 = copy

    result = p.confirmed()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replayed"] == ROWS
    deleted = p.emulator.stats()["deleted"]

    again = p.confirmed()
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert (doc["deleted_with_schema"], doc["replayed"], doc["lost"]) == (0, 0, 0)
    assert "nothing to upgrade" in doc["message"]
    dry = p.upgrade("--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["plan"]["up_to_date"] is True
    assert p.emulator.stats()["deleted"] == deleted
    assert segmentable(p.schema())
    assert p.created_by_event() == before


def test_rows_that_leave_the_model_mid_replay_end_the_upgrade_as_lost(project: Project) -> None:
    """Killed mid-replay; then 5 rows not replayed yet leave the model. Nothing can replay
    them, so the rerun finishes the upgrade and reports them lost instead of waiting forever."""
    p = project
    before = sent_history(p)
    kill_mid_replay(p, after=10)
    waiting = p.ledger(
        "select row_key_display from (select *, row_number() over (partition by schema_id, "
        "row_key order by entry_seq desc) as rn from voyado_sync.deliveries) where rn = 1 and "
        "status = 'replay' order by row_key limit 5"
    )
    gone = [str(shown).removeprefix("event_id=") for (shown,) in waiting]
    assert len(gone) == 5
    with duckdb.connect(str(p.db)) as con:
        marks = ", ".join("?" for _ in gone)
        con.execute(f"delete from main.{MODEL} where event_id in ({marks})", gone)
    resumed = p.upgrade("--json")
    assert resumed.exit_code == 1, resumed.output
    doc = json.loads(resumed.stdout)
    assert doc["lost"] == 5 and doc["remaining"] == {}
    assert p.phase() == "done"
    left = {e: d for e, d in before.items() if e not in gone}
    assert p.created_by_event() == left


def test_a_model_emptied_mid_replay_does_not_end_its_history(project: Project) -> None:
    """Killed mid-replay, then the model's table comes back empty (a half-finished rebuild):
    the rerun gives nothing up, stays unfinished, and once the table is whole again it
    replays every row once."""
    p = project
    before = sent_history(p)
    kill_mid_replay(p, after=10)
    with duckdb.connect(str(p.db)) as con:
        con.execute(f"create table main.kept_rows as select * from main.{MODEL}")
        con.execute(f"delete from main.{MODEL}")
    held = p.upgrade("--json")
    assert held.exit_code == 1, held.output
    assert json.loads(held.stdout)["remaining"].get("replay", 0) > 0
    assert p.phase() == "replaying"
    with duckdb.connect(str(p.db)) as con:
        con.execute(f"insert into main.{MODEL} select * from main.kept_rows")
    resumed = p.upgrade("--json")
    assert resumed.exit_code == 0, resumed.output
    assert_upgraded(p, before)
