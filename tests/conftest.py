"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voyado_sync.emulator import EmulatorConfig, EmulatorHandle, run_emulator_in_thread

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
