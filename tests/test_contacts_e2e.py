"""Contacts by email, phone, member number or social security number, end to end.

A generated dbt project (one model per contact key) is built once for this module; every test
copies its DuckDB file and runs the real sync against the emulator over HTTP. The emulator
counts each request, so "looked up once" and "never sent" are measured, not assumed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from tests.projects import DB_ENV, BuiltProject, dbt_build
from voyado_sync.cli import cli
from voyado_sync.contacts import Normalised
from voyado_sync.emulator import Contact, EmulatorHandle
from voyado_sync.state import Delivery, Ledger
from voyado_sync.sync import RunOptions, run
from voyado_sync.voyado import VoyadoClient

pytestmark = pytest.mark.slow

LOOKUP = "GET /api/v3/contacts/id"
POST = "POST /api/v3/interactions"

ANNA, BO, SAME, MERGED = "ce2e-anna", "ce2e-bo", "ce2e-same", "ce2e-merge-old"
MERGED_INTO, LATE = "ce2e-merge-new", "ce2e-late"
TWINS = ("ce2e-twin-1", "ce2e-twin-2")

CONTACTS = [
    Contact(
        ANNA,
        email="anna@contacts-e2e.test",
        mobile_phone="+46701112233",
        custom_key="M-100",
        social_security_number="19800101-1234",
    ),
    Contact(
        BO,
        email="bo@contacts-e2e.test",
        mobile_phone="+46701112234",
        custom_key="M-101",
        social_security_number="198002021234",
    ),
    *(Contact(twin, custom_key="M-TWIN") for twin in TWINS),
    Contact(SAME, email="same@contacts-e2e.test"),
    Contact(MERGED, email="merge@contacts-e2e.test"),
]
# Every id a test here may create: removed before each test, as contacts outlive resets.
ALL_IDS = [c.contact_id for c in CONTACTS] + [MERGED_INTO, LATE]

# model -> (schema_id, contact column, contact block, rows of (event_id, identifier))
MODELS: dict[str, tuple[str, str, str, list[tuple[str, str]]]] = {
    "email_events": (
        "contactEmail",
        "email",
        "{column: email, key: email}",
        [
            ("E-1", " Anna@Contacts-E2E.test "),
            ("E-2", "anna@contacts-e2e.test"),
            ("E-3", "BO@contacts-e2e.test"),
            ("E-4", "not-an-email"),
        ],
    ),
    "phone_events": (
        "contactPhone",
        "phone",
        "{column: phone, key: mobilePhone, default_country: SE}",
        [
            ("P-1", "070-111 22 33"),
            ("P-2", "+46 70 111 22 34"),
            ("P-3", "+46701112233"),
            ("P-4", "12"),
        ],
    ),
    "member_events": (
        "contactMember",
        "member_number",
        "{column: member_number, key: customKey}",
        [("M-1", " M-100 "), ("M-2", "M-101"), ("M-3", "M-TWIN"), ("M-4", "M-404")],
    ),
    "ssn_events": (
        "contactSsn",
        "ssn",
        "{column: ssn, key: socialSecurityNumber}",
        [("S-1", "19800101-1234"), ("S-2", " 198002021234"), ("S-3", "1980-01-01")],
    ),
    "id_events": (
        "contactById",
        "contact_id",
        "{column: contact_id, key: contactId}",
        [("I-1", ANNA), ("I-2", f" {BO} "), ("I-3", "ce2e-nobody")],
    ),
    "same_email_events": (
        "contactSame",
        "email",
        "{column: email, key: email}",
        [
            (f"R-{i}", spelling)
            for i, spelling in enumerate(
                ["same@contacts-e2e.test", " Same@Contacts-E2E.test", "SAME@CONTACTS-E2E.TEST "] * 3
                + ["same@contacts-e2e.test"]
            )
        ],
    ),
    "merge_events": (
        "contactMerge",
        "email",
        "{column: email, key: email}",
        [("X-1", "merge@contacts-e2e.test")],
    ),
}


def write_project(where: Path) -> Path:
    project = where / "contacts"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: contacts\nprofile: contacts\nversion: '1.0'\nconfig-version: 2\n"
        "flags:\n  send_anonymous_usage_stats: false\n"
        "models:\n  contacts:\n    +materialized: table\n"
    )
    (project / "profiles.yml").write_text(
        "contacts:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: \"{{{{ env_var('{DB_ENV}') }}}}\"\n      threads: 1\n"
    )
    yaml = ["models:"]
    for name, (schema_id, column, contact, rows) in MODELS.items():
        values = ",\n    ".join(f"('{key}', '{ident}', 'note {key}')" for key, ident in rows)
        (project / "models" / f"{name}.sql").write_text(
            f"select * from (values\n    {values}\n) as t(event_id, {column}, note)\n"
        )
        yaml += [
            f"  - name: {name}",
            "    config:",
            "      meta:",
            "        voyado:",
            f"          schema_id: {schema_id}",
            "          unique_key: event_id",
            f"          contact: {contact}",
            "          properties:",
            "            note: note",
        ]
    (project / "models" / "models.yml").write_text("\n".join(yaml) + "\n")
    return project


@pytest.fixture(scope="module")
def contacts_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    base = tmp_path_factory.mktemp("contacts-build")
    project = write_project(base)
    db = base / "contacts.duckdb"
    dbt_build(project, db, env_name=DB_ENV)
    return BuiltProject(project, db, DB_ENV)


@pytest.fixture
def project(
    contacts_build: BuiltProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: EmulatorHandle,
) -> Iterator[BuiltProject]:
    monkeypatch.setenv(DB_ENV, str(contacts_build.fresh_db(tmp_path)))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", fresh_emulator.emulator.config.api_key)
    fresh_emulator.remove_contacts(ALL_IDS)
    fresh_emulator.add_contacts(CONTACTS)
    yield contacts_build
    fresh_emulator.remove_contacts(ALL_IDS)


# ---- helpers ---------------------------------------------------------------------------------


def run_json(project: BuiltProject, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--json",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.project_dir),
            *args,
        ],
        catch_exceptions=False,
    )
    doc = json.loads(result.stdout)
    return result.exit_code, {m["model"]: m for m in doc["models"]}


def select(*models: str) -> list[str]:
    return ["--select", " ".join(models)]


def lookups(emulator: EmulatorHandle) -> int:
    return int(emulator.stats()["requests_by_endpoint"].get(LOOKUP, 0))


def sql(query: str, *params: object, write: bool = False) -> list[tuple[Any, ...]]:
    con = duckdb.connect(os.environ[DB_ENV], read_only=not write)
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


def add_row(model: str, key: str, identifier: str) -> None:
    sql(f"insert into main.{model} values (?, ?, ?)", key, identifier, f"note {key}", write=True)


def ledger(model: str) -> dict[str, dict[str, Any]]:
    columns = ("row_key_display", "status", "contact_id", "http_status", "error_code", "reason")
    rows = sql(f"select {', '.join(columns)} from voyado_sync.deliveries where model = ?", model)
    return {r[0].removeprefix("event_id="): dict(zip(columns, r, strict=True)) for r in rows}


def stored_contacts(emulator: EmulatorHandle, schema_id: str) -> dict[str, str]:
    """note -> contactId of each interaction Voyado stored for the schema."""
    return {
        i["payload"]["note"]: i["contactId"]
        for i in emulator.interactions()
        if i["schemaId"] == schema_id
    }


# ---- every key type --------------------------------------------------------------------------


def test_each_key_type_finds_its_contact_and_bad_values_never_reach_voyado(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    code, models = run_json(project)

    assert code == 1  # rows were rejected
    counts = {
        name: (m["sent"], m["rejected"], m["contact_not_found"], m["contact_lookups"])
        for name, m in models.items()
    }
    assert counts == {
        "email_events": (3, 1, 0, 2),
        "phone_events": (3, 1, 0, 2),
        "member_events": (2, 1, 1, 4),
        "ssn_events": (2, 1, 0, 2),
        "id_events": (2, 1, 0, 0),
        "same_email_events": (10, 0, 0, 1),
        "merge_events": (1, 0, 0, 1),
    }
    assert stored_contacts(fresh_emulator, "contactEmail") == {
        "note E-1": ANNA,
        "note E-2": ANNA,
        "note E-3": BO,
    }
    assert stored_contacts(fresh_emulator, "contactPhone") == {
        "note P-1": ANNA,
        "note P-2": BO,
        "note P-3": ANNA,
    }
    assert stored_contacts(fresh_emulator, "contactMember") == {"note M-1": ANNA, "note M-2": BO}
    assert stored_contacts(fresh_emulator, "contactSsn") == {"note S-1": ANNA, "note S-2": BO}
    assert stored_contacts(fresh_emulator, "contactById") == {"note I-1": ANNA, "note I-2": BO}

    # One lookup per distinct valid identifier; unusable values cost no request at all.
    stats = fresh_emulator.stats()
    assert stats["requests_by_endpoint"][LOOKUP] == 2 + 2 + 4 + 2 + 1 + 1
    assert "400" not in stats["requests_by_status"]
    sent = sum(m["sent"] for m in models.values())
    assert stats["requests_by_endpoint"][POST] == sent + 1  # + the unknown contactId (404)
    assert "is not an email address" in ledger("email_events")["E-4"]["reason"]
    assert "is not a valid phone number" in ledger("phone_events")["P-4"]["reason"]
    assert "is not a social security number" in ledger("ssn_events")["S-3"]["reason"]


def test_what_was_normalised_is_counted_per_kind(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    _, models = run_json(project)

    assert models["email_events"]["contacts_normalised"] == {"trimmed and lower-cased": 2}
    assert models["phone_events"]["contacts_normalised"] == {"converted to E.164": 2}
    assert models["member_events"]["contacts_normalised"] == {"trimmed": 1}
    assert models["ssn_events"]["contacts_normalised"] == {"trimmed": 1}
    assert models["id_events"]["contacts_normalised"] == {"trimmed": 1}
    assert models["same_email_events"]["contacts_normalised"] == {"trimmed and lower-cased": 6}


def test_the_summary_says_what_was_normalised(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.project_dir),
            *select("email_events", "phone_events"),
        ],
    )

    assert "contact identifiers normalised: 2 trimmed and lower-cased" in result.output
    assert "contact identifiers normalised: 2 converted to E.164" in result.output
    assert "contact lookups: 2 new, 0 cached" in result.output


# ---- caching -----------------------------------------------------------------------------------


def test_ten_rows_of_one_email_make_one_lookup(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    code, models = run_json(project, *select("same_email_events"))

    assert code == 0
    assert models["same_email_events"]["sent"] == 10
    assert models["same_email_events"]["contact_lookups"] == 1
    assert lookups(fresh_emulator) == 1
    assert set(stored_contacts(fresh_emulator, "contactSame").values()) == {SAME}


def test_ten_rows_of_one_email_make_one_lookup_across_pages(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    options = RunOptions(
        project_dir=project.project_dir,
        profiles_dir=project.project_dir,
        select=("same_email_events",),
        page_size=3,
    )
    result = run(options)

    model = result.models[0]
    assert (model.sent, model.lookups, model.lookups_cached) == (10, 1, 3)
    assert lookups(fresh_emulator) == 1


def test_a_second_run_over_the_same_contacts_makes_zero_lookups(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    chosen = ("email_events", "phone_events", "ssn_events", "same_email_events")
    run_json(project, *select(*chosen))
    first = lookups(fresh_emulator)
    # New rows for the same people, spelt differently.
    add_row("email_events", "E-5", "ANNA@contacts-e2e.test")
    add_row("phone_events", "P-5", "0701112234")
    add_row("ssn_events", "S-5", "19800101-1234")
    add_row("same_email_events", "R-10", " same@contacts-e2e.test")

    code, models = run_json(project, *select(*chosen))

    assert first == 7
    assert code == 0
    assert lookups(fresh_emulator) == first  # not one more request
    assert {n: (m["sent"], m["contact_lookups"]) for n, m in models.items()} == {
        n: (1, 0) for n in chosen
    }
    assert all(m["contact_lookups_cached"] == 1 for m in models.values())
    assert stored_contacts(fresh_emulator, "contactPhone")["note P-5"] == BO


# ---- outcomes ----------------------------------------------------------------------------------


def test_contact_not_found_waits_and_is_retried_each_run(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    _, models = run_json(project, *select("member_events"))
    assert models["member_events"]["contact_not_found"] == 1
    row = ledger("member_events")["M-4"]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "contact_not_found",
        404,
        "ContactNotFound",
    )
    assert "retried on later runs for 7 days" in row["reason"]

    before = lookups(fresh_emulator)
    _, models = run_json(project, *select("member_events"))
    assert models["member_events"]["contact_not_found"] == 1
    assert lookups(fresh_emulator) == before + 1  # asked again, and only for that one

    fresh_emulator.add_contacts([Contact(LATE, custom_key="M-404")])
    _, models = run_json(project, *select("member_events"))
    assert (models["member_events"]["sent"], models["member_events"]["contact_not_found"]) == (
        1,
        0,
    )
    assert stored_contacts(fresh_emulator, "contactMember")["note M-4"] == LATE
    assert ledger("member_events")["M-4"]["status"] == "sent"


def test_contact_not_found_is_rejected_after_the_retry_window(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(project, *select("member_events"))
    six_days_ago = datetime.now(UTC) - timedelta(days=6, hours=23)
    eight_days_ago = datetime.now(UTC) - timedelta(days=8)

    def age_row(when: datetime) -> None:
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sql(
            "update voyado_sync.deliveries set first_seen_at = ? "
            "where model = 'member_events' and row_key_display = 'event_id=M-4'",
            stamp,
            write=True,
        )

    age_row(six_days_ago)
    _, models = run_json(project, *select("member_events"))
    assert models["member_events"]["contact_not_found"] == 1  # still inside the window

    age_row(eight_days_ago)
    code, models = run_json(project, *select("member_events"))

    assert code == 1
    assert (models["member_events"]["contact_not_found"], models["member_events"]["rejected"]) == (
        0,
        1,
    )
    row = ledger("member_events")["M-4"]
    assert row["status"] == "rejected" and row["error_code"] == "ContactNotFound"
    assert "no Voyado contact has customKey 'M-404'" in row["reason"]
    assert "still absent after 7 days" in row["reason"]
    # Rejected for good: the next run does not ask Voyado again.
    before = lookups(fresh_emulator)
    run_json(project, *select("member_events"))
    assert lookups(fresh_emulator) == before


def test_multiple_matches_are_rejected_with_the_ids_voyado_reported(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(project, *select("member_events"))

    row = ledger("member_events")["M-3"]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "rejected",
        409,
        "MultipleMatches",
    )
    assert "2 Voyado contacts match customKey 'M-TWIN'" in row["reason"]
    assert all(twin in row["reason"] for twin in TWINS)


def test_a_value_voyado_refuses_is_rejected_with_its_reason_and_code(
    project: BuiltProject, fresh_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Voyado's rules can be stricter than the local check; let a bad value through to see
    # what happens when they are.
    monkeypatch.setattr(
        "voyado_sync.sync.prepare.normalise",
        lambda key, raw, default_country=None: Normalised(str(raw).strip().lower()),
    )

    _, models = run_json(project, *select("email_events"))

    assert models["email_events"]["rejected"] == 1
    row = ledger("email_events")["E-4"]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "rejected",
        400,
        "InvalidEmailAddress",
    )
    assert "Voyado refused email 'not-an-email' (InvalidEmailAddress)" in row["reason"]


def test_contact_id_needs_no_lookup_and_an_unknown_id_is_rejected_by_name(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    _, models = run_json(project, *select("id_events"))

    assert (models["id_events"]["contact_lookups"], lookups(fresh_emulator)) == (0, 0)
    row = ledger("id_events")["I-3"]
    assert (row["status"], row["http_status"], row["error_code"]) == (
        "rejected",
        404,
        "ContactNotFound",
    )
    assert "Voyado has no contact ce2e-nobody" in row["reason"]


# ---- a contact merged or deleted after its id was cached ---------------------------------------


def merge_contact(emulator: EmulatorHandle, *, into: str | None) -> None:
    emulator.remove_contacts([MERGED])
    if into is not None:
        emulator.add_contacts([Contact(into, email="merge@contacts-e2e.test")])


async def _no_changes_endpoint(self: VoyadoClient, *args: Any) -> None:
    """A tenant that does not answer GET /api/v3/contacts/changes: only a POST's 404
    shows that a cached contact id is stale."""
    return None


def test_a_merged_contact_voyado_reports_is_looked_up_before_anything_is_posted(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    run_json(project, *select("merge_events"))
    merge_contact(fresh_emulator, into=MERGED_INTO)
    for key in ("X-2", "X-3"):
        add_row("merge_events", key, "merge@contacts-e2e.test")
    before = fresh_emulator.stats()["requests_by_endpoint"]

    _, models = run_json(project, *select("merge_events"))

    model = models["merge_events"]
    assert (model["sent"], model["contact_ids_invalidated"], model["contact_lookups"]) == (2, 0, 1)
    after = fresh_emulator.stats()["requests_by_endpoint"]
    assert after[POST] - before[POST] == 2  # no POST to the stale id
    stored = stored_contacts(fresh_emulator, "contactMerge")
    assert stored == {"note X-1": MERGED, **{f"note X-{i}": MERGED_INTO for i in (2, 3)}}


def test_a_merged_contact_is_looked_up_again_once_and_the_row_goes_to_the_new_id(
    project: BuiltProject, fresh_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VoyadoClient, "contact_changes", _no_changes_endpoint)
    run_json(project, *select("merge_events"))
    assert stored_contacts(fresh_emulator, "contactMerge") == {"note X-1": MERGED}
    merge_contact(fresh_emulator, into=MERGED_INTO)
    for key in ("X-2", "X-3", "X-4"):
        add_row("merge_events", key, "merge@contacts-e2e.test")
    events: list[tuple[str, ...]] = []
    write, deliver = Ledger.write, VoyadoClient.deliver_interaction

    def spy_write(self: Ledger, deliveries: list[Delivery]) -> None:
        events.extend(
            ("journal", d.row_key_display, d.status, str(d.contact_id)) for d in deliveries
        )
        write(self, deliveries)

    async def spy_deliver(self: VoyadoClient, body: dict[str, Any], **kw: Any) -> Any:
        events.append(("POST", body["payload"]["note"], str(body["contactId"])))
        return await deliver(self, body, **kw)

    monkeypatch.setattr(Ledger, "write", spy_write)
    monkeypatch.setattr(VoyadoClient, "deliver_interaction", spy_deliver)
    before = fresh_emulator.stats()["requests_by_endpoint"]
    # One row per page: later pages were read from the stale cache before the first 404.
    options = RunOptions(
        project_dir=project.project_dir,
        profiles_dir=project.project_dir,
        select=("merge_events",),
        page_size=1,
    )
    result = run(options)

    model = result.models[0]
    assert result.exit_code == 0
    assert (model.sent, model.invalidated, model.lookups) == (3, 1, 1)
    after = fresh_emulator.stats()["requests_by_endpoint"]
    assert after[LOOKUP] - before[LOOKUP] == 1
    # The three pages in flight left with the stale id (404, nothing stored), each resent
    # once to the fresh id; no page was sent twice to the new contact.
    assert after[POST] - before[POST] == 3 + 3
    stored = stored_contacts(fresh_emulator, "contactMerge")
    assert stored == {"note X-1": MERGED, **{f"note X-{i}": MERGED_INTO for i in (2, 3, 4)}}
    assert fresh_emulator.stats()["duplicates"] == 0
    rows = ledger("merge_events")
    assert {k: (r["status"], r["contact_id"]) for k, r in rows.items() if k != "X-1"} == {
        k: ("sent", MERGED_INTO) for k in ("X-2", "X-3", "X-4")
    }
    cached = sql(
        "select contact_id from voyado_sync.contacts where key_value = ?", "merge@contacts-e2e.test"
    )
    assert cached == [(MERGED_INTO,)]
    # Journal first, then send: each POST to the new id follows its in-flight row.
    for key in ("X-2", "X-3", "X-4"):
        post = events.index(("POST", f"note {key}", MERGED_INTO))
        journal = ("journal", f"event_id={key}", "in_flight", MERGED_INTO)
        assert journal in events[:post]


def test_a_deleted_contact_found_nowhere_waits_as_contact_not_found(
    project: BuiltProject, fresh_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VoyadoClient, "contact_changes", _no_changes_endpoint)
    run_json(project, *select("merge_events"))
    merge_contact(fresh_emulator, into=None)
    add_row("merge_events", "X-2", "merge@contacts-e2e.test")

    _, models = run_json(project, *select("merge_events"))

    model = models["merge_events"]
    assert (model["sent"], model["contact_not_found"], model["contact_ids_invalidated"]) == (
        0,
        1,
        1,
    )
    assert model["contact_lookups"] == 1
    row = ledger("merge_events")["X-2"]
    assert (row["status"], row["error_code"]) == ("contact_not_found", "ContactNotFound")
    # Forgotten: no cached id is left for it (the append-only ledger may keep a tombstone).
    assert not sql(
        "select * from voyado_sync.contacts where key_value = 'merge@contacts-e2e.test' "
        "and contact_id is not null"
    )


# ---- dry run -----------------------------------------------------------------------------------


def test_dry_run_counts_the_lookups_a_run_would_make(
    project: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    _, dry = run_json(project, "--dry-run")
    assert {n: (m["contact_lookups"], m["contact_lookups_cached"]) for n, m in dry.items()} == {
        "email_events": (2, 0),
        "phone_events": (2, 0),
        "member_events": (4, 0),
        "ssn_events": (2, 0),
        "id_events": (0, 0),
        "same_email_events": (1, 0),
        "merge_events": (1, 0),
    }
    assert dry["phone_events"]["contacts_normalised"] == {"converted to E.164": 2}
    assert fresh_emulator.stats()["total_requests"] == 0

    _, real = run_json(project)
    assert all(
        real[n]["contact_lookups"] == dry[n]["contact_lookups"] for n in dry
    )  # the forecast held
    add_row("email_events", "E-5", "bo@contacts-e2e.test")
    add_row("email_events", "E-6", "new@contacts-e2e.test")
    before = fresh_emulator.stats()["total_requests"]

    _, again = run_json(project, "--dry-run", *select("email_events"))

    assert (
        again["email_events"]["contact_lookups"],
        again["email_events"]["contact_lookups_cached"],
    ) == (1, 1)
    assert fresh_emulator.stats()["total_requests"] == before
