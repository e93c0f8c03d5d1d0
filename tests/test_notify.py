"""Alerts: which run calls for which message (pure), and posting to a real local webhook that
answers, fails with 500, hangs, or is not there at all."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.webhook import webhook_receiver
from voyado_sync import notify

KEY = "secret-api-key-123"


def doc(code: int, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "exit_code": code,
        "error": None,
        "run_id": "20260101T000000Z-abcd1234",
        "dry_run": False,
        "warehouse": "DuckDB file /tmp/x.duckdb",
        "interrupted": False,
        "models": [],
        "requests": {},
    }
    return {**base, **more}


def model(name: str, **counts: Any) -> dict[str, Any]:
    return {"model": name, "schema_id": name, "sent": 0, "rejected": 0, "failed": 0, **counts}


@pytest.mark.parametrize(
    ("document", "previous_clean", "event"),
    [
        (doc(0, models=[model("a", sent=3)]), True, None),  # clean after clean: quiet
        (doc(0, models=[model("a", sent=3)]), None, None),  # the very first run, clean
        (doc(0, models=[model("a", sent=3)]), False, "recovered"),
        (doc(1, models=[model("a", rejected=2, reasons={"bad": 2})]), True, "rejected"),
        (doc(1, interrupted=True, models=[model("a")]), True, "rejected"),
        (doc(2, error={"message": "no manifest", "kind": "ManifestError"}), None, "cannot_run"),
        (doc(2, models=[model("a", error="schema a differs\n  detail")]), True, "stopped"),
        (doc(1, dry_run=True, models=[model("a", rejected=1)]), False, None),  # dry runs: quiet
        (doc(0, dry_run=True), False, None),
    ],
)
def test_which_runs_alert(
    document: dict[str, Any], previous_clean: bool | None, event: str | None
) -> None:
    alert = notify.alert_for(document, previous_clean=previous_clean)
    assert (alert.event if alert else None) == event
    if alert:
        assert alert.body["voyado_sync"]["event"] == event
        assert alert.body["text"]
        assert alert.body["voyado_sync"]["exit_code"] == document["exit_code"]


def test_rejections_are_grouped_by_cause_across_models() -> None:
    document = doc(
        1,
        models=[
            model("reviews", rejected=3, reasons={"rating is not an integer": 2, "NULL key": 1}),
            model("repairs", rejected=4, failed=2, reasons={"rating is not an integer": 4}),
            model("subs", sent=5),
        ],
    )
    alert = notify.alert_for(document, previous_clean=True, project="shop")
    assert alert is not None
    fields = alert.body["voyado_sync"]
    assert fields["causes"] == [
        {"cause": "rating is not an integer", "rows": 6, "models": ["reviews", "repairs"]},
        {"cause": "NULL key", "rows": 1, "models": ["reviews"]},
    ]
    assert (fields["rejected"], fields["failed"], fields["project"]) == (7, 2, "shop")
    assert [m["model"] for m in fields["models"]] == ["reviews", "repairs"]
    assert "7 row(s) rejected, 2 failed" in alert.body["text"]
    assert "6 rows: rating is not an integer (reviews, repairs)" in alert.body["text"]
    assert "2 failed in repairs" in alert.body["text"]


def test_the_api_key_never_reaches_a_message() -> None:
    document = doc(2, error={"message": f"Voyado said: bad key {KEY}", "kind": "FatalApiError"})
    alert = notify.alert_for(document, previous_clean=True, secrets=[KEY])
    assert alert is not None
    assert KEY not in str(alert.body)
    assert "bad key ***" in alert.body["text"]


ALERT = notify.Alert("rejected", {"text": "hello", "voyado_sync": {"event": "rejected"}})


def test_post_delivers_the_json_message() -> None:
    with webhook_receiver() as hook:
        outcome = notify.post(hook.url, ALERT)
    assert outcome == notify.AlertOutcome("rejected", True, None)
    assert hook.messages == [ALERT.body]


def test_a_webhook_answering_500_is_reported_not_raised() -> None:
    with webhook_receiver() as hook:
        hook.mode = "error"
        outcome = notify.post(hook.url, ALERT)
    assert not outcome.sent
    assert outcome.error == "the webhook answered HTTP 500"
    assert "s3cr3t" not in str(outcome.as_dict())


def test_a_hanging_webhook_is_given_up_on_after_the_timeout() -> None:
    with webhook_receiver() as hook:
        hook.mode = "hang"
        started = time.monotonic()
        outcome = notify.post(hook.url, ALERT, timeout=1.0)
        elapsed = time.monotonic() - started
    assert not outcome.sent
    assert outcome.error == "the webhook did not answer within 1 s"
    assert 0.9 <= elapsed < 2.0
    assert len(hook.messages) == 1  # it did arrive; the answer never came


def test_an_unreachable_webhook_is_reported_without_its_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once closed
    outcome = notify.post(f"http://127.0.0.1:{port}/hooks/s3cr3t", ALERT)
    assert not outcome.sent
    assert outcome.error == "the webhook could not be reached (ConnectError)"
    assert "s3cr3t" not in (outcome.error or "")


def test_the_default_timeout_is_five_seconds() -> None:
    assert notify.TIMEOUT == 5.0
