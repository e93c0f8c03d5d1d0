"""A row's identity does not drift: not with the session's time zone, not when a key column's
type is widened, not when the model is renamed; and the ledger knows which Voyado it delivered
to, so a trial against one Voyado never hides rows from another.

Each case runs the real CLI in a subprocess (its own time zone), against a real dbt build and
the emulator over HTTP, and counts what Voyado stores.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.projects import BIN, dbt_build
from voyado_sync.emulator import Contact, EmulatorConfig, EmulatorHandle, run_emulator_in_thread

pytestmark = pytest.mark.slow

_KEY = "test-key"
_PROJECT = """
name: identity
profile: identity
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  identity:
    +materialized: table
"""
_PROFILES = """
identity:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_TEST_DUCKDB') }}"
      threads: 1
"""
_YAML = """
models:
  - name: MODEL
    config:
      meta:
        voyado:
          schema_id: identityEvent
          unique_key: [event_id, k]
          contact:
            column: contact_id
            key: contactId
          properties:
            note: note
"""
CONTACTS = [Contact(contact_id=f"id-contact-{i}") for i in range(3)]


def _rows(key_sql: str) -> str:
    """Three rows whose second key column is ``key_sql`` with ``i`` in 0..2."""
    return f"""
select
    'ev-' || cast(i as varchar) as event_id,
    {key_sql} as k,
    'id-contact-' || cast(i as varchar) as contact_id,
    'note ' || cast(i as varchar) as note
from range(3) as t(i)
"""


class Project:
    def __init__(self, where: Path) -> None:
        self.dir = where / "identity"
        (self.dir / "models").mkdir(parents=True)
        (self.dir / "dbt_project.yml").write_text(_PROJECT)
        (self.dir / "profiles.yml").write_text(_PROFILES)
        self.db = where / "identity.duckdb"
        self.model = ""

    def build(
        self, key_sql: str, model: str = "identity_events", *, sql: str = "", yaml: str = ""
    ) -> None:
        for old in (self.dir / "models").iterdir():
            old.unlink()
        (self.dir / "models" / f"{model}.sql").write_text(sql or _rows(key_sql))
        (self.dir / "models" / f"{model}.yml").write_text((yaml or _YAML).replace("MODEL", model))
        self.model = model
        dbt_build(self.dir, self.db, env_name="VOYADO_TEST_DUCKDB")

    def run(self, base_url: str, *, tz: str = "UTC") -> dict[str, Any]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VOYADO_", "DBT_")) and k != "TZ"
        }
        env.update(
            TZ=tz,
            VOYADO_TEST_DUCKDB=str(self.db),
            VOYADO_BASE_URL=base_url,
            VOYADO_API_KEY=_KEY,
            VOYADO_SYNC_LISTING_LAG="0.3",
        )
        proc = subprocess.run(
            [str(BIN / "voyado-sync"), "run", "--json", "--project-dir", str(self.dir)],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode in (0, 1, 2), proc.stderr[-3000:] + proc.stdout[-3000:]
        doc: dict[str, Any] = json.loads(proc.stdout)
        return doc


def _sent(doc: dict[str, Any]) -> int:
    return int(sum(m["sent"] for m in doc["models"]))


@pytest.fixture
def voyado(fresh_emulator: EmulatorHandle) -> EmulatorHandle:
    fresh_emulator.configure(api_key=_KEY)
    fresh_emulator.add_contacts(CONTACTS)
    return fresh_emulator


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_a_time_zone_change_resends_nothing(project: Project, voyado: EmulatorHandle) -> None:
    project.build("timestamptz '2026-03-01 10:00:00+00' + to_hours(cast(i as bigint))")

    assert _sent(project.run(voyado.url, tz="UTC")) == 3
    again = project.run(voyado.url, tz="Europe/Stockholm")

    assert _sent(again) == 0
    assert len(voyado.interactions()) == 3


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("cast(i as integer)", "cast(i as double)"),
        ("cast(i as decimal(10, 2)) / 4", "cast(cast(i as decimal(10, 2)) / 4 as decimal(12, 4))"),
        ("date '2026-03-01' + cast(i as integer)", "timestamp '2026-03-01' + to_days(i)"),
        ("cast(i as bigint) * 1000000007", "cast(i as decimal(20, 0)) * 1000000007"),
    ],
    ids=["int-to-double", "decimal-scale", "date-to-timestamp", "bigint-to-decimal"],
)
def test_a_widened_key_type_resends_nothing(
    project: Project, voyado: EmulatorHandle, before: str, after: str
) -> None:
    project.build(before)
    assert _sent(project.run(voyado.url)) == 3

    project.build(after)
    again = project.run(voyado.url)

    assert _sent(again) == 0, again
    assert len(voyado.interactions()) == 3


def test_distinct_float_keys_stay_distinct(project: Project, voyado: EmulatorHandle) -> None:
    project.build("0.1 + cast(i as double) / 1000")

    assert _sent(project.run(voyado.url)) == 3
    assert len(voyado.interactions()) == 3


def test_renaming_a_model_resends_nothing(project: Project, voyado: EmulatorHandle) -> None:
    project.build("cast(i as integer)", model="identity_events")
    assert _sent(project.run(voyado.url)) == 3

    project.build("cast(i as integer)", model="identity_events_v2")
    again = project.run(voyado.url)

    assert _sent(again) == 0, again
    assert again["models"][0]["model"] == "identity_events_v2"
    assert len(voyado.interactions()) == 3


@pytest.fixture
def other_voyado() -> Iterator[EmulatorHandle]:
    handle = run_emulator_in_thread(EmulatorConfig(seed=2, api_key=_KEY))
    handle.add_contacts(CONTACTS)
    try:
        yield handle
    finally:
        handle.stop()


def test_rows_sent_to_one_voyado_are_sent_to_another(
    project: Project, voyado: EmulatorHandle, other_voyado: EmulatorHandle
) -> None:
    project.build("cast(i as integer)")
    assert _sent(project.run(voyado.url)) == 3  # a trial, say against staging

    production = project.run(other_voyado.url)

    assert _sent(production) == 3
    assert len(other_voyado.interactions()) == 3
    # and back to the first: nothing twice there either
    assert _sent(project.run(voyado.url + "/")) == 0
    assert len(voyado.interactions()) == 3


def test_validate_says_when_models_share_a_key_space() -> None:
    from voyado_sync.spec import parse_spec
    from voyado_sync.validate import shared_key_spaces

    def spec(name: str, schema_id: str) -> tuple[str, Any]:
        meta = {
            "schema_id": schema_id,
            "unique_key": "id",
            "contact": {"column": "c"},
            "properties": {"note": "note"},
        }
        return name, parse_spec(name, meta)

    warnings = shared_key_spaces([spec("a", "review"), spec("b", "review"), spec("c", "repair")])

    assert len(warnings) == 1
    assert "a, b" in warnings[0] and "'review'" in warnings[0] and "key space" in warnings[0]


_VALUES_SQL = """
select
    'ev-' || cast(i as varchar) as event_id,
    0 as k,
    'id-contact-' || cast(i as varchar) as contact_id,
    case i when 0 then timestamp 'infinity' else timestamp '2026-03-01 10:00:00' end as happened_at,
    case i
        when 1 then cast('1234567890.0123456789' as decimal(38, 10))
        else cast('12.5' as decimal(38, 10))
    end as amount
from range(3) as t(i)
"""
_VALUES_YAML = """
models:
  - name: MODEL
    config:
      meta:
        voyado:
          schema_id: valuesEvent
          unique_key: event_id
          contact:
            column: contact_id
            key: contactId
          created_date: happened_at
          properties:
            amount: amount
"""


def test_infinite_dates_and_inexact_decimals_are_rejected_not_mangled(
    project: Project, voyado: EmulatorHandle
) -> None:
    project.build("", sql=_VALUES_SQL, yaml=_VALUES_YAML)

    doc = project.run(voyado.url)

    (model,) = doc["models"]
    assert model["sent"] == 1 and model["rejected"] == 2, model
    stored = voyado.interactions()
    assert [i["payload"]["amount"] for i in stored] == [12.5]
    listing = subprocess.run(
        [str(BIN / "voyado-sync"), "rejected", "--all", "--project-dir", str(project.dir)],
        cwd=project.dir,
        env={**os.environ, "VOYADO_TEST_DUCKDB": str(project.db)},
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "infinity" in listing
    assert "significant digits" in listing


def test_a_keyword_voyado_holds_and_voyado_sync_does_not_check_is_drift(
    project: Project, voyado: EmulatorHandle, other_voyado: EmulatorHandle
) -> None:
    """Voyado stores maxLength 3 on a property: rows breaking it would be accepted and
    ignored, so the model sends nothing and says why (before: 3 reported sent)."""
    import httpx

    project.build("cast(i as integer)")
    assert _sent(project.run(other_voyado.url)) == 3  # the schema as voyado-sync makes it
    headers = {"apikey": _KEY, "Content-Type": "application/json"}
    body = httpx.get(
        f"{other_voyado.url}/api/v3/interactionschemas/identityEvent", headers=headers
    ).json()
    body["jsonSchema"]["properties"]["note"]["maxLength"] = 3
    created = httpx.post(f"{voyado.url}/api/v3/interactionschemas", json=body, headers=headers)
    assert created.status_code in (200, 201), created.text

    doc = project.run(voyado.url)

    (model,) = doc["models"]
    assert model["sent"] == 0
    assert "maxLength" in str(model["error"])
    assert voyado.interactions() == []
    diff = subprocess.run(
        [str(BIN / "voyado-sync"), "schemas", "diff", "--project-dir", str(project.dir)],
        cwd=project.dir,
        env={
            **os.environ,
            "VOYADO_TEST_DUCKDB": str(project.db),
            "VOYADO_BASE_URL": voyado.url,
            "VOYADO_API_KEY": _KEY,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert diff.returncode != 0 and "maxLength" in diff.stdout, diff.stdout + diff.stderr


_MOVE_YAML = """
models:
  - name: MODEL
    config:
      meta:
        voyado:
          schema_id: moveEvent
          unique_key: event_id
          contact:
            column: email
            key: email
          properties:
            note: note
"""


def _move_rows(n: int) -> str:
    return f"""
select 'ev-' || cast(i as varchar) as event_id, 'moved@example.com' as email, 'n' as note
from range({n}) as t(i)
"""


def test_an_email_that_moves_to_another_contact_is_followed(
    project: Project, voyado: EmulatorHandle
) -> None:
    """The contact cache is re-checked when Voyado reports the contact changed (before: the
    second row went to the old contact, silently)."""
    voyado.add_contacts([Contact("c-old", email="moved@example.com")])
    project.build("", sql=_move_rows(1), yaml=_MOVE_YAML)
    assert _sent(project.run(voyado.url)) == 1

    voyado.add_contacts([Contact("c-old", email="before@example.com")])  # Updated
    voyado.add_contacts([Contact("c-new", email="moved@example.com")])
    project.build("", sql=_move_rows(2), yaml=_MOVE_YAML)
    assert _sent(project.run(voyado.url)) == 1

    owners = [i["contactId"] for i in voyado.interactions()]
    assert owners == ["c-old", "c-new"]
