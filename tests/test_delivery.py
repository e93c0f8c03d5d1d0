"""Never lose, never duplicate: fault injection, SIGKILL and SIGTERM against the emulator.

Each test ends by checking what Voyado (the emulator) stored: every row of the model exactly
once, nothing silently ignored, and a further run that sends nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest

from tests.projects import BIN, BuiltProject
from voyado_sync.emulator import EmulatorHandle
from voyado_sync.exceptions import LockError
from voyado_sync.sync import RunOptions, SyncResult, run
from voyado_sync.voyado import RetryPolicy

pytestmark = pytest.mark.slow

ROWS = 300
FAST_RETRY = RetryPolicy(max_attempts=8, backoff_base=0.02, backoff_max=0.3)


def expected_dates(rows: int = ROWS) -> set[str]:
    start = datetime(2025, 1, 1, 8, tzinfo=UTC)
    return {
        (start + timedelta(seconds=61 * i))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
        for i in range(rows)
    }


def assert_exactly_once(emulator: EmulatorHandle, rows: int = ROWS) -> None:
    stored = [i for i in emulator.interactions() if i["schemaId"] == "bulkEvent"]
    counts = Counter(i["createdDate"] for i in stored)
    duplicated = {d: n for d, n in counts.items() if n > 1}
    assert not duplicated, f"delivered more than once: {list(duplicated.items())[:5]}"
    missing = expected_dates(rows) - set(counts)
    assert not missing, f"{len(missing)} rows never delivered, e.g. {sorted(missing)[:3]}"
    assert len(stored) == rows
    assert emulator.stats()["ignored"] == 0


def run_engine(project: BuiltProject, **overrides: Any) -> SyncResult:
    settings: dict[str, Any] = {"retry": FAST_RETRY, **overrides}
    options = RunOptions(
        project_dir=project.project_dir, profiles_dir=project.project_dir, **settings
    )
    return run(options)


def ledger_status(db: str) -> dict[str, int]:
    con = duckdb.connect(db, read_only=True)
    try:
        rows = con.execute(
            "select status, count(*) from voyado_sync.deliveries group by status"
        ).fetchall()
    finally:
        con.close()
    return {str(s): int(n) for s, n in rows}


def test_30_percent_503s_and_a_low_rate_limit_with_retry_after(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(error_rate=0.3, rate_limit=60, retry_after=0.2)

    result = run_engine(bulk, rate=100, concurrency=8)

    model = result.models[0]
    assert result.exit_code == 0, model
    assert (model.sent, model.rejected, model.failed) == (ROWS, 0, 0)
    stats = fresh_emulator.stats()
    assert stats["faults"]["injected_errors"] > 20
    assert stats["faults"]["rate_limited"] > 0
    assert result.requests["throttled"] > 0
    assert_exactly_once(fresh_emulator)
    assert ledger_status(os.environ[bulk.db_env]) == {"sent": ROWS}

    fresh_emulator.configure(error_rate=0.0, rate_limit=200, retry_after=None)
    again = run_engine(bulk)
    assert again.models[0].sent == 0 and again.exit_code == 0
    assert_exactly_once(fresh_emulator)


def test_ambiguous_answers_are_reconciled_not_resent(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(ambiguous_rate=0.05)

    result = run_engine(bulk, rate=150, concurrency=8)

    model = result.models[0]
    faults = fresh_emulator.stats()["faults"]
    assert faults["ambiguous_503"] + faults["dropped_connections"] > 3
    assert model.reconciled > 3  # found in Voyado after an unknown outcome, not posted again
    assert (model.sent, model.failed) == (ROWS, 0)
    assert_exactly_once(fresh_emulator)

    fresh_emulator.configure(ambiguous_rate=0.0)
    again = run_engine(bulk)
    assert again.models[0].sent == 0
    assert_exactly_once(fresh_emulator)


def _start_cli(project: BuiltProject) -> subprocess.Popen[str]:
    env = dict(os.environ, VOYADO_SYNC_BACKOFF_BASE="0.05", VOYADO_SYNC_BACKOFF_MAX="0.5")
    return subprocess.Popen(
        [
            str(BIN / "voyado-sync"),
            "run",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.project_dir),
            "--rate",
            "120",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_stored(
    emulator: EmulatorHandle, at_least: int, proc: subprocess.Popen[str], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.stats()["stored"] >= at_least:
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before {at_least} rows were stored:\n{out}\n{err}")
        time.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} rows stored after {timeout}s")


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_sigkill_at_random_moments_then_rerun_delivers_every_row_once(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle, seed: int
) -> None:
    rng = random.Random(seed)
    fresh_emulator.configure(latency_ms=15, ambiguous_rate=0.02)
    stored_before = 0
    for _ in range(2):
        proc = _start_cli(bulk)
        target = stored_before + rng.randint(5, 100)
        _wait_for_stored(fresh_emulator, min(target, ROWS - 20), proc)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stored_before = fresh_emulator.stats()["stored"]
        assert stored_before < ROWS

    fresh_emulator.configure(latency_ms=0, ambiguous_rate=0.0)
    final = run_engine(bulk)

    assert final.exit_code == 0 and final.models[0].failed == 0
    assert_exactly_once(fresh_emulator)
    assert ledger_status(os.environ[bulk.db_env]) == {"sent": ROWS}


def test_sigterm_finishes_in_flight_requests_and_the_next_run_carries_on(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    fresh_emulator.configure(latency_ms=20)
    proc = _start_cli(bulk)
    _wait_for_stored(fresh_emulator, 60, proc)

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 1
    assert "Interrupted" in err
    assert "Traceback" not in err
    status = ledger_status(os.environ[bulk.db_env])
    assert "in_flight" not in status  # every request that left had its answer recorded
    assert status["sent"] == fresh_emulator.stats()["stored"] < ROWS

    fresh_emulator.configure(latency_ms=0)
    result = run_engine(bulk)
    assert result.exit_code == 0
    assert_exactly_once(fresh_emulator)


def _hold_lock(db: str, pid: int) -> None:
    con = duckdb.connect(db)
    try:
        con.execute(
            "insert into voyado_sync.run_claims (run_id, pid, host, claimed_at, heartbeat_at, "
            "state, supersedes, entry_n) values "
            "('other-run', ?, ?, '2026-01-01T00:00:00Z', ?, 'claim', '', 0)",
            [pid, socket.gethostname(), datetime.now(UTC).isoformat().replace("+00:00", "Z")],
        )
    finally:
        con.close()


def test_one_run_at_a_time_and_a_dead_holder_is_taken_over(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    db = os.environ[bulk.db_env]
    # Create the ledger with a first (complete) run, then pretend a live run holds it.
    assert run_engine(bulk).exit_code == 0
    _hold_lock(db, os.getpid())

    with pytest.raises(LockError, match=r"another voyado-sync run .*other-run"):
        run_engine(bulk)

    # A holder whose process is gone (kill -9) does not block the next run.
    dead = subprocess.Popen(["true"])
    dead.wait()
    con = duckdb.connect(db)
    con.execute("update voyado_sync.run_claims set pid = ?", [dead.pid])
    con.close()
    assert run_engine(bulk).exit_code == 0
    assert_exactly_once(fresh_emulator)


def test_failed_rows_are_retried_on_the_next_run(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    import httpx

    assert run_engine(bulk).exit_code == 0
    # Pretend 25 rows failed in that run: Voyado does not have them, the ledger says failed.
    db = os.environ[bulk.db_env]
    con = duckdb.connect(db)
    failed = con.execute(
        "update voyado_sync.deliveries set status = 'failed', interaction_id = null "
        "where row_key in (select row_key from voyado_sync.deliveries order by row_key limit 25) "
        "returning created_date"
    ).fetchall()
    con.close()
    dates = {str(d) for (d,) in failed}
    for item in fresh_emulator.interactions():
        if item["createdDate"] in dates:
            httpx.delete(
                f"{fresh_emulator.url}/api/v3/interactions/{item['id']}",
                headers=fresh_emulator.api_headers(),
            ).raise_for_status()
    assert fresh_emulator.stats()["stored"] == ROWS - 25

    again = run_engine(bulk)

    assert (again.models[0].sent, again.models[0].already_sent) == (25, ROWS - 25)
    assert_exactly_once(fresh_emulator)


def test_a_row_in_flight_whose_contact_was_deleted_does_not_stay_in_flight(
    bulk: BuiltProject, fresh_emulator: EmulatorHandle
) -> None:
    from voyado_sync.emulator import Contact

    # A crashed run left a row in flight; since then the contact was deleted in Voyado.
    body = {
        "contactId": "bulk-contact-005",
        "schemaId": "bulkEvent",
        "createdDate": "2025-01-01T08:05:05.000Z",
        "payload": {"productSku": "SKU-5", "score": 1, "isMember": False, "amount": 1.25},
    }
    assert run_engine(bulk).exit_code == 0
    db = os.environ[bulk.db_env]
    con = duckdb.connect(db)
    con.execute(
        "update voyado_sync.deliveries set status = 'in_flight', request_body = ?, "
        "interaction_id = null where created_date = ?",
        [json.dumps(body), body["createdDate"]],
    )
    con.close()
    fresh_emulator.remove_contacts(["bulk-contact-005"])
    try:
        result = run_engine(bulk)
    finally:
        fresh_emulator.add_contacts([Contact(contact_id="bulk-contact-005")])

    status = ledger_status(db)
    assert "in_flight" not in status
    assert result.models[0].rejected == 1  # resent, and Voyado says the contact is gone
    assert status == {"sent": ROWS - 1, "rejected": 1}
