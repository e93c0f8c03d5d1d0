"""The benchmarks of issues 7 and 19. Each returns a JSON-ready dict of what it measured."""

from __future__ import annotations

import bisect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
from harness import (
    DB_ENV,
    EMAIL_MODEL,
    MODEL,
    Emulator,
    Project,
    Sampler,
    log,
    median,
    received_times,
    run_sync,
)

MB = 2**20


def _ledger_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "select status, count(*) from voyado_sync.deliveries group by status"
        ).fetchall()
    finally:
        con.close()
    return {str(status): int(n) for status, n in rows}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_between(out: Any, start: float, end: float) -> float:
    inside = [x for x in out.samples if start <= x.wall <= end]
    return inside[-1].cpu - inside[0].cpu if len(inside) > 1 else 0.0


def _lowest_window_rate(times: list[float], window: float = 10.0) -> float | None:
    """The lowest rate seen over any ``window`` seconds between the first and last POST."""
    if not times or times[-1] - times[0] < window:
        return None
    lowest = float("inf")
    start = times[0]
    while start + window <= times[-1]:
        n = bisect.bisect_left(times, start + window) - bisect.bisect_left(times, start)
        lowest = min(lowest, n / window)
        start += 1.0
    return lowest


def _most_in_any_second(times: list[float]) -> int:
    """The most stamps within any one second (a sliding window, as Voyado may count)."""
    return max(
        (i + 1 - bisect.bisect_right(times, t - 1.0) for i, t in enumerate(times)), default=0
    )


def _requests(doc: dict[str, Any], sent: int) -> dict[str, Any]:
    """The client's own count of requests, per delivered interaction."""
    req = doc.get("requests", {})
    kinds = req.get("by_kind", {})
    posts = int(kinds.get("interaction_post", 0))
    return {
        "total": req.get("total", 0),
        "by_kind": kinds,
        "by_status": req.get("by_status", {}),
        "retries": req.get("retries", 0),
        "throttle_wait_seconds": req.get("throttle_wait_seconds", 0),
        "posts_per_interaction": round(posts / sent, 4) if sent else None,
    }


# -- 1 and 2: budget use and waste ------------------------------------------------------------


def budget(
    project: Project,
    built: Path,
    *,
    name: str,
    rows: int,
    rate: float,
    emulator_limit: float,
    model: str = MODEL,
    latency_ms: float = 30.0,
    emulator_extra: Sequence[str] = (),
    run_extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Send ``rows`` new rows at ``--rate``; measure the rate Voyado saw, 429s and duplicates.

    ``emulator_extra`` are more emulator options (latency spread, slow tail, Retry-After),
    ``run_extra`` more ``voyado-sync run`` options (``--concurrency``)."""
    db = project.copy(built, name)
    log(
        f"{name}: {rows:,} rows, --rate {rate:g}, emulator limit {emulator_limit:g}/s, "
        f"{latency_ms:g} ms {' '.join(emulator_extra)} {' '.join(run_extra)}"
    )
    with Emulator(
        project, latency_ms=latency_ms, rate_limit=emulator_limit, extra=emulator_extra
    ) as emu:
        out = run_sync(project, db, url=emu.url, select=model, rate=rate, extra=run_extra)
        items = emu.interactions()
        stats = emu.stats()
    res = out.model(model)
    times = received_times(items)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    sustained = (len(times) - 1) / span if span else 0.0
    api_total = sum(
        v for k, v in stats["requests_by_endpoint"].items() if k.startswith(("GET", "POST"))
    )
    throttled = int(stats["requests_by_status"].get("429", 0))
    ledger = _ledger_counts(db)
    result = {
        "rows": rows,
        "rate": rate,
        "emulator_rate_limit": emulator_limit,
        "latency_ms": latency_ms,
        "emulator_options": list(emulator_extra),
        "run_options": list(run_extra),
        "exit_code": out.exit_code,
        "wall_seconds": round(out.seconds, 2),
        "sent": res["sent"],
        "stored": stats["stored"],
        "duplicates": stats["duplicates"],
        "duplicate_payloads": stats["duplicate_payloads"],
        "ignored": stats["ignored"],
        "ledger": ledger,
        "first_to_last_post_seconds": round(span, 3),
        "sustained_per_second": round(sustained, 2),
        "share_of_rate": round(sustained / rate, 4),
        # Above ~0.9 the client, not the pacing, sets the pace (its event loop and ledger
        # writes share one GIL).
        "client_cpu_share_while_sending": _round(out.cpu_share(times[0], times[-1])),
        "client_cpu_ms_per_interaction": _round(
            _cpu_between(out, times[0], times[-1]) * 1000 / max(1, len(times) - 1)
        ),
        "lowest_10s_window_per_second": _lowest_window_rate(times),
        "emulator_peak_requests_per_second": stats["peak_requests_per_second"],
        # Every kind of request, counted on arrival over a sliding second.
        "peak_requests_in_any_second": stats["peak_requests_in_any_second"],
        "peak_posts_in_any_second": _most_in_any_second(times),
        "emulator_requests_by_endpoint": stats["requests_by_endpoint"],
        "emulator_requests_by_status": stats["requests_by_status"],
        "share_429": round(throttled / api_total, 4) if api_total else 0.0,
        "exactly_once": (
            stats["stored"] == rows
            and stats["duplicates"] == 0
            and stats["duplicate_payloads"] == 0
            and ledger.get("sent", 0) == rows
            and res["sent"] == rows
        ),
        "contact_lookups": res["contact_lookups"],
        "contact_lookups_cached": res["contact_lookups_cached"],
        "requests": _requests(out.doc, res["sent"]),
    }
    log(
        f"{name}: {sustained:.1f}/s sustained ({sustained / rate:.1%} of {rate:g}), "
        f"{throttled} x 429, stored {stats['stored']}, exactly once: {result['exactly_once']}, "
        f"peak in any second {stats['peak_requests_in_any_second']}, "
        f"client CPU {result['client_cpu_share_while_sending']} cores"
    )
    return result


def waste(project: Project, built: Path, *, rows: int) -> dict[str, Any]:
    """A clean run over a model whose contacts are looked up by email (lookups are cached)."""
    return budget(
        project,
        built,
        name="waste-email",
        rows=rows,
        rate=150,
        emulator_limit=200,
        model=EMAIL_MODEL,
    )


# -- issue 19: the budget at any latency ------------------------------------------------------

LATENCIES_MS = (30, 100, 250, 500)
JITTER = ("--latency-jitter", "0.5")
SLOW_TAIL = ("--slow-rate", "0.05", "--slow-ms", "2000")


def latency(project: Project, *, seconds: float) -> dict[str, Any]:
    """Issue 19's matrix: ``--rate`` 50 and 150 at each mean latency (spread by half either
    way), without and with a slow tail (5% of answers 2 s later), against an emulator that
    allows 200/s; then emulators limited to the rate and below it, a run with lookups and
    reconciliation, and the client's CPU at ``--rate 200``. Runs last about ``seconds``."""
    out: dict[str, Any] = {}
    for rate in (50, 150):
        rows = int(rate * seconds)
        built = project.build(rows, models=(MODEL,))
        for ms in LATENCIES_MS:
            for tail in (False, True):
                key = f"rate{rate}_{ms}ms" + ("_slow" if tail else "")
                out[key] = budget(
                    project, built, name=key.replace("_", "-"), rows=rows, rate=rate,
                    emulator_limit=200, latency_ms=ms,
                    emulator_extra=JITTER + (SLOW_TAIL if tail else ()),
                )  # fmt: skip
        # A Voyado whose limit is the rate itself: no 429.
        out[f"rate{rate}_limit_equal"] = budget(
            project, built, name=f"rate{rate}-limit-equal", rows=rows, rate=rate,
            emulator_limit=rate, latency_ms=100, emulator_extra=JITTER,
        )  # fmt: skip
    # Voyados that limit below the rate: most of their limit, few 429s.
    built = project.build(int(100 * seconds * 1.5), models=(MODEL,))
    out["limit100_rate150"] = budget(
        project, built, name="limit100-rate150", rows=int(100 * seconds * 1.5), rate=150,
        emulator_limit=100, latency_ms=100, emulator_extra=JITTER,
    )  # fmt: skip
    built = project.build(int(20 * seconds * 1.5), models=(MODEL,))
    out["limit20_rate50_retry_after"] = budget(
        project, built, name="limit20-rate50", rows=int(20 * seconds * 1.5), rate=50,
        emulator_limit=20, latency_ms=100, emulator_extra=(*JITTER, "--retry-after", "1"),
    )  # fmt: skip
    # Every kind of request under the rate: lookups by email, and listings after answers
    # that were lost (reconciliation).
    rows = int(150 * seconds)
    built = project.build(rows, models=(MODEL, EMAIL_MODEL))
    out["mixed_rate150"] = budget(
        project, built, name="mixed-rate150", rows=rows, rate=150, emulator_limit=200,
        latency_ms=100, model=EMAIL_MODEL,
        emulator_extra=(*JITTER, "--ambiguous-rate", "0.02"),
    )  # fmt: skip
    rows = int(200 * seconds)
    built = project.build(rows, models=(MODEL,))
    out["cpu_rate200"] = budget(
        project, built, name="cpu-rate200", rows=rows, rate=200, emulator_limit=200,
        latency_ms=30, emulator_extra=JITTER,
    )  # fmt: skip
    return out


# -- 3: the no-op run ---------------------------------------------------------------------------


def fill_ledger(project: Project, db: Path, select: str) -> Any:
    """Mark every row of the model ``sent`` with one INSERT ... SELECT, using the diff's own key
    expression; returns the resolved model."""
    from sqlglot import exp

    from voyado_sync import diff
    from voyado_sync.project import load_project, resolve_models
    from voyado_sync.settings import RunOptions
    from voyado_sync.state import Ledger
    from voyado_sync.warehouse.adapter import DbtWarehouse

    os.environ[DB_ENV] = str(db)
    wh = DbtWarehouse(project_dir=project.project_dir, profiles_dir=project.project_dir)
    try:
        model = resolve_models(
            load_project(RunOptions(project_dir=project.project_dir, select=(select,))), wh
        ).models[0]
        ledger = Ledger(wh)
        ledger.ensure()
        source = diff.table(
            model.relation.identifier, model.relation.schema, model.relation.database
        )
        stamp = diff.lit("2025-01-01T00:00:00.000Z")
        key = model.unique_key[0]
        values: dict[str, exp.Expression] = {
            "model": diff.lit(model.model),
            "schema_id": diff.lit(model.schema_id),
            "row_key": diff.row_key(model),
            "row_key_display": exp.DPipe(
                this=diff.lit(f"{key}="),
                expression=exp.cast(diff.col(key), exp.DataType.build("varchar")),
                safe=True,
            ),
            "content_hash": diff.hash_of(diff.content_columns(model)),
            "status": diff.lit(diff.SENT),
            "run_id": diff.lit("bench-fill"),
            "first_seen_at": stamp,
            "updated_at": stamp,
        }
        select_rows = exp.select(*(exp.alias_(v, k) for k, v in values.items())).from_(source)
        wh.execute(
            exp.insert(select_rows, ledger.table("deliveries"), columns=list(values)).sql(
                dialect=wh.dialect
            )
        )
        return model
    finally:
        wh.close()


def _anti_join_seconds(db: Path, model: Any, repeats: int = 3) -> dict[str, Any]:
    """The bare diff: the one-statement candidates query (``diff.candidates_select`` without
    step 1's keys) as a SELECT count(*), and step 1 staged as the run stages it."""
    from sqlglot import exp

    from voyado_sync import diff

    source = diff.table(model.relation.identifier, model.relation.schema, model.relation.database)
    ledger = diff.table("deliveries", "voyado_sync", model.relation.database)
    candidates = diff.candidates_select(model=model, source=source, ledger=ledger)
    count = exp.select(exp.Count(this=exp.Star())).from_(candidates.subquery("c")).sql("duckdb")
    keys = diff.unsent_keys_select(model=model, source=source, ledger=ledger)
    materialise = f"create temp table __bench_cand as {keys.sql('duckdb')}"
    con = duckdb.connect(str(db))
    try:
        con.execute("set enable_progress_bar = false")
        counted: list[float] = []
        for _ in range(repeats):
            started = time.perf_counter()
            n = con.execute(count).fetchone()
            counted.append(time.perf_counter() - started)
        created: list[float] = []
        for _ in range(repeats):
            con.execute("drop table if exists __bench_cand")
            started = time.perf_counter()
            con.execute(materialise)
            created.append(time.perf_counter() - started)
        con.execute("drop table if exists __bench_cand")
    finally:
        con.close()
    assert n is not None and n[0] == 0, f"the ledger should cover every row, {n} candidates"
    return {
        "count_seconds": [round(s, 3) for s in counted],
        "count_median": round(median(counted), 3),
        "create_table_seconds": [round(s, 3) for s in created],
        "create_table_median": round(median(created), 3),
    }


def _noop_runs(
    project: Project, db: Path, *, rows: int, url: str, repeats: int = 3
) -> dict[str, Any]:
    warm = run_sync(project, db, url=url, select=MODEL, rate=50)  # creates the schema once
    assert warm.exit_code == 0, warm.stderr[-2000:]
    seconds = []
    peak = 0
    for _ in range(repeats):
        out = run_sync(project, db, url=url, select=MODEL, rate=50)
        res = out.model(MODEL)
        assert out.exit_code == 0 and res["sent"] == 0 and res["already_sent"] == rows, out.doc
        seconds.append(out.seconds)
        peak = max([peak, *(x.rss for x in out.samples)])
    return {
        "seconds": [round(s, 3) for s in seconds],
        "median": round(median(seconds), 3),
        "peak_rss_mb": round(peak / MB, 1),
        "requests": out.doc.get("requests", {}),
    }


def noop(project: Project, *, rows: int, tiny_rows: int = 100) -> dict[str, Any]:
    """A run over ``rows`` rows that are all in the ledger, against the bare anti-join."""
    big = project.build(rows, models=(MODEL,))
    db = project.copy(big, "noop")
    log(f"noop: filling the ledger with {rows:,} sent rows")
    started = time.perf_counter()
    model = fill_ledger(project, db, MODEL)
    fill_seconds = time.perf_counter() - started
    anti = _anti_join_seconds(db, model)
    log(f"noop: anti-join {anti['count_median']}s, as CREATE TABLE {anti['create_table_median']}s")
    tiny_db = project.copy(project.build(tiny_rows, models=(MODEL,)), "noop-tiny")
    fill_ledger(project, tiny_db, MODEL)
    with Emulator(project, latency_ms=30) as emu:
        runs = _noop_runs(project, db, rows=rows, url=emu.url)
        log(f"noop: {rows:,}-row no-op run {runs['median']}s")
        tiny = _noop_runs(project, tiny_db, rows=tiny_rows, url=emu.url)
        log(f"noop: {tiny_rows}-row no-op run {tiny['median']}s")
    budget_seconds = 2 * anti["count_median"] + tiny["median"]
    return {
        "rows": rows,
        "ledger_fill_seconds": round(fill_seconds, 2),
        "anti_join": anti,
        "run": runs,
        "tiny_rows": tiny_rows,
        "tiny_run": tiny,
        "run_minus_startup": round(runs["median"] - tiny["median"], 3),
        "limit_seconds": round(budget_seconds, 3),
        "met": runs["median"] <= budget_seconds,
    }


# -- 4: constant memory --------------------------------------------------------------------------


def memory(
    project: Project, *, rows: int, seconds: float, results: Path, target: str | None = None
) -> dict[str, Any]:
    """RSS of ``voyado-sync run`` over ``rows`` new rows at 200/s, stopped with SIGTERM."""
    built = project.build(rows, models=(MODEL,))
    name = f"memory-{target}" if target else "memory"
    db = project.copy(built, name)
    rate = 200.0
    extra = ["--target", target] if target else []
    log(f"{name}: {rows:,} new rows at --rate {rate:g}, SIGTERM after {seconds:g}s")
    with Emulator(project, latency_ms=30, rate_limit=200) as emu:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            project.run_args(select=MODEL, rate=rate, extra=extra),
            cwd=project.work,
            env=project.env(db, emu.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sampler = Sampler(proc.pid).start()
        first_post: float | None = None
        stored_curve: list[tuple[float, int]] = []
        while time.perf_counter() - t0 < seconds and proc.poll() is None:
            stored = int(emu.stats()["stored"])
            now = time.perf_counter()
            stored_curve.append((now - t0, stored))
            if stored and first_post is None:
                first_post = now
            time.sleep(1.0)
        term = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
        exited = time.perf_counter()
        sampler.stop()
        stats = emu.stats()
    doc = json.loads(out)
    res = next(m for m in doc["models"] if m["model"] == MODEL)
    samples = [(x.at - t0, x.rss) for x in sampler.samples]
    curve_path = results / f"{name}-rss.csv"
    curve_path.write_text(
        "seconds,rss_mb\n" + "".join(f"{t:.2f},{rss / MB:.1f}\n" for t, rss in samples)
    )

    def peak(start: float, end: float) -> float | None:
        inside = [rss for t, rss in samples if start <= t < end]
        return round(max(inside) / MB, 1) if inside else None

    def at(moment: float) -> float | None:
        before = [rss for t, rss in samples if t <= moment]
        return round(before[-1] / MB, 1) if before else None

    post_at = (first_post - t0) if first_post is not None else None
    steady_from = max(post_at or 0.0, (term - t0) - 60)
    steady = [rss for t, rss in samples if steady_from <= t < term - t0]
    ledger = _ledger_counts(db)
    result = {
        "rows": rows,
        "rate": rate,
        "target": target or "dev (DuckDB defaults)",
        "ran_seconds_before_sigterm": round(term - t0, 1),
        "exit_seconds_after_sigterm": round(exited - term, 2),
        "exit_code": proc.returncode,
        "interrupted": doc.get("interrupted"),
        "sent_before_stop": res["sent"],
        "first_post_after_seconds": round(post_at, 2) if post_at is not None else None,
        "rss_mb": {
            "first_sample": round(samples[0][1] / MB, 1) if samples else None,
            "peak_before_first_post": peak(0, post_at) if post_at else None,
            "at_first_post": at(post_at) if post_at is not None else None,
            "steady_median_last_60s": round(sorted(steady)[len(steady) // 2] / MB, 1)
            if steady
            else None,
            "peak_while_sending": peak(post_at or 0.0, term - t0),
            "peak_during_shutdown": peak(term - t0, float("inf")),
            "peak": round(max(rss for _, rss in samples) / MB, 1) if samples else None,
            "every_10s": {
                f"{int(s)}s": at(s) for s in range(0, int(term - t0) + 1, 10) if at(s) is not None
            },
        },
        "curve_csv": str(curve_path.relative_to(results.parent.parent)),
        "stored": stats["stored"],
        "duplicates": stats["duplicates"],
        "ledger": ledger,
        "stored_equals_ledger_sent": stats["stored"] == ledger.get("sent", 0),
        "stderr_tail": err[-500:],
    }
    log(f"{name}: peak {result['rss_mb']['peak']} MB, {res['sent']} sent before SIGTERM")
    return result


# -- 5: start-up -------------------------------------------------------------------------------

_PHASES = r"""
import json, sys, time
from pathlib import Path
t = [time.perf_counter()]
import voyado_sync.cli
t.append(time.perf_counter())
from voyado_sync.settings import RunOptions
from voyado_sync.project import load_project, open_warehouse, resolve_models
import voyado_sync.sync
t.append(time.perf_counter())
project_dir = Path(sys.argv[1])
options = RunOptions(project_dir=project_dir, profiles_dir=project_dir, select=(sys.argv[2],))
project = load_project(options)
t.append(time.perf_counter())
wh = open_warehouse(options)
t.append(time.perf_counter())
resolve_models(project, wh)
t.append(time.perf_counter())
wh.close()
names = ["import voyado_sync.cli (click)", "import voyado_sync.sync (sqlglot, httpx, pydantic)",
         "read manifest + parse meta.voyado", "open warehouse (dbt imports, adapter, connect)",
         "resolve models (information_schema)"]
print(json.dumps({n: round(b - a, 3) for n, a, b in zip(names, t, t[1:])}))
"""


def _wall(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started


def _importtime(env: dict[str, str]) -> list[tuple[str, float]]:
    """Where the import time of ``voyado-sync run`` goes: self time summed per distribution's
    top-level package (dbt, mashumaro, sqlglot...), largest first."""
    code = (
        "import voyado_sync.cli, voyado_sync.sync, voyado_sync.warehouse.adapter, "
        "dbt.adapters.factory, dbt.config.runtime, dbt.adapters.duckdb"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        own, _, name = line[len("import time:") :].split("|")
        if not own.strip().isdigit():
            continue  # the header line
        root = name.strip().split(".")[0]
        totals[root] = totals.get(root, 0.0) + int(own) / 1e6
    return sorted(((k, round(v, 3)) for k, v in totals.items()), key=lambda kv: -kv[1])[:12]


def startup(project: Project, *, repeats: int = 5) -> dict[str, Any]:
    """``voyado-sync --help``, and what ``run`` costs before its first request."""
    env = dict(os.environ)
    python = [_wall([sys.executable, "-c", "pass"], env=env) for _ in range(repeats)]
    helps = [_wall([str(Path(sys.executable).parent / "voyado-sync"), "--help"], env=env)]
    helps += [
        _wall([str(Path(sys.executable).parent / "voyado-sync"), "--help"], env=env)
        for _ in range(repeats - 1)
    ]
    log(f"startup: --help median {median(helps):.3f}s")
    tiny = project.build(100, models=(MODEL,))
    db = project.copy(tiny, "startup")
    phase_env = project.env(db)
    phases = []
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", _PHASES, str(project.project_dir), MODEL],
            env=phase_env,
            capture_output=True,
            text=True,
            check=True,
        )
        phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    phase_median = {k: round(median([p[k] for p in phases]), 3) for k in phases[0]}
    # Process start to the first interaction Voyado stored, on a fresh 100-row ledger.
    first: list[float] = []
    wall: list[float] = []
    for i in range(3):
        fresh = project.copy(tiny, f"startup-{i}")
        with Emulator(project, latency_ms=30) as emu:
            out = run_sync(project, fresh, url=emu.url, select=MODEL, rate=50)
            times = received_times(emu.interactions())
        first.append(times[0] - out.started_at)
        wall.append(out.seconds)
    return {
        "python_bare_median": round(median(python), 3),
        "help_seconds": [round(s, 3) for s in helps],
        "help_median": round(median(helps), 3),
        "run_phases_median": phase_median,
        "run_fixed_cost": round(sum(phase_median.values()), 3),
        "spawn_to_first_stored_interaction": [round(s, 3) for s in first],
        "spawn_to_first_stored_median": round(median(first), 3),
        "tiny_run_wall_median": round(median(wall), 3),
        "importtime_top": _importtime(env),
    }
