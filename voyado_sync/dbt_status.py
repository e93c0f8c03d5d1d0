"""Respect the build: a model dbt could not build, or whose tests failed, is not synced.

Reads ``target/run_results.json`` (dbt's record of its last invocation) beside the manifest. A
model whose latest result there errored or was skipped, or that a test of severity ``error``
failed on (a ``warn`` test does not count), is held back: syncing a stale table or rows that
broke a ``unique`` test sends the wrong interactions. No run_results.json, or one older than
the manifest (``dbt parse`` since), means the build status is unknown: the run syncs and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A model's own result that holds it back.
_MODEL_FAILED = {"error", "skipped"}
#: A test's result that holds back the model it tests (severity error; warn gives "warn").
_TEST_FAILED = {"fail", "error"}


@dataclass(frozen=True)
class BuildStatus:
    """Why each model is held back (unique_id -> reason), and a note when unknown."""

    held: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def read_build_status(manifest_path: Path) -> BuildStatus:
    results_path = manifest_path.parent / "run_results.json"
    if not results_path.exists():
        return BuildStatus(
            note=f"no {results_path.name} in {results_path.parent}: dbt's build status was "
            "not checked (run dbt build before voyado-sync run)"
        )
    try:
        if results_path.stat().st_mtime < manifest_path.stat().st_mtime - 1:
            return BuildStatus(
                note=f"{results_path.name} is older than manifest.json (dbt parsed or compiled "
                "since its last build): dbt's build status was not checked"
            )
        results = json.loads(results_path.read_text())
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return BuildStatus(note=f"could not read {results_path}: {exc}; build status not checked")
    nodes: dict[str, Any] = manifest.get("nodes") or {}
    held: dict[str, str] = {}
    for result in results.get("results") or []:
        unique_id = str(result.get("unique_id") or "")
        status = str(result.get("status") or "").lower()
        if unique_id.startswith(("model.", "snapshot.")) and status in _MODEL_FAILED:
            word = "failed" if status == "error" else "skipped"
            message = " ".join(str(result.get("message") or "").split())[:200]
            held.setdefault(
                unique_id,
                f"dbt {word} this model in its last invocation"
                + (f" ({message})" if message else "")
                + ": its table may be stale",
            )
        elif unique_id.startswith("test.") and status in _TEST_FAILED:
            test = nodes.get(unique_id) or {}
            name = test.get("name") or unique_id
            failures = result.get("failures")
            for model in _tested_models(test):
                held.setdefault(
                    model,
                    f"dbt test {name} {'failed' if status == 'fail' else 'errored'}"
                    + (f" ({failures} failing rows)" if failures else "")
                    + " in the last build",
                )
    return BuildStatus(held=held)


def _tested_models(test: dict[str, Any]) -> list[str]:
    attached = test.get("attached_node")
    if isinstance(attached, str) and attached:
        return [attached]
    depends = (test.get("depends_on") or {}).get("nodes") or []
    return [d for d in depends if isinstance(d, str) and d.startswith("model.")]
