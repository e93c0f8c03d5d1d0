"""The parts every benchmark shares: a generated dbt project, the emulator as its own process,
the real ``voyado-sync`` console script, an RSS sampler and a description of the machine.

Everything runs as separate processes, as a user would run it: the emulator never shares an
interpreter (or a GIL) with the client being measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VOYADO_SYNC = BIN / "voyado-sync"
DBT = BIN / "dbt"
API_KEY = "bench-key"
DB_ENV = "VOYADO_BENCH_DUCKDB"
DB_NAME = "bench.duckdb"  # dbt-duckdb names the database after the file: keep it in every copy
N_CONTACTS = 40

MODEL = "bench_events"  # contact by contactId: no lookups
EMAIL_MODEL = "bench_events_email"  # contact by email: one lookup per distinct address

_PROJECT = """
name: bench
profile: bench
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  bench:
    +materialized: table
vars:
  rows: 1000
"""
_PROFILES = """
bench:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_BENCH_DUCKDB') }}"
      threads: 1
    # The same file with DuckDB's buffer pool capped (its default is 80% of RAM): what a user
    # can do today, in profiles.yml, to bound the memory of the diff's staging.
    capped:
      type: duckdb
      path: "{{ env_var('VOYADO_BENCH_DUCKDB') }}"
      threads: 1
      settings:
        memory_limit: 100MB
"""
# The same shape as the test suite's bulk model: one row per integer of range(rows).
_COLUMNS = """
    timestamp '2025-01-01 08:00:00' + to_seconds(i) as happened_at,
    'SKU-' || cast(i % 17 as varchar) as sku,
    cast(1 + i % 5 as integer) as score,
    (i % 3 = 0) as is_member,
    cast(i as decimal(12, 2)) / 4 as amount
from range({{ var('rows') }}) as t(i)
"""
_MODELS = {
    MODEL: """
select
    'ev-' || lpad(cast(i as varchar), 8, '0') as event_id,
    'bench-contact-' || lpad(cast(i % 40 as varchar), 3, '0') as contact_id,"""
    + _COLUMNS,
    EMAIL_MODEL: """
select
    'em-' || lpad(cast(i as varchar), 8, '0') as event_id,
    'bench-contact-' || lpad(cast(i % 40 as varchar), 3, '0') || '@example.com' as email,"""
    + _COLUMNS,
}
_YAML = """
models:
  - name: bench_events
    config:
      meta:
        voyado:
          schema_id: benchEvent
          display_name: Bench event
          unique_key: event_id
          first_run: backfill  # a benchmark sends every row on purpose
          contact:
            column: contact_id
            key: contactId
          created_date: happened_at
          properties:
            productSku: sku
            score:
              column: score
              required: true
            isMember: is_member
            amount: amount
  - name: bench_events_email
    config:
      meta:
        voyado:
          schema_id: benchEmailEvent
          display_name: Bench event by email
          unique_key: event_id
          first_run: backfill  # a benchmark sends every row on purpose
          contact:
            column: email
            key: email
          created_date: happened_at
          properties:
            productSku: sku
            score:
              column: score
              required: true
            isMember: is_member
            amount: amount
"""


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the dbt project ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """The generated project and the directory its warehouses are built in."""

    project_dir: Path
    work: Path

    @classmethod
    def write(cls, work: Path) -> Project:
        project = work / "project"
        (project / "models").mkdir(parents=True, exist_ok=True)
        (project / "dbt_project.yml").write_text(_PROJECT)
        (project / "profiles.yml").write_text(_PROFILES)
        for name, sql in _MODELS.items():
            (project / "models" / f"{name}.sql").write_text(sql)
        (project / "models" / "bench.yml").write_text(_YAML)
        contacts = ["contactId,email"] + [
            f"bench-contact-{i:03d},bench-contact-{i:03d}@example.com" for i in range(N_CONTACTS)
        ]
        (work / "contacts.csv").write_text("\n".join(contacts) + "\n")
        return cls(project, work)

    @property
    def contacts_csv(self) -> Path:
        return self.work / "contacts.csv"

    def build(self, rows: int, *, models: Sequence[str] = (MODEL, EMAIL_MODEL)) -> Path:
        """``dbt build`` the models with ``rows`` rows each; the DuckDB file (cached by size)."""
        db = self.work / f"build-{rows}" / DB_NAME
        marker = db.with_suffix(".built")
        if marker.exists() and marker.read_text() == ",".join(models):
            return db
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [
                str(DBT),
                "build",
                "--profiles-dir",
                str(self.project_dir),
                "--vars",
                f"{{rows: {rows}}}",
                "--select",
                *models,
            ],
            cwd=self.project_dir,
            env=self.env(db),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dbt build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        took = time.perf_counter() - started
        log(f"dbt build of {rows:,} rows x {len(models)} model(s): {took:.1f}s")
        marker.write_text(",".join(models))
        return db

    def copy(self, built: Path, scenario: str) -> Path:
        """A private copy of a built warehouse, under the same file name (dbt's database name)."""
        target = self.work / scenario / DB_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(DB_NAME + "*"):
            stale.unlink()
        shutil.copyfile(built, target)
        return target

    def env(self, db: Path, base_url: str | None = None) -> dict[str, str]:
        env = _child_env(DBT_SEND_ANONYMOUS_USAGE_STATS="false")
        env[DB_ENV] = str(db)
        if base_url is not None:
            env["VOYADO_BASE_URL"] = base_url
            env["VOYADO_API_KEY"] = API_KEY
        return env

    def run_args(self, *, select: str, rate: float, extra: Sequence[str] = ()) -> list[str]:
        return [
            str(VOYADO_SYNC),
            "run",
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.project_dir),
            "--select",
            select,
            "--rate",
            f"{rate:g}",
            "--json",
            *extra,
        ]


@dataclass
class RunOutcome:
    """One ``voyado-sync run --json`` as a subprocess, with its resource samples."""

    exit_code: int
    seconds: float
    started_at: float  # wall clock (time.time()) just before the process was spawned
    doc: dict[str, Any]
    stderr: str
    samples: list[Sample] = field(default_factory=list)

    def model(self, name: str) -> dict[str, Any]:
        for m in self.doc.get("models", []):
            if m["model"] == name:
                return dict(m)
        raise KeyError(f"{name} not in the run's --json output: {self.doc}")

    def cpu_share(self, start: float, end: float) -> float | None:
        """CPU seconds per second of the process between two wall-clock instants (1.0 = one
        core busy)."""
        inside = [x for x in self.samples if start <= x.wall <= end]
        if len(inside) < 2 or inside[-1].wall <= inside[0].wall:
            return None
        return (inside[-1].cpu - inside[0].cpu) / (inside[-1].wall - inside[0].wall)


def run_sync(
    project: Project,
    db: Path,
    *,
    url: str,
    select: str,
    rate: float,
    extra: Sequence[str] = (),
    timeout: float = 3600,
) -> RunOutcome:
    started_at = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        project.run_args(select=select, rate=rate, extra=extra),
        cwd=project.work,
        env=project.env(db, url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = Sampler(proc.pid).start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        sampler.stop()
    seconds = time.perf_counter() - started
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"voyado-sync run printed no JSON (exit {proc.returncode}):\n"
            f"{stdout[-2000:]}\n{stderr[-2000:]}"
        ) from exc
    return RunOutcome(proc.returncode, seconds, started_at, doc, stderr, sampler.samples)


# -- the emulator ------------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    """The environment of a spawned process: the code under test is this checkout's, whatever
    the virtualenv's console scripts were installed from."""
    path = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""),
        **extra,
    )


class Emulator:
    """``voyado-sync emulator`` in its own process, on a free loopback port.

    ``extra`` are more of its options, e.g. ``("--latency-jitter", "0.5")``."""

    def __init__(
        self,
        project: Project,
        *,
        latency_ms: float = 30.0,
        rate_limit: float = 200.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.project = project
        self.latency_ms = latency_ms
        self.rate_limit = rate_limit
        self.extra = list(extra)
        self.url = ""
        self.summary = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Emulator:
        args = [
            str(VOYADO_SYNC),
            "emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--contacts",
            str(self.project.contacts_csv),
            "--latency-ms",
            f"{self.latency_ms:g}",
            "--rate-limit",
            f"{self.rate_limit:g}",
            "--seed",
            "19",
            *self.extra,
        ]
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_child_env(),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)", line)
        if not found:
            self._proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = found.group(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            out, _ = self._proc.communicate(timeout=30)
            self.summary = out
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return json.load(resp)

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_emulator/stats"))

    def interactions(self) -> list[dict[str, Any]]:
        return list(self.get("/_emulator/interactions"))


def parse_instant(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def received_times(items: Sequence[dict[str, Any]]) -> list[float]:
    return sorted(parse_instant(i["receivedAt"]) for i in items)


# -- memory ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # perf_counter
    wall: float  # time.time(), comparable with the emulator's receivedAt
    rss: int  # bytes, the process and its children
    cpu: float  # user + system seconds so far, the process and its children


@dataclass
class Sampler:
    """Samples the resident set and CPU time of a process and its children every
    ``interval`` seconds (psutil), until stopped or the process ends."""

    pid: int
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            rss, cpu = 0, 0.0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                        cpu += times.user + times.system
            except psutil.NoSuchProcess:
                return
            self.samples.append(Sample(time.perf_counter(), time.time(), rss, cpu))
            self._stop.wait(self.interval)


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("voyado-sync", "dbt-core", "dbt-duckdb", "duckdb", "httpx", "sqlglot"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    # The bench measures the working tree: say which package files differ from the commit.
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "voyado_sync"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
        "uncommitted_package_files": [line[3:] for line in changed if line.strip()],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)
