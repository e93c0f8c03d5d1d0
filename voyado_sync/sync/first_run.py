"""A first sync's policy: which pending rows are recorded ``baselined`` instead of sent.

``baseline`` baselines every pending row; ``since`` those whose createdDate is before the
date (a row whose createdDate cannot be read is left to the checks, which reject it). Every
baselined row of the model is written in one ledger write, before anything is sent: a crash
leaves either none of them (the next run is still the first sync and decides again) or all
of them (the next run sends only what the policy left to send).
"""

from __future__ import annotations

from voyado_sync.exceptions import RowRejected
from voyado_sync.payload import PayloadBuilder
from voyado_sync.spec import FirstRun, InteractionModel
from voyado_sync.state import Delivery, Ledger, Status, utc_now
from voyado_sync.sync import stage
from voyado_sync.sync.lifecycle import Db

SAMPLES = 3
#: Statuses of rows an interrupted first sync tried to send.
_TRIED = (Status.FAILED, Status.NOT_SENT, Status.CONTACT_NOT_FOUND)


def baselines(model: InteractionModel, policy: FirstRun, values: dict[str, object]) -> bool:
    """Whether this pending row is baselined under ``policy``. Pure."""
    if policy.policy == "baseline":
        return True
    if policy.policy != "since" or policy.since is None:
        return False
    try:
        created = PayloadBuilder(model).created_date(values)
    except RowRejected:
        return False
    return created is not None and created < policy.since


async def baseline(
    *,
    db: Db,
    ledger: Ledger,
    model: InteractionModel,
    staged: stage.Staged,
    policy: FirstRun,
    run_id: str,
    page_size: int,
    write: bool,
    resumed: bool = False,
) -> tuple[set[str], int, list[str]]:
    """Record the rows ``policy`` baselines: (their keys, the model rows behind them, up to
    three of their keys for display). ``write=False`` (a dry run) only counts. ``resumed``:
    the first sync goes on under the policy it started with, so rows its earlier runs tried
    (failed, not sent, waiting for their contact) are its to send, not to baseline."""
    keys: set[str] = set()
    rows = 0
    samples: list[str] = []
    entries: list[Delivery] = []
    now = utc_now()
    reason = f"baselined by first_run {policy}: there before the first sync, never sent"
    after = 0
    while True:
        page = await db(stage.page, ledger, model, staged, after=after, size=page_size)
        if not page:
            break
        after = page[-1][0]
        for _, row in page:
            tried = resumed and row.prev_status in _TRIED
            if tried or not baselines(model, policy, row.values):
                continue
            keys.add(row.ref.row_key)
            rows += row.dup_count
            if len(samples) < SAMPLES:
                samples.append(row.display)
            if write:
                entries.append(Delivery.baselined(row.ref, run_id=run_id, now=now, reason=reason))
    if write and entries:
        await db(ledger.write, entries)
    return keys, rows, samples
