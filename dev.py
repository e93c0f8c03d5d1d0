#!/usr/bin/env python3
"""The two commands of voyado-sync's README, on a machine with nothing but Python 3.11.

    python3 dev.py demo   # set up .venv, build the example dbt project, start the emulator, sync
    python3 dev.py test   # set up .venv (+ Dagster, Snowflake, PostgreSQL), then ruff, mypy, pytest

Set-up is idempotent: the virtual environment is rebuilt only when pyproject.toml or
constraints.txt change (.venv/dagster also when examples/dagster/requirements.txt does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".voyado-sync-installed"
EXAMPLE = ROOT / "dbt_project_example"
# Dagster's own environment for tests/test_dagster.py (see examples/dagster/requirements.txt).
DAGSTER_VENV = VENV / "dagster"
MONITORING = "package:voyado_sync_monitoring"
DAGSTER_REQUIREMENTS = ROOT / "examples" / "dagster" / "requirements.txt"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, env=env, cwd=cwd)


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs on whatever python3 is
        sys.exit(f"voyado-sync needs Python 3.11 or later; this is {sys.version.split()[0]}")
    wanted = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        if VENV.exists():
            shutil.rmtree(VENV)
        print(f"Creating {VENV.relative_to(ROOT)}...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing pinned dependencies...", flush=True)
    _run(
        BIN / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        ROOT / "constraints.txt",
        "-e",
        f"{ROOT}[dev]",
    )
    STAMP.write_text(wanted)


SNOWFLAKE_VENV = ROOT / ".venv-snowflake"
SNOWFLAKE_STAMP = SNOWFLAKE_VENV / ".voyado-sync-installed"


def setup_snowflake() -> None:
    """A second virtual environment for the Snowflake test: fakesnow (a local Snowflake) and
    dbt-snowflake with voyado-sync. Their pins clash with the project's (constraints.txt):
    fakesnow holds an older sqlglot and duckdb, snowflake-connector-python an older certifi."""
    pins = ROOT / "constraints-snowflake.txt"
    wanted = hashlib.sha256(pins.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if SNOWFLAKE_STAMP.exists() and SNOWFLAKE_STAMP.read_text() == wanted:
        return
    python = SNOWFLAKE_VENV / ("Scripts" if os.name == "nt" else "bin") / "python"
    if not python.exists():
        print(f"Creating {SNOWFLAKE_VENV.relative_to(ROOT)}...", flush=True)
        venv.EnvBuilder(with_pip=True).create(SNOWFLAKE_VENV)
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        pins,
        "fakesnow[server]",
        "dbt-snowflake",
        "-e",
        ROOT,
    )
    SNOWFLAKE_STAMP.write_text(wanted)


def setup_dagster() -> None:
    """.venv/dagster: dagster and dagster-dbt with voyado-sync, beside (not in) .venv."""
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", ROOT / "constraints.txt", DAGSTER_REQUIREMENTS):
        digest.update(path.read_bytes())
    stamp = DAGSTER_VENV / ".voyado-sync-installed"
    python = DAGSTER_VENV / ("Scripts" if os.name == "nt" else "bin") / "python"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    if not python.exists():
        print(f"Creating {DAGSTER_VENV.relative_to(ROOT)}...", flush=True)
        venv.EnvBuilder(with_pip=True).create(DAGSTER_VENV)
    print("Installing Dagster for the Dagster example's test...", flush=True)
    _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        ROOT / "constraints.txt",
        "-r",
        DAGSTER_REQUIREMENTS,
        ROOT,
    )
    stamp.write_text(digest.hexdigest())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("the emulator exited before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"the emulator did not listen on port {port} within {timeout:.0f}s")


def demo() -> int:
    setup()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOYADO_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    # A fresh demo each time: the example warehouse and the emulator start empty.
    for leftover in (
        EXAMPLE / "target" / "example.duckdb",
        EXAMPLE / "target" / "example.duckdb.wal",
    ):
        leftover.unlink(missing_ok=True)
    dbt = [BIN / "dbt", "--project-dir", EXAMPLE, "--profiles-dir", EXAMPLE]

    def dbt_cmd(command: str, *args: str) -> None:
        _run(dbt[0], command, *dbt[1:], *args, env=env, cwd=EXAMPLE)

    dbt_cmd("deps")  # the monitoring package, by local path: no network needed
    # The models first; the monitoring models are built after the sync, from its ledger.
    dbt_cmd("build", "--exclude", MONITORING)

    port = _free_port()
    api_key = "demo-" + hashlib.sha256(os.urandom(16)).hexdigest()[:16]
    env["VOYADO_EMULATOR_API_KEY"] = api_key
    emulator = subprocess.Popen(
        [
            str(BIN / "voyado-sync"),
            "emulator",
            "--port",
            str(port),
            "--contacts",
            str(EXAMPLE / "emulator_contacts.csv"),
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        _wait_for_port(port, emulator)
        env["VOYADO_BASE_URL"] = f"http://127.0.0.1:{port}"
        env["VOYADO_API_KEY"] = api_key
        sync = [
            str(BIN / "voyado-sync"),
            "run",
            "--project-dir",
            str(EXAMPLE),
            "--profiles-dir",
            str(EXAMPLE),
        ]
        print("\n== First run: every row is new ==", flush=True)
        first = subprocess.run(sync, env=env, cwd=EXAMPLE).returncode
        print(f"(exit code {first}: 1 means some rows were rejected; see why below)\n", flush=True)
        subprocess.run(
            [
                str(BIN / "voyado-sync"),
                "rejected",
                "--project-dir",
                str(EXAMPLE),
                "--profiles-dir",
                str(EXAMPLE),
            ],
            env=env,
            cwd=EXAMPLE,
        )
        print("\n== Second run: nothing new, nothing sent twice ==", flush=True)
        second = subprocess.run(sync, env=env, cwd=EXAMPLE).returncode
        print(f"(exit code {second})\n", flush=True)
        ended = _end_a_subscription(dbt_cmd, sync, env, port, api_key)
        print("== The run history in dbt: the monitoring package over the ledger ==", flush=True)
        dbt_cmd("build", "--select", MONITORING)
        for model in ("voyado_sync_runs_daily", "voyado_sync_rejections"):
            dbt_cmd("show", "--select", model, "--limit", "10")
        print(
            f"\nEach run also wrote {EXAMPLE.name}/target/voyado_sync_results.json "
            "(what `run --json` prints, plus run id, times and versions).",
            flush=True,
        )
    finally:
        emulator.send_signal(signal.SIGINT)
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
    return 0 if second == 0 and ended else 1


def _interactions(port: int, schema_id: str) -> dict[str, dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/interactions") as answer:
        stored = json.load(answer)
    return {str(i["id"]): i for i in stored if i.get("schemaId") == schema_id}


def _end_a_subscription(
    dbt_cmd: Callable[..., None], sync: list[str], env: dict[str, str], port: int, api_key: str
) -> bool:
    """voyado_active_subscriptions is a mirror model: end SUB-9001, rebuild, sync, and show
    that its interaction is gone from Voyado."""
    print("== A subscription ends: SUB-9001 leaves the mirror model ==", flush=True)
    before = _interactions(port, "activeSubscription")
    dbt_cmd(
        "build",
        "--select",
        "voyado_active_subscriptions",
        "--vars",
        "{ended_subscriptions: [SUB-9001]}",
    )
    code = subprocess.run(
        [*sync, "--select", "voyado_active_subscriptions"], env=env, cwd=EXAMPLE
    ).returncode
    gone = sorted(set(before) - set(_interactions(port, "activeSubscription")))
    for interaction_id in gone:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v3/interactions/{interaction_id}",
            headers={
                "apikey": api_key,
                "User-Agent": "voyado-sync demo",
                "Content-Type": "application/json",
            },
        )
        try:
            urllib.request.urlopen(request).close()
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        payload = json.dumps(before[interaction_id].get("payload"), ensure_ascii=False)
        print(
            f"deleted in Voyado: interaction {interaction_id} {payload} "
            f"(GET /api/v3/interactions/{interaction_id} now answers {status})",
            flush=True,
        )
    print(f"(exit code {code}; {len(gone)} interaction deleted)\n", flush=True)
    return code == 0 and len(gone) == 1


def _ensure_postgres() -> None:
    """Install PostgreSQL's server from Debian's packages where it is missing (as root):
    tests/test_postgres.py runs the example project on it, and fails under CI without it."""
    import glob

    if glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("PostgreSQL is not installed: tests/test_postgres.py will skip", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run("apt-get", "update", "-qq", env=env)
        _run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql", env=env)
    except subprocess.CalledProcessError as exc:
        print(f"could not install PostgreSQL ({exc}); its tests will say so", flush=True)


def test(extra: list[str]) -> int:
    setup()
    setup_dagster()
    setup_snowflake()
    _ensure_postgres()
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        [str(BIN / "python"), "-m", "pytest", *extra],
    ]
    for step in steps:
        print("+", " ".join(step), flush=True)
        code = subprocess.run(step, env=env, cwd=ROOT).returncode
        if code != 0:
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"setup", "demo", "test"}:
        print(__doc__)
        return 2
    if argv[0] == "setup":
        setup()
        setup_dagster()
        return 0
    if argv[0] == "demo":
        return demo()
    return test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
