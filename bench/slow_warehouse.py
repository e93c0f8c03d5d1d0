"""Benchmark: a warehouse whose every statement takes 1 s longer (issue 12, item 6).

Cloud warehouses answer in 0.5-2 s per statement. This runs ``voyado-sync run --rate 50`` on the
bench project's contactId model with every statement voyado-sync sends to DuckDB delayed by
``--delay`` seconds (default 1.0), and measures the rate Voyado received from the first POST to
the last. The target is at least 95% of the rate asked for.

    .venv/bin/python bench/slow_warehouse.py [--rows 3000] [--rate 50] [--delay 1.0]

The delay is injected into the voyado-sync process (a wrapper that patches the DuckDB warehouse
before calling the CLI), so everything else is the real run: the emulator over HTTP, the real
ledger, the real pipeline. Results go to bench/results/slow_warehouse.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import MODEL, ROOT, Emulator, Project, log, received_times

RESULTS = ROOT / "bench" / "results"


def child(delay: float) -> None:
    """The voyado-sync CLI with every warehouse statement ``delay`` seconds slower."""
    from voyado_sync.cli import main
    from voyado_sync.warehouse import adapter

    def slowed(method: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            time.sleep(delay)
            return method(self, *args, **kwargs)

        return run

    adapter.DbtWarehouse._query = slowed(adapter.DbtWarehouse._query)  # type: ignore[method-assign]
    adapter.DbtWarehouse._execute_params = slowed(  # type: ignore[method-assign]
        adapter.DbtWarehouse._execute_params
    )
    main()


def measure(rows: int, rate: float, delay: float, work: Path) -> dict[str, Any]:
    project = Project.write(work)
    db = project.copy(project.build(rows, models=(MODEL,)), "slow")
    with Emulator(project, latency_ms=30, rate_limit=max(200.0, rate * 4)) as emulator:
        args = project.run_args(select=MODEL, rate=rate)[1:]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(delay), *args],
            env=project.env(db, emulator.url),
            capture_output=True,
            text=True,
            timeout=3600,
        )
        took = time.perf_counter() - started
        items = emulator.interactions()
        stats = emulator.stats()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"the run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    times = received_times(items)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / span if span else 0.0
    return {
        "rows": rows,
        "rate": rate,
        "statement_delay_s": delay,
        "stored": len(times),
        "duplicates": stats.get("duplicates"),
        "first_to_last_post_s": round(span, 2),
        "achieved_rate": round(achieved, 2),
        "share_of_rate": round(achieved / rate, 4),
        "run_seconds": round(took, 1),
        "target_met": achieved >= 0.95 * rate and len(times) == rows,
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        delay = float(sys.argv[2])
        sys.argv = ["voyado-sync", *sys.argv[3:]]
        child(delay)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--work", type=Path, default=RESULTS / "slow_warehouse_work")
    opts = parser.parse_args()
    result = measure(opts.rows, opts.rate, opts.delay, opts.work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "slow_warehouse.json").write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps(result))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
