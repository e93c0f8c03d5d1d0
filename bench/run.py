"""Benchmarks for issues 7 and 19: budget use at any latency, no waste, fast no-op runs,
constant memory, start-up.

    .venv/bin/python bench/run.py            # the full set, ~30 minutes
    .venv/bin/python bench/run.py --quick    # small sizes, ~10 minutes: checks the harness
    .venv/bin/python bench/run.py --only noop memory
    .venv/bin/python bench/run.py --only latency   # issue 19's matrix, ~13 minutes

Prints a Markdown table (target, measured, verdict) and writes every number to
bench/results/latest.json (or --out). Not part of the test suite: these are measurements of a
machine, not pass/fail checks of the code. Run them on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import scenarios
from harness import ROOT, Project, log, machine

SCENARIOS = ("budget", "latency", "waste", "noop", "memory", "startup")
FULL = {
    "budget_rows": 5000,
    "waste_rows": 2000,
    "noop_rows": 5_000_000,
    "memory_rows": 1_000_000,
    "memory_seconds": 150.0,
    "latency_seconds": 20.0,
}
QUICK = {
    "budget_rows": 1000,
    "waste_rows": 400,
    "noop_rows": 500_000,
    "memory_rows": 200_000,
    "memory_seconds": 30.0,
    "latency_seconds": 5.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, to check the harness.")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (kept).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--table", type=Path, metavar="RESULTS", help="Only print the table of a results file."
    )
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    sizes = QUICK if args.quick else FULL

    work = args.work or Path(tempfile.mkdtemp(prefix="voyado-sync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    project = Project.write(work)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "sizes": sizes}
    started = time.perf_counter()
    try:
        if "startup" in args.only:
            results["startup"] = scenarios.startup(project)
        if "budget" in args.only:
            built = project.build(sizes["budget_rows"])
            results["budget_50"] = scenarios.budget(
                project, built, name="budget-50", rows=sizes["budget_rows"], rate=50,
                emulator_limit=200,
            )  # fmt: skip
            results["budget_150"] = scenarios.budget(
                project, built, name="budget-150", rows=sizes["budget_rows"], rate=150,
                emulator_limit=200,
            )  # fmt: skip
            results["adapt_150_vs_100"] = scenarios.budget(
                project, built, name="adapt-150-vs-100", rows=sizes["budget_rows"], rate=150,
                emulator_limit=100,
            )  # fmt: skip
        if "latency" in args.only:
            results["latency"] = scenarios.latency(project, seconds=sizes["latency_seconds"])
        if "waste" in args.only:
            built = project.build(sizes["waste_rows"])
            results["waste_email"] = scenarios.waste(project, built, rows=sizes["waste_rows"])
        if "noop" in args.only:
            results["noop"] = scenarios.noop(project, rows=sizes["noop_rows"])
        if "memory" in args.only:
            for key, target in (("memory", None), ("memory_capped", "capped")):
                results[key] = scenarios.memory(
                    project,
                    rows=sizes["memory_rows"],
                    seconds=sizes["memory_seconds"],
                    results=args.out.parent,
                    target=target,
                )
    finally:
        results["bench_seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        log(f"results: {args.out}")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results))


def _verdict(ok: bool, miss: str = "") -> str:
    return "met" if ok else f"**missed**{': ' + miss if miss else ''}"


def table(r: dict[str, Any]) -> str:
    """The results as a Markdown table: target, measured, verdict."""
    rows: list[tuple[str, str, str]] = []
    for key, label in (("budget_50", "50"), ("budget_150", "150")):
        b = r.get(key)
        if not b:
            continue
        share = b["share_of_rate"]
        no429 = "" if key == "budget_50" else ", no 429"
        ok = share >= 0.95 and b["exactly_once"] and (key == "budget_50" or b["share_429"] == 0)
        lowest = b["lowest_10s_window_per_second"]
        rows.append(
            (
                f"1. `--rate {label}`, {b['rows']:,} rows, 30 ms latency: >= 95% of "
                f"{label}/s first to last POST{no429}",
                f"{b['sustained_per_second']}/s = {share:.1%} over "
                f"{b['first_to_last_post_seconds']} s (lowest 10 s window "
                f"{lowest if lowest is None else round(lowest, 1)}/s); "
                f"{b['emulator_requests_by_status'].get('429', 0)} x 429; "
                f"stored {b['stored']}, duplicates {b['duplicates']}; client CPU "
                f"{b.get('client_cpu_share_while_sending')} cores while sending",
                _verdict(ok, f"{share:.1%}"),
            )
        )
    a = r.get("adapt_150_vs_100")
    if a:
        ok = a["exactly_once"] and a["share_429"] < 0.05
        rows.append(
            (
                f"1. emulator limit 100/s, `--rate 150`, {a['rows']:,} rows: every row once, "
                "< 5% of requests 429",
                f"stored {a['stored']}/{a['rows']}, duplicates {a['duplicates']}, "
                f"{a['share_429']:.1%} answered 429 "
                f"({a['emulator_requests_by_status'].get('429', 0)} of "
                f"{sum(a['emulator_requests_by_status'].values())}); "
                f"{a['sustained_per_second']}/s sustained",
                _verdict(ok),
            )
        )
    clean = [
        (name, r[name])
        for name in ("budget_150", "budget_50", "waste_email")
        if r.get(name) and r[name]["share_429"] == 0
    ]
    if clean:
        worst = max(c["requests"]["posts_per_interaction"] or 0 for _, c in clean)
        parts = []
        for name, c in clean:
            kinds = c["requests"]["by_kind"]
            parts.append(
                f"{name}: {kinds.get('interaction_post', 0)} POSTs / {c['sent']} sent, "
                f"{kinds.get('schema', 0)} schema, {kinds.get('contact_lookup', 0)} lookups "
                f"(+{c['contact_lookups_cached']} cached)"
            )
        rows.append(
            (
                "2. clean run: <= 1.01 requests per delivered interaction",
                f"worst {worst:.4f} POSTs per interaction; " + "; ".join(parts),
                _verdict(worst <= 1.01, f"{worst:.3f}"),
            )
        )
    n = r.get("noop")
    if n:
        rows.append(
            (
                f"3. no-op run over {n['rows']:,} rows <= 2 x bare anti-join + start-up",
                f"run {n['run']['median']} s; anti-join {n['anti_join']['count_median']} s "
                f"(count) / {n['anti_join']['create_table_median']} s (as CREATE TABLE AS); "
                f"start-up ({n['tiny_rows']}-row no-op run) {n['tiny_run']['median']} s; "
                f"limit {n['limit_seconds']} s; peak RSS {n['run'].get('peak_rss_mb')} MB",
                _verdict(n["met"], f"{n['run']['median'] - n['limit_seconds']:.2f} s over"),
            )
        )
    for key in ("memory", "memory_capped"):
        m = r.get(key)
        if not m:
            continue
        rss = m["rss_mb"]
        rows.append(
            (
                f"4. peak RSS < 300 MB syncing {m['rows']:,} new rows (target {m['target']})",
                f"peak {rss['peak']} MB (before first POST {rss['peak_before_first_post']}, "
                f"steady {rss['steady_median_last_60s']}, shutdown {rss['peak_during_shutdown']}); "
                f"stopped with SIGTERM after {m['ran_seconds_before_sigterm']} s, "
                f"{m['sent_before_stop']:,} sent",
                _verdict((rss["peak"] or 0) < 300, f"{(rss['peak'] or 0) - 300:.0f} MB over"),
            )
        )
    s = r.get("startup")
    if s:
        rows.append(
            (
                "5. `voyado-sync --help` < 0.5 s (median of 5)",
                f"{s['help_median']} s (bare python {s['python_bare_median']} s)",
                _verdict(s["help_median"] < 0.5),
            )
        )
        phases = ", ".join(f"{k} {v}" for k, v in s["run_phases_median"].items())
        rows.append(
            (
                "5. fixed cost of `run` before the first request (reported)",
                f"{s['run_fixed_cost']} s in-process: {phases}; spawn to first stored "
                f"interaction {s['spawn_to_first_stored_median']} s",
                "reported",
            )
        )
    rows += _latency_rows(r.get("latency") or {})
    lines = ["| target | measured | verdict |", "| --- | --- | --- |"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in rows]
    matrix = _latency_matrix(r.get("latency") or {})
    return "\n".join(lines) + ("\n\n" + matrix if matrix else "")


def _peak_ok(b: dict[str, Any]) -> bool:
    rate = b["rate"]
    return bool(b["peak_requests_in_any_second"] <= min(200, 1.05 * rate))


def _measured(b: dict[str, Any]) -> str:
    return (
        f"{b['sustained_per_second']}/s = {b['share_of_rate']:.1%} of {b['rate']:g} over "
        f"{b['first_to_last_post_seconds']} s; most in any 1 s: "
        f"{b['peak_requests_in_any_second']} requests ({b['peak_posts_in_any_second']} POSTs); "
        f"{b['emulator_requests_by_status'].get('429', 0)} x 429; stored {b['stored']}/"
        f"{b['rows']}, duplicates {b['duplicates']}"
    )


def _latency_rows(lat: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 19's targets, one row each."""
    rows: list[tuple[str, str, str]] = []
    for key, b in lat.items():
        if not key.startswith("rate") or "limit" in key:
            continue
        slow = " + 5% of answers 2 s later" if key.endswith("_slow") else ""
        ok = b["share_of_rate"] >= 0.95 and _peak_ok(b) and b["exactly_once"]
        rows.append(
            (
                f"19. `--rate {b['rate']:g}`, {b['latency_ms']:g} ms +-50%{slow}: >= 95% of the "
                "rate, <= 5% over it in any 1 s",
                _measured(b),
                _verdict(ok, f"{b['share_of_rate']:.1%}, peak {b['peak_requests_in_any_second']}"),
            )
        )
    for key, b in lat.items():
        if not key.endswith("_limit_equal"):
            continue
        n429 = int(b["emulator_requests_by_status"].get("429", 0))
        rows.append(
            (
                f"19. emulator limit = `--rate {b['rate']:g}`, 100 ms +-50%: no 429",
                _measured(b),
                _verdict(n429 == 0 and b["exactly_once"], f"{n429} x 429"),
            )
        )
    for key in ("limit100_rate150", "limit20_rate50_retry_after"):
        b = lat.get(key)
        if not b:
            continue
        limit = b["emulator_rate_limit"]
        share = b["sustained_per_second"] / limit
        after = ", with Retry-After 1" if "retry_after" in key else ""
        ok = share >= 0.9 and b["share_429"] < 0.02 and b["exactly_once"]
        rows.append(
            (
                f"19. emulator limit {limit:g}/s{after}, `--rate {b['rate']:g}`: >= 90% of the "
                "limit, < 2% answered 429",
                f"{b['sustained_per_second']}/s = {share:.1%} of the limit; "
                f"{b['share_429']:.2%} answered 429; stored {b['stored']}/{b['rows']}, "
                f"duplicates {b['duplicates']}",
                _verdict(ok, f"{share:.1%} of the limit, {b['share_429']:.2%} 429"),
            )
        )
    b = lat.get("mixed_rate150")
    if b:
        kinds = b["requests"]["by_kind"]
        rows.append(
            (
                "19. every kind of request under `--rate 150` (lookups by email, listings after "
                "2% lost answers), 100 ms +-50%: <= 5% over the rate in any 1 s",
                _measured(b) + f"; by kind {kinds}",
                _verdict(_peak_ok(b) and b["exactly_once"], str(b["peak_requests_in_any_second"])),
            )
        )
    b = lat.get("cpu_rate200")
    if b:
        rows.append(
            (
                "19. client CPU per interaction at `--rate 200`, 30 ms +-50% (reported)",
                f"{b['client_cpu_ms_per_interaction']} ms per interaction "
                f"({b['client_cpu_share_while_sending']} cores while sending); " + _measured(b),
                "reported" if _peak_ok(b) else _verdict(False, "peak over 200"),
            )
        )
    return rows


def _latency_matrix(lat: dict[str, Any]) -> str:
    """Share of the rate, first to last POST, and the most requests in any one second."""
    cells = [(r, slow) for r in (50, 150) for slow in (False, True)]
    head = ["mean latency (+-50%)"] + [
        f"`--rate {r}`" + (" + 5% at 2 s" if slow else "") for r, slow in cells
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    found = False
    for ms in (30, 100, 250, 500):
        row = [f"{ms} ms"]
        for r, slow in cells:
            b = lat.get(f"rate{r}_{ms}ms" + ("_slow" if slow else ""))
            if b:
                found = True
                row.append(f"{b['share_of_rate']:.1%} (max {b['peak_requests_in_any_second']}/s)")
            else:
                row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) if found else ""


if __name__ == "__main__":
    main()
