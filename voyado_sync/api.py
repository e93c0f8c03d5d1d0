"""The Python API for orchestrators: :func:`run` and :func:`validate`, as the CLI runs them.

``voyado-sync run`` is a thin layer over :func:`run_options`, so a Dagster asset, an Airflow task
and the CLI do the same thing: the same sync, the same run history in the ledger, the same
artifact (``<target-path>/voyado_sync_results.json``) and the same alerts.

::

    import voyado_sync

    result = voyado_sync.run(project_dir="analytics", select=["tag:voyado"])
    result.exit_code      # 0 ok, 1 ran with rejected/failed rows (or interrupted)
    result.as_dict()      # the document `voyado-sync run --json` prints

Exit code 2 ("could not run") is an exception, one class per cause, all from
:mod:`voyado_sync.exceptions`:

=====================  ============================================================================
exception              cause
=====================  ============================================================================
``ConfigError``        meta.voyado, an option or the environment is wrong (``.problems`` lists all;
                       models without a problem still ran, their counts are in the artifact)
``ManifestError``      target/manifest.json is missing, unreadable or of an unsupported dbt version
``WarehouseError``     the warehouse could not be opened, or a statement failed
``LockError``          another run holds the ledger (a ``StateError``): try again later
``StateError``         the ledger is unusable (for example written by a newer voyado-sync)
``FatalApiError``      Voyado refused the API key (401/403) or redirected: the run stopped
``RetryableApiError``  Voyado could not be reached at all (refused, unknown host): try later
``SchemaRefused``      the schema gate stopped a model (its schema differs from Voyado's, or could
                       not be created or checked); the other models ran, their counts are in the
                       artifact
=====================  ============================================================================

Any other exception is a bug in voyado-sync. Before any of them is raised, the artifact is
written and the alert sent, exactly as for the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Imported here, not lazily: the import of this submodule sets the package attribute
# ``voyado_sync.validate`` to the module, and ``voyado_sync.__getattr__`` replaces it with the
# function below right after importing this module (see voyado_sync/__init__.py).
import voyado_sync.validate as _validate_module
from voyado_sync import artifact, notify, settings
from voyado_sync.exceptions import (
    ConfigError,
    ConfigProblem,
    FatalApiError,
    RetryableApiError,
    SchemaRefused,
    VoyadoSyncError,
    error_kind,
)
from voyado_sync.settings import RunOptions
from voyado_sync.spec import FirstRun, parse_first_run
from voyado_sync.sync import ProgressCallback, SyncResult
from voyado_sync.sync import run as _run_sync

__all__ = ["RunResult", "ValidationResult", "run", "run_options", "validate"]

_log = logging.getLogger("voyado_sync")


@dataclass
class RunResult(SyncResult):
    """A :class:`~voyado_sync.sync.SyncResult` (every field and ``exit_code``) plus what the run
    artifact adds: when it ran, the versions, what happened to the alert, where the artifact is.

    ``as_dict()`` is the document ``voyado-sync run --json`` prints.
    """

    started_at: str = ""
    finished_at: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)
    #: The alert sent for this run, or None when none was due (or no webhook is set).
    notification: notify.AlertOutcome | None = None
    #: Where the artifact was written; None if it could not be written (a warning is logged).
    artifact: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["notification"] = self.notification.as_dict() if self.notification else None
        return out


@dataclass(frozen=True)
class ValidationResult:
    """What ``voyado-sync validate`` found; ``as_dict()`` is what ``validate --json`` prints."""

    report: _validate_module.ValidationReport

    @property
    def exit_code(self) -> int:
        """0: no problems (warnings allowed); 1: problems found."""
        return self.report.exit_code

    @property
    def ok(self) -> bool:
        return not self.report.problems

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, **self.report.as_dict()}


def run(
    *,
    project_dir: str | Path = ".",
    profiles_dir: str | Path | None = None,
    target: str | None = None,
    target_path: str | None = None,
    select: Iterable[str] = (),
    exclude: Iterable[str] = (),
    dry_run: bool = False,
    state_schema: str = settings.DEFAULT_STATE_SCHEMA,
    base_url: str | None = None,
    rate: float = settings.DEFAULT_RATE,
    concurrency: int | None = settings.DEFAULT_CONCURRENCY,
    retry_rejected: bool = False,
    ignore_dbt_status: bool = False,
    first_run: str | None = None,
    allow_mass_send: Iterable[str] = (),
    allow_mass_delete: Iterable[str] = (),
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Sync the selected models, exactly as ``voyado-sync run`` does.

    The arguments are the CLI's options (``select``/``exclude`` in dbt's grammar, each item
    one ``--select``). ``VOYADO_BASE_URL``, ``VOYADO_API_KEY`` and ``VOYADO_SYNC_NOTIFY_URL``
    come from the environment. ``progress(model, rows_done, rows_to_do)`` is called as rows
    are sent.

    Returns the result (``exit_code`` 0 or 1); raises the exception of the module docstring's
    table when the run could not run (exit code 2).
    """
    options = RunOptions(
        project_dir=Path(project_dir),
        profiles_dir=Path(profiles_dir) if profiles_dir is not None else None,
        target=target,
        target_path=target_path,
        select=_strings(select, "select"),
        exclude=_strings(exclude, "exclude"),
        dry_run=dry_run,
        state_schema=state_schema,
        base_url=base_url,
        rate=rate,
        concurrency=concurrency,
        retry_rejected=retry_rejected,
        ignore_dbt_status=ignore_dbt_status,
        first_run=_first_run(first_run),
        allow_mass_send=_strings(allow_mass_send, "allow_mass_send"),
        allow_mass_delete=_strings(allow_mass_delete, "allow_mass_delete"),
    )
    result = run_options(options, progress=progress)
    if result.fatal:
        if result.fatal_kind == "RetryableApiError":
            raise RetryableApiError(result.fatal)
        raise FatalApiError(result.fatal)
    if result.broken:
        raise ConfigError(
            [
                ConfigProblem(p["message"], p["model"], p["key"])
                for m in result.broken
                for p in m.problems
            ]
        )
    stopped = [m for m in result.models if m.error]
    if stopped:
        guarded = any(m.stopped_by_guard for m in stopped)
        raise SchemaRefused(
            f"{len(stopped)} model(s) stopped by the schema gate"
            + (" or a guard (first run, mass send, mass delete)" if guarded else "")
            + ", nothing sent for them (the other models ran; see voyado_sync_results.json):\n"
            + "\n".join(f"  {m.model}: {m.error}" for m in stopped)
        )
    return result


def _first_run(text: str | None) -> FirstRun | None:
    if text is None:
        return None
    try:
        return parse_first_run(text)
    except ValueError as exc:
        raise ConfigError([ConfigProblem(f"first_run {exc}", key="first_run")]) from None


def validate(
    *,
    project_dir: str | Path = ".",
    profiles_dir: str | Path | None = None,
    target: str | None = None,
    target_path: str | None = None,
    select: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> ValidationResult:
    """Check the selected models' meta.voyado offline, exactly as ``voyado-sync validate``.

    Problems are collected in the result (``exit_code`` 1), never raised; raises
    ``ManifestError`` without a manifest and ``ConfigError`` for a selection that matches
    nothing.
    """
    options = RunOptions(
        project_dir=Path(project_dir),
        profiles_dir=Path(profiles_dir) if profiles_dir is not None else None,
        target=target,
        target_path=target_path,
        select=_strings(select, "select"),
        exclude=_strings(exclude, "exclude"),
    )
    return ValidationResult(_validate_module.validate_project(options))


def _strings(values: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(values, str):  # select="tag:voyado" means one selector, not its letters
        return (values,)
    out = tuple(values)
    if not all(isinstance(v, str) for v in out):
        from voyado_sync.exceptions import ConfigError

        raise ConfigError([f"{name} must be strings, got {out!r}"])
    return out


def run_options(options: RunOptions, *, progress: ProgressCallback | None = None) -> RunResult:
    """One run from resolved options: the sync, then the artifact and the alert.

    The CLI's entry point. Unlike :func:`run`, a run stopped by Voyado (401/403) or by the schema
    gate comes back as a result with ``exit_code`` 2; a run that cannot start raises its
    exception after the artifact and the alert are done.
    """
    started_at, clock = _now(), time.monotonic()
    try:
        sync = _run_sync(options, progress=progress)
    except Exception as exc:
        document = {
            "exit_code": 2,
            "error": {"message": _message(exc), "kind": error_kind(exc)},
            "run_id": None,
            "dry_run": options.dry_run,
        }
        _finish(options, document, started_at=started_at, clock=clock)
        raise
    result = RunResult(
        **{f.name: getattr(sync, f.name) for f in fields(SyncResult)},
        started_at=started_at,
    )
    finished = _finish(options, result.as_dict(), started_at=started_at, clock=clock)
    result.finished_at = finished["finished_at"]
    result.versions = finished["versions"]
    result.notification = finished["notification"]
    result.artifact = finished["artifact"]
    return result


def _message(exc: BaseException) -> str:
    text = (
        str(exc) if isinstance(exc, VoyadoSyncError) else f"unexpected {type(exc).__name__}: {exc}"
    )
    return notify.redact(text, settings.secrets())  # type: ignore[no-any-return]


def _now() -> str:
    from voyado_sync.state import utc_now

    return utc_now()


def _finish(
    options: RunOptions, document: dict[str, Any], *, started_at: str, clock: float
) -> dict[str, Any]:
    """Alert (if due), then write the artifact. Neither may fail the run: both only warn."""
    path = artifact.artifact_path(options.project_dir, options.target_path)
    previous = artifact.read(path)
    finished_at = _now()
    document = {
        **document,
        "started_at": started_at,
        "finished_at": finished_at,
        "elapsed_seconds": round(time.monotonic() - clock, 3),
        "versions": artifact.versions(
            artifact.manifest_adapter_type(path.with_name("manifest.json"))
        ),
    }
    outcome = _alert(options, document, previous)
    document["notification"] = outcome.as_dict() if outcome else None
    document["last_sync"] = artifact.last_sync(document, previous)
    document["metadata"] = {
        "artifact": "voyado_sync_results",
        "artifact_version": artifact.ARTIFACT_VERSION,
    }
    written: Path | None = path
    try:
        artifact.write(path, notify.redact(document, settings.secrets()))
    except OSError as exc:
        written = None
        _log.warning("voyado-sync could not write its run artifact %s: %s", path, exc)
    return {
        "finished_at": finished_at,
        "versions": document["versions"],
        "notification": outcome,
        "artifact": written,
    }


def _alert(
    options: RunOptions, document: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> notify.AlertOutcome | None:
    url = settings.notify_url()
    if url is None or document.get("dry_run"):
        return None
    previous_clean = (
        _previous_clean(options, previous, document.get("run_id"))
        if notify.was_clean(document)
        else None  # only a clean run asks: the others alert whatever came before
    )
    alert = notify.alert_for(
        document,
        previous_clean=previous_clean,
        project=options.project_dir.resolve().name,
        secrets=settings.secrets(),
    )
    if alert is None:
        return None
    outcome = notify.post(url, alert, timeout=notify.TIMEOUT)
    if not outcome.sent:
        _log.warning("voyado-sync could not send its %s alert: %s", alert.event, outcome.error)
    return outcome


def _previous_clean(
    options: RunOptions, previous: Mapping[str, Any] | None, run_id: Any
) -> bool | None:
    """Whether the run before this one was clean: the previous artifact's ``last_sync`` when
    there is one (it also knows runs that never reached the ledger), else the ledger's run
    history (a fresh worker of an orchestrator has no artifact). None: no run before."""
    last = (previous or {}).get("last_sync")
    if isinstance(last, Mapping) and "exit_code" in last:
        return bool(last["exit_code"] == 0)
    try:
        from voyado_sync.project import open_warehouse
        from voyado_sync.state import Ledger, RunStatus

        warehouse = open_warehouse(options)
        try:
            row = Ledger(warehouse, schema=options.state_schema).last_finished_run(
                excluding=str(run_id) if run_id else None
            )
        finally:
            warehouse.close()
    except VoyadoSyncError as exc:
        _log.warning("voyado-sync could not read the previous run from the ledger: %s", exc)
        return None
    if row is None:
        return None
    return bool(
        row["status"] == RunStatus.OK
        and not int(row["rejected"] or 0)
        and not int(row["failed"] or 0)
    )
