"""Real dbt projects for the tests: the example project, and a generated "bulk" project.

Each is built once per session with a real `dbt build` into a DuckDB file; tests copy that
file so every test starts from a freshly built warehouse with an empty ledger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from voyado_sync.emulator import Contact

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "dbt_project_example"
BIN = Path(sys.executable).parent
DB_ENV = "VOYADO_TEST_DUCKDB"


@dataclass(frozen=True)
class BuiltProject:
    """A dbt project with a manifest, and the DuckDB file its build produced."""

    project_dir: Path
    built_db: Path
    db_env: str

    def fresh_db(self, where: Path) -> Path:
        """A private copy of the built warehouse (models built, no ledger yet)."""
        target = where / self.built_db.name
        shutil.copyfile(self.built_db, target)
        return target


def dbt_build(
    project_dir: Path, db_path: Path, *, env_name: str, extra: list[str] | None = None
) -> None:
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    env[env_name] = str(db_path)
    proc = subprocess.run(
        [str(BIN / "dbt"), "build", "--profiles-dir", str(project_dir), *(extra or [])],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"dbt build failed in {project_dir}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )


def dbt_deps(project_dir: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "dbt"), "deps", "--profiles-dir", str(project_dir)],
        cwd=project_dir,
        env=dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt deps failed in {project_dir}:\n{proc.stdout[-4000:]}")


def build_example(base: Path) -> BuiltProject:
    project = base / "example"
    shutil.copytree(
        EXAMPLE,
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", "dbt_packages"),
    )
    # packages.yml installs the monitoring package by the relative path ../integrations/...:
    # the same layout beside the copy, then dbt deps (offline: a local package).
    (base / "integrations").symlink_to(ROOT / "integrations", target_is_directory=True)
    dbt_deps(project)
    db = base / "example.duckdb"
    dbt_build(project, db, env_name="VOYADO_EXAMPLE_DUCKDB")
    return BuiltProject(project, db, "VOYADO_EXAMPLE_DUCKDB")


BULK_CONTACTS = [Contact(contact_id=f"bulk-contact-{i:03d}") for i in range(40)]

_BULK_PROJECT = """
name: bulk
profile: bulk
version: "1.0"
config-version: 2
flags:
  send_anonymous_usage_stats: false
models:
  bulk:
    +materialized: table
vars:
  rows: 300
"""
_BULK_PROFILES = """
bulk:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('VOYADO_TEST_DUCKDB') }}"
      threads: 1
"""
_BULK_MODEL = """
select
    'ev-' || lpad(cast(i as varchar), 6, '0') as event_id,
    'bulk-contact-' || lpad(cast(i % 40 as varchar), 3, '0') as contact_id,
    timestamp '2025-01-01 08:00:00' + to_seconds(i * 61) as happened_at,
    'SKU-' || cast(i % 17 as varchar) as sku,
    cast(1 + i % 5 as integer) as score,
    (i % 3 = 0) as is_member,
    cast(i as decimal(10, 2)) / 4 as amount
from range({{ var('rows') }}) as t(i)
"""
_BULK_YAML = """
models:
  - name: bulk_events
    config:
      tags: [voyado]
      meta:
        voyado:
          schema_id: bulkEvent
          display_name: Bulk event
          unique_key: event_id
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
"""


def write_bulk_project(where: Path) -> Path:
    project = where / "bulk"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(_BULK_PROJECT)
    (project / "profiles.yml").write_text(_BULK_PROFILES)
    (project / "models" / "bulk_events.sql").write_text(_BULK_MODEL)
    (project / "models" / "bulk_events.yml").write_text(_BULK_YAML)
    return project


def build_bulk(base: Path, rows: int = 300) -> BuiltProject:
    project = write_bulk_project(base)
    db = base / "bulk.duckdb"
    dbt_build(project, db, env_name=DB_ENV, extra=["--vars", f"{{rows: {rows}}}"])
    return BuiltProject(project, db, DB_ENV)
