"""The process around a run: stopping on a signal, and the one thread the warehouse lives on."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


class Stop:
    """Set by SIGINT/SIGTERM (or by the run itself on a fatal answer): take no new rows,
    finish what is in flight, write the ledger. A second signal means "now": rows in flight
    are reconciled by the next run."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._callbacks: list[Callable[[], None]] = []

    def __call__(self, signum: int, _frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        for callback in self._callbacks:
            callback()

    def on_signal(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the signal handler) when a signal stops the run; at once
        when one already has."""
        self._callbacks.append(callback)
        if self.signal_name is not None:
            callback()

    def set(self) -> None:
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


async def sleep_unless(stop: Stop, seconds: float) -> bool:
    """Sleep, but wake when the run is stopped; whether the full time passed."""
    end = time.monotonic() + max(0.0, seconds)
    while not stop.is_set:
        left = end - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(0.2, left))
    return False


@contextmanager
def signals_to(stop: Stop) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = [(s, signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]
    for signum, _ in installed:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, previous in installed:
            signal.signal(signum, previous)


class WarehouseThread:
    """Runs every warehouse call on one dedicated thread: dbt's connections belong to the
    thread that opened them, and ledger writes must never stall the HTTP requests in flight
    on the event loop."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """The same, from outside the event loop."""
        return self._pool.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


#: How stages call the warehouse: ``await db(fn, *args)``.
Db = WarehouseThread
