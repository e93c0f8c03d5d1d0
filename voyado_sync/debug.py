"""``voyado-sync debug``: is everything a run needs in place? One check per line, in seconds.

Like ``dbt debug``: the dbt project, its profile and target, the warehouse connection, the
manifest's age against the models' files, ``run_results.json``, the ledger (exists, version,
lock holder), whether ``VOYADO_BASE_URL`` answers and whether Voyado accepts the key, the
last with one read-only request (``GET /api/v3/interactionschemas``). The request starts
first, on its own thread, with short timeouts and no retry, so an unreachable Voyado costs a
few seconds, not the minute a run's retries would; the whole report is bounded by
:data:`VOYADO_DEADLINE`. Nothing is written anywhere.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voyado_sync import __version__, settings
from voyado_sync.exceptions import ConfigError, VoyadoSyncError, error_kind
from voyado_sync.manifest import Manifest, load_manifest, manifest_path
from voyado_sync.settings import RunOptions

Status = Literal["ok", "warn", "fail", "skip"]
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 4.0
#: Seconds from the start of debug after which Voyado's answer is no longer waited for.
VOYADO_DEADLINE = 8.0
_SCHEMAS_PATH = "/api/v3/interactionschemas"
_MODEL_FILES = (".sql", ".py", ".yml", ".yaml", ".csv")


@dataclass(frozen=True)
class Check:
    """One line of the report. ``fail`` means a run cannot work; ``warn`` that it can, but
    something deserves a look; ``skip`` that an earlier failure made the check impossible."""

    name: str
    label: str
    status: Status
    message: str
    kind: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "status": self.status,
            "message": self.message,
            "kind": self.kind,
        }

    def line(self) -> str:
        return f"{self.status.upper():<4}  {self.label}: {self.message}"


@dataclass
class DebugReport:
    """Every check, in order; exit 2 when any failed."""

    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 2 if any(c.status == "fail" for c in self.checks) else 0

    def as_dict(self) -> dict[str, Any]:
        failed = [c for c in self.checks if c.status == "fail"]
        error = (
            {
                "message": "; ".join(f"{c.label}: {c.message}" for c in failed),
                "kind": failed[0].kind or "DebugCheckFailed",
            }
            if failed
            else None
        )
        return {
            "exit_code": self.exit_code,
            "error": error,
            "checks": [c.as_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
        }


def run_debug(options: RunOptions, *, deadline: float = VOYADO_DEADLINE) -> DebugReport:
    """Run every check; never raises for what it checks (a failure is a line)."""
    started = time.monotonic()
    probe = _VoyadoProbe(options.base_url)
    probe.start()
    report = DebugReport()
    add = report.checks.append
    project = _check_project(options)
    add(project)
    add(_check_profile(options) if project.status != "fail" else _skipped("profile", project))
    warehouse: Any = None
    if project.status == "fail":
        add(_skipped("warehouse", project))
    else:
        check, warehouse = _check_warehouse(options)
        add(check)
    try:
        manifest_check, manifest = _check_manifest(options)
        add(manifest_check)
        add(_check_run_results(options, manifest))
        if warehouse is None:
            add(_skipped("ledger", report.checks[2]))
        else:
            add(_check_ledger(options, warehouse))
    finally:
        if warehouse is not None:
            warehouse.close()
    report.checks.extend(probe.result(started + deadline))
    report.seconds = time.monotonic() - started
    return report


_LABELS = {
    "project": "dbt project",
    "profile": "profile and target",
    "warehouse": "warehouse connection",
    "manifest": "manifest",
    "run_results": "run_results.json",
    "ledger": "ledger",
    "voyado_url": "VOYADO_BASE_URL",
    "voyado_key": "API key",
}


def _check(name: str, status: Status, message: str, kind: str | None = None) -> Check:
    return Check(name, _LABELS[name], status, message, kind)


def _skipped(name: str, because: Check) -> Check:
    return _check(name, "skip", f"not checked: {because.label} failed")


def _failure(name: str, exc: BaseException) -> Check:
    text = str(exc) if isinstance(exc, VoyadoSyncError) else f"{type(exc).__name__}: {exc}"
    return _check(name, "fail", text, error_kind(exc))


def _yaml(path: Path) -> Any:
    import yaml  # type: ignore[import-untyped]  # installed with dbt-core

    return yaml.safe_load(path.read_text())


def _check_project(options: RunOptions) -> Check:
    path = options.project_dir.resolve() / "dbt_project.yml"
    if not path.exists():
        return _check(
            "project",
            "fail",
            f"no dbt_project.yml in {path.parent}: run from the dbt project or pass --project-dir",
            "ConfigError",
        )
    try:
        data = _yaml(path)
        name, profile = data.get("name"), data.get("profile")
    except Exception as exc:
        return _check("project", "fail", f"cannot read {path}: {exc}", "ConfigError")
    return _check("project", "ok", f"{name} ({path}), profile {profile}")


def _check_profile(options: RunOptions) -> Check:
    project_dir = options.project_dir.resolve()
    profiles_dir = (options.profiles_dir or settings.default_profiles_dir(project_dir)).resolve()
    path = profiles_dir / "profiles.yml"
    if not path.exists():
        return _check(
            "profile",
            "fail",
            f"no profiles.yml in {profiles_dir}: pass --profiles-dir or set DBT_PROFILES_DIR",
            "ConfigError",
        )
    try:
        name = str(_yaml(project_dir / "dbt_project.yml").get("profile"))
        profiles = _yaml(path) or {}
    except Exception as exc:
        return _check("profile", "fail", f"cannot read {path}: {exc}", "ConfigError")
    entry = profiles.get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(str(k) for k in profiles if k != "config")) or "none"
        return _check(
            "profile", "fail", f"no profile {name!r} in {path} (profiles: {known})", "ConfigError"
        )
    outputs = entry.get("outputs") or {}
    target = options.target or entry.get("target") or "default"
    if target not in outputs:
        known = ", ".join(sorted(map(str, outputs))) or "none"
        return _check(
            "profile",
            "fail",
            f"profile {name!r} has no target {target!r} in {path} (targets: {known})",
            "ConfigError",
        )
    kind = (outputs[target] or {}).get("type", "?")
    return _check("profile", "ok", f"profile {name}, target {target} ({kind}) in {path}")


def _check_warehouse(options: RunOptions) -> tuple[Check, Any]:
    from voyado_sync.project import open_warehouse

    try:
        warehouse = open_warehouse(options)
    except Exception as exc:
        return _failure("warehouse", exc), None
    try:
        warehouse.query("select 1")
    except Exception as exc:
        warehouse.close()
        return _failure("warehouse", exc), None
    return _check("warehouse", "ok", f"opened the {warehouse.description}"), warehouse


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} days"


def _model_files(project_dir: Path) -> Iterator[Path]:
    try:
        paths = _yaml(project_dir / "dbt_project.yml").get("model-paths") or ["models"]
    except Exception:
        paths = ["models"]
    yield project_dir / "dbt_project.yml"
    for folder in paths:
        root = project_dir / str(folder)
        if root.is_dir():
            for path in root.rglob("*"):
                if path.suffix in _MODEL_FILES and path.is_file():
                    yield path


def _check_manifest(options: RunOptions) -> tuple[Check, Manifest | None]:
    path = manifest_path(options.project_dir, options.target_path)
    try:
        manifest = load_manifest(path)
    except Exception as exc:
        return _failure("manifest", exc), None
    built = path.stat().st_mtime
    age = _age(time.time() - built)
    newer = [p for p in _model_files(options.project_dir) if p.stat().st_mtime > built + 1]
    count = len(manifest.voyado_models)
    if not count:
        try:
            manifest.pick()
        except ConfigError as exc:
            return _failure("manifest", exc), manifest
    summary = f"{path}, written {age} ago, {count} model(s) with meta.voyado"
    typos = manifest.near_misses()
    if typos:
        return _check("manifest", "warn", f"{summary}; {'; '.join(map(str, typos))}"), manifest
    if newer:
        newest = max(newer, key=lambda p: p.stat().st_mtime)
        rel = os.path.relpath(newest, options.project_dir)
        more = f" and {len(newer) - 1} more file(s)" if len(newer) > 1 else ""
        return (
            _check(
                "manifest",
                "warn",
                f"{summary}; older than {rel}{more}: run dbt build (or dbt parse) so the "
                "manifest describes the models as they are now",
            ),
            manifest,
        )
    return _check("manifest", "ok", f"{summary}, newer than every model file"), manifest


def _check_run_results(options: RunOptions, manifest: Manifest | None) -> Check:
    path = manifest_path(options.project_dir, options.target_path).with_name("run_results.json")
    if not path.exists():
        return _check(
            "run_results",
            "warn",
            f"no {path}: dbt build writes it; without it a run cannot tell failed models",
        )
    try:
        data = json.loads(path.read_text())
        results = data.get("results") or []
        generated = str((data.get("metadata") or {}).get("generated_at", ""))
    except (OSError, ValueError, AttributeError) as exc:
        return _check("run_results", "fail", f"cannot read {path}: {exc}", "ManifestError")
    bad: dict[str, int] = {}
    for result in results:
        status = str(result.get("status", "")) if isinstance(result, dict) else ""
        if status in ("error", "fail", "skipped", "runtime error"):
            bad[status] = bad.get(status, 0) + 1
    what = f"{len(results)} result(s) from {generated or 'an unknown time'}"
    notes = []
    if bad:
        notes.append(", ".join(f"{n} {s}" for s, n in sorted(bad.items())))
    if manifest is not None and path.stat().st_mtime + 1 < manifest.path.stat().st_mtime:
        notes.append("older than the manifest (a dbt parse or compile since the last build)")
    if notes:
        return _check("run_results", "warn", f"{path}: {what}; {'; '.join(notes)}")
    return _check("run_results", "ok", f"{path}: {what}, none failed")


def _check_ledger(options: RunOptions, warehouse: Any) -> Check:
    from voyado_sync.state import LEDGER_VERSION, Ledger

    ledger = Ledger(warehouse, schema=options.state_schema)
    try:
        if not ledger.exists():
            return _check(
                "ledger",
                "ok",
                f"not created yet: the first run creates schema {options.state_schema}",
            )
        version = ledger.version()
        holder = ledger.lock_holder()
        last = ledger.recent_runs(1)
    except Exception as exc:
        return _failure("ledger", exc)
    where = f"schema {options.state_schema}, version {version}"
    if version is not None and version > LEDGER_VERSION:
        return _check(
            "ledger",
            "fail",
            f"{where}: written by a newer voyado-sync (this one reads {LEDGER_VERSION}); "
            "upgrade voyado-sync",
            "StateError",
        )
    runs = f"last run {last[0].run_id} {last[0].status}" if last else "no run yet"
    if holder:
        return _check(
            "ledger",
            "warn",
            f"{where}, {runs}; locked by run {holder['run_id']} (PID {holder['pid']} on "
            f"{holder['host']}, since {holder['acquired_at']}, heartbeat {holder['heartbeat_at']})",
        )
    return _check("ledger", "ok", f"{where}, {runs}, not locked")


class _VoyadoProbe:
    """One ``GET /api/v3/interactionschemas`` on a daemon thread: started before the local
    checks and waited for until a deadline, so DNS or a silent firewall cannot stall debug."""

    def __init__(self, base_url: str | None) -> None:
        self._checks: list[Check] | None = None
        self._base_url = base_url
        self._thread = threading.Thread(target=self._run, name="voyado-probe", daemon=True)
        self._url: str | None = None

    def start(self) -> None:
        self._thread.start()

    def result(self, deadline: float) -> list[Check]:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._checks is not None:
            return self._checks
        return [
            _check(
                "voyado_url",
                "fail",
                f"{self._url or 'Voyado'} did not answer within {VOYADO_DEADLINE:g} s",
                "RetryableApiError",
            ),
            _check("voyado_key", "skip", "not checked: Voyado did not answer"),
        ]

    def _run(self) -> None:
        self._checks = _probe(self._base_url, lambda url: setattr(self, "_url", url))


def _probe(base_url: str | None, tell_url: Callable[[str], None]) -> list[Check]:
    import httpx

    url, key = settings.raw_connection(base_url)
    no_key = _check(
        "voyado_key",
        "fail",
        f"no API key: set {settings.ENV_API_KEY} in the environment (never on the command line)",
        "ConfigError",
    )
    connection: settings.VoyadoConnection | None = None
    try:
        connection = settings.connection_from_env(base_url)
    except ConfigError as exc:
        # Only the key missing: the URL can still be tried.
        bad_url = [p.message for p in exc.problems if settings.ENV_API_KEY not in p.message]
        if bad_url:
            skip = _check("voyado_key", "skip", "not checked: no usable URL")
            return [
                _check("voyado_url", "fail", bad_url[0], "ConfigError"),
                skip if key else no_key,
            ]
    base = connection.base_url if connection else url.rstrip("/")
    tell_url(base)
    headers = {
        "User-Agent": f"voyado-sync/{__version__} (debug)",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    if key:
        headers["apikey"] = key
    started = time.monotonic()
    try:
        with httpx.Client(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
        ) as client:
            resp = client.get(base + _SCHEMAS_PATH, headers=headers)
    except httpx.HTTPError as exc:
        return [
            _check(
                "voyado_url",
                "fail",
                f"cannot reach {base} ({type(exc).__name__}: {_short(exc, key)}): check the URL, "
                "DNS, proxy and firewall",
                "RetryableApiError",
            ),
            _check("voyado_key", "skip", "not checked: Voyado could not be reached"),
        ]
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    reachable = _check("voyado_url", "ok", f"{base} answered HTTP {resp.status_code} in {took}")
    if not key:
        return [reachable, no_key]
    if resp.status_code in (401, 403):
        return [
            reachable,
            _check(
                "voyado_key",
                "fail",
                f"refused by Voyado (HTTP {resp.status_code}): {settings.ENV_API_KEY} is wrong, "
                "expired, or not allowed to read interaction schemas",
                "FatalApiError",
            ),
        ]
    if 300 <= resp.status_code < 400:
        return [
            _check(
                "voyado_url",
                "fail",
                f"{base} redirects (HTTP {resp.status_code}) to "
                f"{resp.headers.get('Location', '?')}: set {settings.ENV_BASE_URL} to the API's "
                "own address",
                "FatalApiError",
            ),
            _check("voyado_key", "skip", "not checked: the URL redirects"),
        ]
    if resp.status_code >= 400:
        return [
            reachable,
            _check(
                "voyado_key",
                "warn",
                f"could not confirm: GET {_SCHEMAS_PATH} answered HTTP {resp.status_code}",
            ),
        ]
    try:
        body = resp.json()
        items = body.get("items", body) if isinstance(body, dict) else body
        count = (
            f" ({len(items)} interaction schema(s) in Voyado)" if isinstance(items, list) else ""
        )
    except ValueError:
        count = ""
    return [reachable, _check("voyado_key", "ok", f"accepted{count}")]


def _short(exc: BaseException, key: str) -> str:
    text = str(exc).splitlines()[0] if str(exc) else "no answer"
    return text.replace(key, "***") if len(key) >= 4 else text
