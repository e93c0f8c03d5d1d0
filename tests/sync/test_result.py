"""Counting settled rows, exit codes and the JSON document of a run."""

from __future__ import annotations

from tests.sync.values import NOW, RUN, row
from voyado_sync.state import Delivery
from voyado_sync.sync.result import ModelResult, SyncResult
from voyado_sync.sync.values import Settled


def _settled(tally: str, rows: int = 1, reason: str | None = None) -> Settled:
    delivery = Delivery.of(row(1).ref, run_id=RUN, now=NOW)
    return Settled(delivery, tally, rows=rows, grouped_reason=reason)  # type: ignore[arg-type]


def test_settled_rows_are_counted_and_reasons_grouped_without_their_values() -> None:
    res = ModelResult("repairs", "repair")
    for s in (
        _settled("sent"),
        _settled("rejected", 2, "2 rows share the unique key repair_id=1; none is sent"),
        _settled("rejected", 1, "contact column email (email): 'x' is not an email address"),
        _settled("waiting"),
        _settled("failed"),
        _settled("uncounted"),
    ):
        res.add(s)

    assert (res.sent, res.rejected, res.waiting, res.failed) == (1, 3, 1, 1)
    assert res.reasons.counts() == {
        "rows share a unique key; none is sent": 2,
        "contact column email (email): <value> is not an email address": 1,
    }


def test_exit_codes_and_the_error_envelope() -> None:
    ok = SyncResult(RUN, False, [ModelResult("a", "s")])
    waiting = SyncResult(RUN, False, [ModelResult("a", "s", waiting=3)])
    rejected = SyncResult(RUN, False, [ModelResult("a", "s", rejected=1)])
    broken = SyncResult(RUN, False, [ModelResult("a", "s", error="drift")])
    fatal = SyncResult(RUN, False, [], fatal="401", fatal_kind="FatalApiError")

    assert [r.exit_code for r in (ok, waiting, rejected, broken, fatal)] == [0, 0, 1, 2, 2]
    assert ok.as_dict()["error"] is None
    assert fatal.as_dict()["error"] == {"message": "401", "kind": "FatalApiError"}
    assert fatal.as_dict()["exit_code"] == 2
