"""The run artifact: ``<target-path>/voyado_sync_results.json``, beside dbt's run_results.json.

Written after every run, the CLI's and the Python API's alike, dry runs included (marked
``"dry_run": true``), and when a run could not run at all. The document is the one
``voyado-sync run --json`` prints, plus::

    "run_id"        the ledger's run id (null when the run could not start)
    "started_at", "finished_at", "elapsed_seconds"   ISO 8601 UTC, as in the ledger
    "versions"      {"voyado_sync", "dbt_core", "adapter_type", "adapter"}
    "notification"  what happened to the alert, or null when none was due (see voyado_sync.notify)
    "last_sync"     {"run_id", "exit_code", "finished_at"} of the latest run that was not a dry
                    run (this one, or carried over by a dry run): how the next run knows whether
                    it is a recovery
    "metadata"      {"artifact": "voyado_sync_results", "artifact_version": 1}

It is written to a temporary file in the same directory and renamed over the old one, so a
reader sees the previous document or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

ARTIFACT_NAME = "voyado_sync_results.json"
ARTIFACT_VERSION = 1


def artifact_path(project_dir: Path, target_path: str | None) -> Path:
    """``<project>/<target-path>/voyado_sync_results.json`` (target path as dbt resolves it)."""
    target = Path(target_path) if target_path else Path("target")
    if not target.is_absolute():
        target = project_dir / target
    return target / ARTIFACT_NAME


def versions(adapter_type: str | None) -> dict[str, str | None]:
    """voyado-sync's version, and the installed dbt-core and adapter package versions."""
    from voyado_sync import __version__

    return {
        "voyado_sync": __version__,
        "dbt_core": _installed("dbt-core"),
        "adapter_type": adapter_type,
        "adapter": _installed(f"dbt-{adapter_type}") if adapter_type else None,
    }


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def manifest_adapter_type(manifest: Path) -> str | None:
    """The adapter type dbt recorded in the manifest's metadata, if there is a manifest."""
    try:
        with manifest.open("rb") as f:
            value = json.load(f).get("metadata", {}).get("adapter_type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def read(path: Path) -> dict[str, Any] | None:
    """The previous artifact, or None when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def last_sync(document: Mapping[str, Any], previous: Mapping[str, Any] | None) -> Any:
    """The latest run that was not a dry run: this one, or what the previous artifact held."""
    if not document.get("dry_run"):
        return {
            "run_id": document.get("run_id"),
            "exit_code": document.get("exit_code"),
            "finished_at": document.get("finished_at"),
        }
    return (previous or {}).get("last_sync")


def write(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file beside the target, then a rename over it.

    The target directory is created if missing (a run before any dbt build), its parent never:
    a mistyped project directory must not appear on disk."""
    path.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
