"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from voyado_sync.emulator import EmulatorConfig, EmulatorHandle, run_emulator_in_thread

# ---- a clean environment -------------------------------------------------------------------
# A developer's shell must not leak into the suite: VOYADO_* and DBT_* variables (a real API
# key, a profiles dir, a target path) are removed before any fixture runs, and again around
# every test. dbt's anonymous usage stats stay off (there is no network).
_LEAKY = ("VOYADO_", "DBT_")


def _clean(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    return [name for name in environ if name.startswith(_LEAKY)]


def pytest_configure(config: pytest.Config) -> None:
    for name in _clean(os.environ):
        del os.environ[name]
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VOYADO_* or DBT_* variable but those a test sets itself."""
    for name in _clean(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    # The emulator lists what it stores at once; a short listing lag keeps the fault tests
    # fast (the tests of the lag itself set their own).
    monkeypatch.setenv("VOYADO_SYNC_LISTING_LAG", "0.3")


# ---- emulator ------------------------------------------------------------------------------
# One emulator for the whole session (starting one per test would dominate the run time);
# `fresh_emulator` gives a test an empty tenant with default settings. Contacts survive a
# reset, so tests add the contacts they need with ids of their own.

_EMULATOR_DEFAULTS = EmulatorConfig()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorHandle]:
    """A Voyado Engage emulator on a loopback port, shared by the whole session."""
    handle = run_emulator_in_thread(EmulatorConfig(seed=1))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def fresh_emulator(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The session emulator with no schemas, interactions or stats, and default settings."""
    emulator.reset()
    emulator.configure(
        api_key=_EMULATOR_DEFAULTS.api_key,
        rate_limit=_EMULATOR_DEFAULTS.rate_limit,
        retry_after=_EMULATOR_DEFAULTS.retry_after,
        latency_ms=_EMULATOR_DEFAULTS.latency_ms,
        error_rate=_EMULATOR_DEFAULTS.error_rate,
        ambiguous_rate=_EMULATOR_DEFAULTS.ambiguous_rate,
    )
    yield emulator


# ---- end of emulator -----------------------------------------------------------------------


# ---- real dbt projects ---------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from tests.projects import BULK_CONTACTS, BuiltProject, build_bulk, build_example  # noqa: E402
from voyado_sync.emulator import load_contacts  # noqa: E402


@pytest.fixture(scope="session")
def example_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    """The example dbt project, built once with a real `dbt build`."""
    return build_example(tmp_path_factory.mktemp("example-build"))


@pytest.fixture(scope="session")
def bulk_build(tmp_path_factory: pytest.TempPathFactory) -> BuiltProject:
    """A generated project with 300 rows in one model, built once."""
    return build_bulk(tmp_path_factory.mktemp("bulk-build"))


@pytest.fixture
def example(
    example_build: BuiltProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: EmulatorHandle,
) -> BuiltProject:
    """A private copy of the built example warehouse, the emulator seeded with its contacts,
    and VOYADO_* pointing at the emulator."""
    db = example_build.fresh_db(tmp_path)
    monkeypatch.setenv(example_build.db_env, str(db))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", _EMULATOR_DEFAULTS.api_key)
    fresh_emulator.add_contacts(load_contacts(example_build.project_dir / "emulator_contacts.csv"))
    return example_build


@pytest.fixture
def bulk(
    bulk_build: BuiltProject,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: EmulatorHandle,
) -> BuiltProject:
    """Like ``example`` for the 300-row bulk project."""
    db = bulk_build.fresh_db(tmp_path)
    monkeypatch.setenv(bulk_build.db_env, str(db))
    monkeypatch.setenv("VOYADO_BASE_URL", fresh_emulator.url)
    monkeypatch.setenv("VOYADO_API_KEY", _EMULATOR_DEFAULTS.api_key)
    fresh_emulator.add_contacts(BULK_CONTACTS)
    return bulk_build
