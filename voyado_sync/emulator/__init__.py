"""A local Voyado Engage emulator: the v3 endpoints voyado-sync uses, with Engage's rules.

It enforces the interaction-schema rules, silently ignores interactions that break their
schema (as Engage does), checks Voyado's request hygiene and rate limit, and can inject
latency, gateway errors and "stored but no answer" faults. Everything it saw is countable
through ``/_emulator/stats`` or :meth:`EmulatorHandle.stats`.

    with run_emulator_in_thread(EmulatorConfig(contacts=[Contact("c-1")])) as handle:
        ...  # point a client at handle.url with apikey "emulator-key"
"""

from __future__ import annotations

from voyado_sync.emulator.config import Contact, EmulatorConfig, load_contacts
from voyado_sync.emulator.runner import EmulatorHandle, run_emulator_in_thread
from voyado_sync.emulator.state import Emulator

__all__ = [
    "Contact",
    "Emulator",
    "EmulatorConfig",
    "EmulatorHandle",
    "load_contacts",
    "run_emulator_in_thread",
]
