"""Safe first runs, the guards against mass sends and deletes, and mirror models: real dbt
builds into DuckDB, real HTTP to the emulator, faults, and SIGKILL followed by a rerun.

Each test ends by checking what Voyado (the emulator) holds: for a mirror model exactly the
model's rows, once each, with their current content.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from tests.projects import BIN, BULK_CONTACTS, DB_ENV, dbt_build
from voyado_sync.cli import cli
from voyado_sync.emulator import EmulatorHandle

pytestmark = pytest.mark.slow

SCHEMA = "guardEvent"

_PROJECT = """
name: guarded
profile: guarded
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  guarded:
    +materialized: table
"""
_PROFILES = """
guarded:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_TEST_DUCKDB') }}"
      threads: 1
"""
# Keys prefix-00000 ..., a window [start, stop) of them; `bump` raises the price of every 7th
# row (a content change); createdDate one minute apart from 2025-01-01 08:00.
_EVENTS = """
select
    '{{ var('prefix', 'ev') }}-' || lpad(cast(i as varchar), 5, '0') as event_id,
    'bulk-contact-' || lpad(cast(i % 40 as varchar), 3, '0') as contact_id,
    timestamp '2025-01-01 08:00:00' + to_seconds(i * 60) as happened_at,
    cast(10 + i % 5 + {{ var('bump', 0) }} * (case when i % 7 = 0 then 1 else 0 end) as integer)
        as price
from range({{ var('start', 0) }}, {{ var('stop', 60) }}) as t(i)
"""
_SMALL = """
select 'sm-' || cast(i as varchar) as small_id, 'bulk-contact-001' as contact_id,
    cast(i as integer) as n
from range(5) as t(i)
"""


def _yaml(schema_id: str, extra: str) -> str:
    return f"""
models:
  - name: events
    config:
      meta:
        voyado:
          schema_id: {schema_id}
          unique_key: event_id
          contact: {{column: contact_id}}
          created_date: happened_at
          properties:
            eventId: event_id
            price: price
{extra}
  - name: small
    config:
      meta:
        voyado:
          schema_id: smallEvent
          unique_key: small_id
          contact: {{column: contact_id}}
          properties:
            n: n
"""


class Project:
    """A generated dbt project with a big ``events`` model and a ``small`` one, built into a
    private DuckDB file, with the emulator seeded with its contacts."""

    def __init__(self, where: Path, db: Path) -> None:
        self.dir = where / "guarded"
        self.db = db
        (self.dir / "models").mkdir(parents=True)
        (self.dir / "dbt_project.yml").write_text(_PROJECT)
        (self.dir / "profiles.yml").write_text(_PROFILES)
        (self.dir / "models" / "events.sql").write_text(_EVENTS)
        (self.dir / "models" / "small.sql").write_text(_SMALL)

    def build(self, *, schema_id: str = SCHEMA, meta: str = "", **vars_: object) -> None:
        """Write the YAML (``meta``: more lines under events' meta.voyado) and dbt build."""
        lines = "\n".join(f"          {line}" for line in meta.splitlines() if line.strip())
        (self.dir / "models" / "models.yml").write_text(_yaml(schema_id, lines))
        extra = ["--vars", json.dumps(vars_)] if vars_ else []
        dbt_build(self.dir, self.db, env_name=DB_ENV, extra=extra)

    def cli(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(
            cli,
            [
                "run",
                "--json",
                "--project-dir",
                str(self.dir),
                "--profiles-dir",
                str(self.dir),
                *args,
            ],
            catch_exceptions=False,
        )
        return result.exit_code, json.loads(result.stdout)

    def text(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["run", "--project-dir", str(self.dir), "--profiles-dir", str(self.dir), *args],
            catch_exceptions=False,
        )
        return result.exit_code, result.output

    def ledger(self, sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def latest_statuses(self, model: str = "events") -> dict[str, int]:
        rows = self.ledger(
            "select status, count(*) from (select *, row_number() over (partition by model, "
            "schema_id, row_key order by entry_seq desc) as rn from voyado_sync.deliveries "
            f"where model = '{model}') where rn = 1 group by status"
        )
        return {str(s): int(n) for s, n in rows}


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_emulator: EmulatorHandle
) -> Project:
    db = tmp_path / "guarded.duckdb"
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", "emulator-key")
    monkeypatch.setenv("VOYADO_SYNC_BACKOFF_BASE", "0.02")
    monkeypatch.setenv("VOYADO_SYNC_BACKOFF_MAX", "0.3")
    fresh_emulator.add_contacts(BULK_CONTACTS)
    return Project(tmp_path, db)


def model(doc: dict[str, Any], name: str = "events") -> dict[str, Any]:
    return next(m for m in doc["models"] if m["model"] == name)


def held(emulator: EmulatorHandle, schema_id: str = SCHEMA) -> Counter[tuple[str, int]]:
    """What Voyado holds of a schema: (eventId, price) -> how many interactions."""
    return Counter(
        (str(i["payload"]["eventId"]), int(i["payload"]["price"]))
        for i in emulator.interactions()
        if i["schemaId"] == schema_id
    )


def expected(start: int, stop: int, bump: int = 0, prefix: str = "ev") -> Counter[tuple[str, int]]:
    return Counter(
        (f"{prefix}-{i:05d}", 10 + i % 5 + (bump if i % 7 == 0 else 0)) for i in range(start, stop)
    )


def _posts(emulator: EmulatorHandle) -> int:
    return int(emulator.stats()["requests_by_endpoint"].get("POST /api/v3/interactions", 0))


# -- the first-run guard and the policies ------------------------------------------------------


def test_a_big_first_sync_is_stopped_then_baselined_and_later_runs_send_only_new_rows(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=1200)

    code, dry = project.cli("--dry-run")
    assert code == 2
    assert model(dry)["stopped_by_guard"] == "first_run"
    assert model(dry)["error"].startswith("a real run would stop")
    assert model(dry, "small")["stopped_by_guard"] is None and model(dry, "small")["sent"] == 5

    code, text = project.text()
    assert code == 2
    assert "STOPPED by the first-run guard" in text
    for words in ("events", "1200 rows", "automations", "backfill", "baseline", "{since: DATE}"):
        assert words in text, words
    assert held(fresh_emulator) == Counter()  # nothing of events was sent
    assert len([i for i in fresh_emulator.interactions() if i["schemaId"] == "smallEvent"]) == 5

    code, doc = project.cli("--first-run", "baseline", "-s", "events")
    assert code == 0, model(doc)
    assert (model(doc)["baselined"], model(doc)["sent"]) == (1200, 0)
    assert held(fresh_emulator) == Counter()
    assert project.latest_statuses() == {"baselined": 1200}

    project.build(stop=1210)
    posts = _posts(fresh_emulator)
    code, doc = project.cli("-s", "events")
    assert code == 0
    assert (model(doc)["sent"], model(doc)["baselined"], model(doc)["already_sent"]) == (
        10,
        0,
        1200,
    )
    assert held(fresh_emulator) == expected(1200, 1210)
    assert _posts(fresh_emulator) - posts == 10


def test_since_sends_rows_created_on_or_after_the_date_and_baselines_the_rest(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    # Rows one minute apart from 08:00: 08:10 is row 10.
    project.build(meta="first_run: {since: '2025-01-01T08:10:00'}")

    code, dry = project.cli("--dry-run", "-s", "events")
    assert (model(dry)["sent"], model(dry)["baselined"]) == (50, 10)
    samples = model(dry)["would_samples"]["baselined"]
    assert len(samples) == 3 and all(s < "event_id=ev-00010" for s in samples), samples

    code, doc = project.cli("-s", "events")
    assert code == 0
    assert (model(doc)["sent"], model(doc)["baselined"]) == (50, 10)
    assert held(fresh_emulator) == expected(10, 60)

    code, again = project.cli("-s", "events")
    assert (model(again)["sent"], model(again)["baselined"]) == (0, 0)
    assert held(fresh_emulator) == expected(10, 60)


def test_the_first_run_option_overrides_the_yaml_and_since_needs_created_date(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(meta="first_run: baseline")
    code, doc = project.cli("-s", "events", "--first-run", "since:2025-01-01T08:55:00Z")
    assert code == 0
    assert (model(doc)["sent"], model(doc)["baselined"]) == (5, 55)
    assert held(fresh_emulator) == expected(55, 60)

    code, doc = project.cli("-s", "events", "--first-run", "sometime")
    assert code == 2 and "--first-run" in doc["error"]["message"]


def test_a_model_with_rows_sent_under_another_schema_id_is_stopped(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=20)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["sent"] == 20

    project.build(schema_id=f"{SCHEMA}-v2", stop=20)
    code, doc = project.cli("-s", "events")
    assert code == 2
    events = model(doc)
    assert events["stopped_by_guard"] == "first_run" and events["sent"] == 0
    assert "20 rows sent under another schema_id" in events["error"]
    assert held(fresh_emulator, f"{SCHEMA}-v2") == Counter()

    code, doc = project.cli("-s", "events", "--first-run", "baseline")
    assert code == 0 and model(doc)["baselined"] == 20
    assert held(fresh_emulator, f"{SCHEMA}-v2") == Counter()


def test_the_mass_send_guard_stops_a_rekeyed_model_unless_allowed(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=1100, meta="first_run: backfill")
    code, doc = project.cli("-s", "events", "--rate", "200")
    assert code == 0 and model(doc)["sent"] == 1100

    project.build(stop=1100, prefix="new", meta="first_run: backfill")  # every key is new
    code, doc = project.cli("-s", "events", "--rate", "200")
    assert code == 2
    events = model(doc)
    assert events["stopped_by_guard"] == "mass_send" and events["sent"] == 0
    assert "--allow-mass-send events" in events["error"]
    assert "1100 of its 1100 rows" in events["error"]
    assert sum(held(fresh_emulator).values()) == 1100

    code, doc = project.cli("-s", "events", "--rate", "200", "--allow-mass-send", "events")
    assert code == 0 and model(doc)["sent"] == 1100
    assert sum(held(fresh_emulator).values()) == 2200


# -- mirror models ---------------------------------------------------------------------------

MIRROR = "mode: mirror"


def _until_clean(project: Project, *args: str, runs: int = 8) -> list[dict[str, Any]]:
    docs = []
    for _ in range(runs):
        code, doc = project.cli("-s", "events", *args)
        docs.append(model(doc))
        if code == 0:
            return docs
    raise AssertionError(f"not clean after {runs} runs: {docs[-1]}")


def test_mirror_deletes_left_rows_and_replaces_changed_ones_under_503s_and_lost_answers(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=60, meta=MIRROR)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["sent"] == 60

    # Rows 0-9 leave, 60-69 arrive, every 7th row still there changes its price.
    project.build(start=10, stop=70, bump=100, meta=MIRROR)
    code, dry = project.cli("-s", "events", "--dry-run")
    assert (model(dry)["deleted"], model(dry)["replaced"]) == (10, 7)
    assert all(s < "event_id=ev-00010" for s in model(dry)["would_samples"]["deleted"])
    replaced = {f"event_id=ev-{i:05d}" for i in range(14, 60, 7)}
    assert set(model(dry)["would_samples"]["replaced"]) <= replaced

    fresh_emulator.configure(error_rate=0.3, ambiguous_rate=0.05)
    docs = _until_clean(project, "--rate", "150")
    fresh_emulator.configure(error_rate=0.0, ambiguous_rate=0.0)

    stats = fresh_emulator.stats()
    assert stats["faults"]["injected_errors"] > 10
    assert stats["requests_by_endpoint"]["DELETE /api/v3/interactions/{id}"] >= 17
    assert sum(d["deleted"] + d["replaced"] for d in docs) >= 17
    assert held(fresh_emulator) == expected(10, 70, bump=100)  # exactly the live rows, once
    assert project.latest_statuses() == {"sent": 60, "deleted": 10}

    code, doc = project.cli("-s", "events")
    assert code == 0
    assert (model(doc)["sent"], model(doc)["deleted"], model(doc)["replaced"]) == (0, 0, 0)


def test_ambiguous_deletes_are_looked_up_not_lost(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=200, meta=MIRROR)
    project.cli("-s", "events", "--rate", "200")
    project.build(start=100, stop=200, meta=MIRROR)
    fresh_emulator.configure(ambiguous_rate=0.3)
    code, doc = project.cli("-s", "events", "--rate", "200", "--allow-mass-delete", "events")
    fresh_emulator.configure(ambiguous_rate=0.0)
    faults = fresh_emulator.stats()["faults"]
    assert faults["ambiguous_503"] + faults["dropped_connections"] > 10
    assert code == 0, model(doc)
    assert model(doc)["deleted"] == 100
    assert held(fresh_emulator) == expected(100, 200)


def test_the_mass_delete_guard_keeps_a_model_that_came_back_nearly_empty(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    project.build(stop=60, meta=MIRROR)
    project.cli("-s", "events")

    project.build(stop=5, meta=MIRROR)
    code, dry = project.cli("-s", "events", "--dry-run")
    assert code == 2 and model(dry)["stopped_by_guard"] == "mass_delete"
    code, doc = project.cli("-s", "events")
    assert code == 2
    events = model(doc)
    assert events["stopped_by_guard"] == "mass_delete" and events["deleted"] == 0
    assert "55 of its 60 interactions" in events["error"]
    assert "--allow-mass-delete events" in events["error"]
    assert held(fresh_emulator) == expected(0, 60)

    code, doc = project.cli("-s", "events", "--allow-mass-delete", "events")
    assert code == 0 and model(doc)["deleted"] == 55
    assert held(fresh_emulator) == expected(0, 5)

    # The keys come back: sent again.
    project.build(stop=60, meta=MIRROR)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["sent"] == 55
    assert held(fresh_emulator) == expected(0, 60)


def test_an_append_model_never_deletes(project: Project, fresh_emulator: EmulatorHandle) -> None:
    project.build(stop=30)
    project.cli("-s", "events")
    project.build(start=10, stop=30, bump=100)
    code, doc = project.cli("-s", "events")
    assert code == 0
    assert (model(doc)["sent"], model(doc)["deleted"], model(doc)["replaced"]) == (0, 0, 0)
    assert held(fresh_emulator) == expected(0, 30)
    assert "DELETE /api/v3/interactions/{id}" not in fresh_emulator.stats()["requests_by_endpoint"]


def _start_cli(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(BIN / "voyado-sync"),
            "run",
            "--project-dir",
            str(project.dir),
            "--profiles-dir",
            str(project.dir),
            "-s",
            "events",
            *(args or ("--rate", "120")),
        ],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _requests(emulator: EmulatorHandle) -> int:
    by = emulator.stats()["requests_by_endpoint"]
    return int(by.get("DELETE /api/v3/interactions/{id}", 0)) + int(
        by.get("POST /api/v3/interactions", 0)
    )


@pytest.mark.parametrize("seed", [5, 17, 29])
def test_sigkill_during_mirror_deletes_and_replacements_then_rerun_leaves_the_live_rows_once(
    project: Project, fresh_emulator: EmulatorHandle, seed: int
) -> None:
    rng = random.Random(seed)
    project.build(stop=300, meta=MIRROR)
    code, doc = project.cli("-s", "events", "--rate", "200")
    assert code == 0 and model(doc)["sent"] == 300

    # 100 rows leave, 100 arrive, 29 change: 229 requests or more.
    project.build(start=100, stop=400, bump=100, meta=MIRROR)
    fresh_emulator.configure(latency_ms=15, ambiguous_rate=0.05)
    for _ in range(2):
        before = _requests(fresh_emulator)
        proc = _start_cli(project)
        target = before + rng.randint(3, 60)
        deadline = time.monotonic() + 90
        while _requests(fresh_emulator) < target and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    fresh_emulator.configure(latency_ms=0, ambiguous_rate=0.0)
    _until_clean(project, "--rate", "200", runs=4)

    assert held(fresh_emulator) == expected(100, 400, bump=100)
    assert project.latest_statuses() == {"sent": 300, "deleted": 100}


# -- an interrupted first sync, and the policies' edges ------------------------------------------


# The choice from --first-run: the rerun must find it in the ledger (a YAML choice is read
# again anyway, through the same first-sync record). One variant: each sends 6,000 rows.
@pytest.mark.parametrize("chosen", ["option"])
def test_a_backfill_killed_midway_is_finished_by_a_plain_rerun(
    project: Project, fresh_emulator: EmulatorHandle, chosen: str
) -> None:
    """The first sync lasts until a run has gone through every row: the rerun of a backfill
    killed after 1,000 of 6,000 rows are settled is still that first sync, not a run that
    would resend most of a known model (the mass-send guard), and keeps its choice."""
    project.build(stop=6000, meta="first_run: backfill" if chosen == "yaml" else "")
    option = ("--first-run", "backfill") if chosen == "option" else ()
    proc = _start_cli(project, "--rate", "200", *option)
    deadline = time.monotonic() + 60
    while _posts(fresh_emulator) < 1700 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # At least 1,000 sent in the ledger's eyes, and more than half the model not journaled.
    statuses = project.latest_statuses()
    assert statuses["sent"] >= 1000 and sum(statuses.values()) < 3000, statuses

    code, doc = project.cli("-s", "events", "--rate", "200")
    assert code == 0, model(doc)
    assert model(doc)["stopped_by_guard"] is None
    assert held(fresh_emulator) == expected(0, 6000)
    assert project.latest_statuses() == {"sent": 6000}

    # Done: the next run is a later run, and one that finds 10 new rows sends them.
    project.build(stop=6010, meta="first_run: backfill" if chosen == "yaml" else "")
    code, doc = project.cli("-s", "events", "--rate", "200")
    assert code == 0 and model(doc)["sent"] == 10
    assert held(fresh_emulator) == expected(0, 6010)


def test_since_from_the_command_line_refuses_a_model_without_created_date(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    """``small`` has no created_date: every row's createdDate would be its send time, so
    since:DATE would baseline nothing and send every row. It is refused; events carries on."""
    project.build(stop=20)
    code, doc = project.cli("--first-run", "since:2025-01-01T08:10:00Z")
    assert code == 2
    small = model(doc, "small")
    assert small["sent"] == 0 and small["baselined"] == 0
    for words in ("small", "created_date", "--first-run since:"):
        assert words in small["error"], small["error"]
    assert (model(doc)["sent"], model(doc)["baselined"]) == (10, 10)
    assert [i for i in fresh_emulator.interactions() if i["schemaId"] == "smallEvent"] == []

    code, dry = project.cli("--dry-run", "-s", "small", "--first-run", "since:2025-01-01")
    assert code == 2 and "created_date" in model(dry, "small")["error"]


_MORE = """
select 'more-' || lpad(cast(i as varchar), 5, '0') as event_id,
    'bulk-contact-' || lpad(cast(i % 40 as varchar), 3, '0') as contact_id,
    timestamp '2025-02-01 08:00:00' + to_seconds(i * 60) as happened_at,
    cast(20 as integer) as price
from range(0, 30) as t(i)
"""


def test_a_model_new_to_a_shared_schema_has_its_own_first_sync(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    """A second model that starts sending to a schema another model fills is at its own
    first sync: its first_run applies, whatever the schema already holds."""
    project.build(stop=20)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["sent"] == 20

    (project.dir / "models" / "more_events.sql").write_text(_MORE)
    (project.dir / "models" / "more.yml").write_text(
        f"""
models:
  - name: more_events
    config:
      meta:
        voyado:
          schema_id: {SCHEMA}
          unique_key: event_id
          contact: {{column: contact_id}}
          created_date: happened_at
          first_run: baseline
          properties:
            eventId: event_id
            price: price
"""
    )
    project.build(stop=20)
    code, doc = project.cli("-s", "more_events")
    assert code == 0, model(doc, "more_events")
    assert (model(doc, "more_events")["baselined"], model(doc, "more_events")["sent"]) == (30, 0)
    assert held(fresh_emulator) == expected(0, 20)


def test_a_model_that_came_back_empty_has_not_had_its_first_sync(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    """Deployed before its upstream was built: its first run sees no row, so the run that
    first finds 1,200 rows is still its first sync, and the first-run guard decides."""
    project.build(stop=0)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["selected"] == 0
    project.build(stop=1200)
    code, doc = project.cli("-s", "events")
    assert code == 2 and model(doc)["stopped_by_guard"] == "first_run"
    assert held(fresh_emulator) == Counter()


def test_a_renamed_model_is_not_at_a_first_sync_again(
    project: Project, fresh_emulator: EmulatorHandle
) -> None:
    """Renaming a model resends nothing and baselines nothing: its rows are its schema's and
    keys'. The 5 rows that arrive with the rename are sent, although the YAML says baseline."""
    project.build(stop=20)
    code, doc = project.cli("-s", "events")
    assert code == 0 and model(doc)["sent"] == 20

    models = project.dir / "models"
    (models / "events.sql").rename(models / "events_renamed.sql")
    yaml = _yaml(SCHEMA, "          first_run: baseline").replace(
        "- name: events\n", "- name: events_renamed\n"
    )
    (models / "models.yml").write_text(yaml)
    dbt_build(project.dir, project.db, env_name=DB_ENV, extra=["--vars", '{"stop": 25}'])
    code, doc = project.cli("-s", "events_renamed")
    renamed = model(doc, "events_renamed")
    assert code == 0, renamed
    assert (renamed["sent"], renamed["baselined"], renamed["already_sent"]) == (5, 0, 20)
    assert held(fresh_emulator) == expected(0, 25)
