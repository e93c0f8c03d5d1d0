"""The guards and a DELETE's settlement as plain functions on values."""

from __future__ import annotations

import pytest

from tests.warehouse.test_rendered import _model
from voyado_sync.state import Delivery, History, RowRef, Status
from voyado_sync.sync import guards
from voyado_sync.sync.mirror import settle_delete
from voyado_sync.voyado import Deleted, Failed, Rejected

MODEL = _model("duckdb")


@pytest.mark.parametrize(
    ("history", "rows", "choice", "stopped"),
    [
        (History(0, 0, 0), 1000, None, False),  # small first syncs go ahead
        (History(0, 0, 0), 1001, None, True),
        (History(0, 0, 3), 5, None, True),  # history under another schema_id
        (History(0, 0, 3), 5000, "baseline", False),  # a choice was made
        (History(1, 0, 0), 5000, None, False),  # not a first sync
    ],
)
def test_first_run_guard(history: History, rows: int, choice: object, stopped: bool) -> None:
    verdict = guards.first_run(MODEL, history, rows=rows, choice=choice)
    assert (verdict is not None) == stopped
    if verdict is not None:
        assert verdict.guard == "first_run"
        assert MODEL.model in verdict.message and f"{rows} rows" in verdict.message
        assert "automations" in verdict.message and "baseline" in verdict.message


@pytest.mark.parametrize(
    ("sent", "rows", "selected", "allowed", "stopped"),
    [
        (1000, 501, 1000, False, True),
        (1000, 500, 1000, False, False),  # exactly half is not more than half
        (999, 999, 999, False, False),  # fewer than 1,000 sent before
        (1000, 1000, 1000, True, False),
    ],
)
def test_mass_send_guard(sent: int, rows: int, selected: int, allowed: bool, stopped: bool) -> None:
    verdict = guards.mass_send(
        MODEL, History(sent, sent, 0), rows=rows, selected=selected, allowed=allowed
    )
    assert (verdict is not None) == stopped


@pytest.mark.parametrize(
    ("deletes", "live", "allowed", "stopped"),
    [(11, 20, False, True), (10, 10, False, False), (10, 20, False, False), (60, 60, True, False)],
)
def test_mass_delete_guard(deletes: int, live: int, allowed: bool, stopped: bool) -> None:
    verdict = guards.mass_delete(MODEL, deletes=deletes, live=live, allowed=allowed)
    assert (verdict is not None) == stopped


def _deleting() -> Delivery:
    ref = RowRef("m", "s", "k", "id=1", "h", None)
    sent = Delivery.journaled(ref, {"contactId": "c"}, run_id="r1", now="t").sent("i-1", now="t")
    return sent.deleting(run_id="r2", now="t", reason="left the model")


@pytest.mark.parametrize(
    ("outcome", "status", "http"),
    [
        (Deleted(), Status.DELETED, 204),
        (Deleted(already_gone=True), Status.DELETED, 404),
        (Rejected(400, "Bad", "no"), Status.DELETING, 400),
        (Failed("503", status=503, maybe_delivered=True), Status.DELETING, 503),
    ],
)
def test_a_delete_is_deleted_only_from_voyados_answer(
    outcome: object, status: Status, http: int
) -> None:
    entry = _deleting()
    assert entry.status == Status.DELETING and entry.interaction_id == "i-1"
    after = settle_delete(entry, outcome, now="t2")  # type: ignore[arg-type]
    assert (after.status, after.http_status, after.interaction_id) == (status, http, "i-1")
    assert after.run_id == "r2"
